"""Keras 3 models as (architecture spec bytes, weights): spec round-trip and a small model zoo.

A spec is canonical JSON (sorted keys, explicit layer names) so the same model gives the same
bytes, hence the same CID. It holds the Keras architecture, the model's data contract (what
data it takes) and its training setup (the owner's compile config), see `fl.contract`:
``{"dfml_spec": 2, "model": ..., "data": ..., "training": ...}``. A spec of the first form
(the bare Keras JSON) still loads; its contract is read from the architecture.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from decentralml_jupyter.fl._tf import keras
from decentralml_jupyter.fl.contract import DataContract, Label, TrainingSetup, contract_of
from decentralml_jupyter.fl.types import FlError, Weights

SPEC_FORMAT = 2


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def model_to_spec(
    model: Any, *, label: Label | str | None = None, features: Sequence[str] = ()
) -> bytes:
    """A Keras model's architecture, data contract and training setup as canonical JSON
    bytes (no weights). ``label`` (e.g. "classes:10", "regression") and ``features`` (the
    columns of a table, in input order) override what the model's layers imply; a compiled
    model's optimizer, loss and metrics are what every worker trains with."""
    try:
        config = json.loads(model.to_json())
    except (AttributeError, TypeError, ValueError) as err:
        raise FlError(f"cannot serialize model: {err}", "pass a built Keras 3 model") from err
    if isinstance(label, str):
        label = Label.parse(label)
    contract = contract_of(model, label, features)
    compiled = None
    if getattr(model, "compiled", False) and getattr(model, "optimizer", None) is not None:
        compiled = json.loads(json.dumps(model.get_compile_config(), default=str))
    return _canonical(
        {
            "dfml_spec": SPEC_FORMAT,
            "model": config,
            "data": contract.to_json(),
            "training": compiled,
        }
    )


def _parts(spec: bytes) -> tuple[dict, dict | None, dict | None]:
    try:
        obj = json.loads(bytes(spec).decode())
    except (ValueError, UnicodeDecodeError) as err:
        raise FlError(f"not a model spec: {err}", "pass bytes made by model_to_spec") from err
    if isinstance(obj, dict) and obj.get("dfml_spec") == SPEC_FORMAT:
        return obj["model"], obj.get("data"), obj.get("training")
    if isinstance(obj, dict) and "dfml_spec" in obj:
        raise FlError(
            f"model spec format {obj['dfml_spec']!r} is newer than this client's",
            "upgrade decentralml-jupyter",
        )
    return obj, None, None


def model_from_spec(spec: bytes) -> Any:
    """Build a fresh Keras model (freshly initialised weights) from spec bytes."""
    k = keras()
    config, _, _ = _parts(spec)
    try:
        return k.models.model_from_json(json.dumps(config))
    except (ValueError, TypeError, KeyError) as err:
        raise FlError(f"not a model spec: {err}", "pass bytes made by model_to_spec") from err


def spec_contract(spec: bytes, model: Any = None) -> DataContract:
    """The data contract a spec records (read from its architecture for a first-form spec)."""
    _, data, _ = _parts(spec)
    if data is not None:
        return DataContract.from_json(data)
    return contract_of(model if model is not None else model_from_spec(spec))


def spec_training(spec: bytes) -> TrainingSetup:
    """The training setup a spec records (none: plain SGD and the label's usual loss)."""
    _, _, training = _parts(spec)
    metrics: tuple[str, ...] = ()
    if training:
        metrics = tuple(m for m in _flat(training.get("metrics")) if isinstance(m, str))
    return TrainingSetup(training, metrics)


def _flat(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [x for v in value for x in _flat(v)]
    if isinstance(value, dict):
        if "class_name" in value:  # a serialized metric object
            return [value.get("config", {}).get("name") or value["class_name"]]
        return [x for v in value.values() for x in _flat(v)]
    return [value]


def get_weights(model: Any) -> Weights:
    """Model weights as numpy arrays in layer order (copies)."""
    return [np.array(w) for w in model.get_weights()]


def init_weights(spec: bytes, seed: int = 0) -> Weights:
    """Initial weights for a spec, deterministic by seed."""
    k = keras()
    k.utils.set_random_seed(seed)
    return get_weights(model_from_spec(spec))


def mlp(input_dim: int, classes: int, hidden: Sequence[int] = (64,), seed: int = 0) -> Any:
    """A dense classifier (ReLU hidden layers, softmax output) for digits or tabular data."""
    if input_dim < 1 or classes < 2 or any(h < 1 for h in hidden):
        raise FlError(
            f"bad MLP shape: input_dim={input_dim}, classes={classes}, hidden={list(hidden)}",
            "input_dim >= 1, classes >= 2, hidden sizes >= 1",
        )
    k = keras()
    k.utils.set_random_seed(seed)
    # Explicit names: Keras' automatic names use a per-process counter, which would make the
    # spec (and its CID) depend on how many models were built before.
    layers = [k.Input(shape=(input_dim,), name="features")]
    for i, h in enumerate(hidden):
        layers.append(k.layers.Dense(h, activation="relu", name=f"hidden_{i}"))
    layers.append(k.layers.Dense(classes, activation="softmax", name="output"))
    return k.Sequential(layers, name="mlp")
