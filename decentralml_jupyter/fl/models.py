"""Keras 3 models as (architecture spec bytes, weights): spec round-trip and a small model zoo.

A spec is canonical JSON (sorted keys, explicit layer names) so the same model gives the same
bytes, hence the same CID.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from decentralml_jupyter.fl._tf import keras
from decentralml_jupyter.fl.types import FlError, Weights


def model_to_spec(model: Any) -> bytes:
    """Architecture of a Keras model as canonical JSON bytes (no weights)."""
    try:
        config = json.loads(model.to_json())
    except (AttributeError, TypeError, ValueError) as err:
        raise FlError(f"cannot serialize model: {err}", "pass a built Keras 3 model") from err
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def model_from_spec(spec: bytes) -> Any:
    """Build a fresh Keras model (freshly initialised weights) from spec bytes."""
    k = keras()
    try:
        return k.models.model_from_json(bytes(spec).decode())
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as err:
        raise FlError(f"not a model spec: {err}", "pass bytes made by model_to_spec") from err


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
