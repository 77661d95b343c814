"""The model's data contract and training setup, and the checks a participant's data must pass.

A model registered on the protocol says what data it takes (`DataContract`: the input shape and
dtype, the kind of label, and for tables the feature columns by name) and how it is trained
(`TrainingSetup`: the owner's compiled optimizer, loss and metrics, as Keras serializes them).
Both travel inside the model's architecture artefact (see `fl.models.model_to_spec`), so every
worker and validator reads the same contract from the same CID.

`check_data(contract, x, y)` is what a participant's data must pass before anything is staked or
sent: it names the shape, column or label that does not fit and says what to do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from decentralml_jupyter.errors import DataMismatch, UsageError

LABEL_KINDS = ("classes", "binary", "multilabel", "regression")
MIN_EXAMPLES = 2  # fewer cannot evaluate a model (a validator's held-out data)
# a worker's data: one example is an update (a cross-device client may hold one, and a
# thousand clients of a small dataset do; the in-process simulation trains them too)
MIN_TRAIN_EXAMPLES = 1


@dataclass(frozen=True)
class Label:
    """What the model predicts: ``classes`` (``n`` classes, integer labels 0..n-1), ``binary``
    (labels 0/1), ``multilabel`` (``n`` independent 0/1 labels per example) or ``regression``
    (``n`` real targets per example)."""

    kind: str
    n: int = 1

    def __post_init__(self) -> None:
        if self.kind not in LABEL_KINDS:
            raise UsageError(
                f"unknown label kind {self.kind!r}",
                hint="one of classes:N, binary, multilabel:N, regression",
            )
        if self.n < 1 or (self.kind == "classes" and self.n < 2):
            raise UsageError(f"{self.kind} needs a size >= {2 if self.kind == 'classes' else 1}")

    @classmethod
    def parse(cls, text: str) -> Label:
        """``classes:10``, ``binary``, ``multilabel:5``, ``regression`` (or ``regression:2``)."""
        kind, _, n = text.partition(":")
        try:
            size = int(n) if n else (0 if kind in ("classes", "multilabel") else 1)
        except ValueError:
            raise UsageError(f"bad label {text!r}: {n!r} is not a number") from None
        if kind in ("classes", "multilabel") and not n:
            raise UsageError(f"{kind} needs its size, e.g. {kind}:10")
        return cls(kind, size)

    def __str__(self) -> str:
        return self.kind if self.kind == "binary" else f"{self.kind}:{self.n}"

    @property
    def integer(self) -> bool:
        """Labels are class indices (int32), one per example."""
        return self.kind == "classes"


@dataclass(frozen=True)
class DataContract:
    """What data a model takes: ``input_shape`` (one example, no batch axis), ``dtype``,
    ``label`` and, for tables, ``features`` (the columns, in the model's input order)."""

    input_shape: tuple[int, ...]
    label: Label
    dtype: str = "float32"
    features: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "dtype": self.dtype,
            "label": str(self.label),
            "features": list(self.features),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataContract:
        return cls(
            tuple(int(d) for d in data["input_shape"]),
            Label.parse(data["label"]),
            data.get("dtype", "float32"),
            tuple(data.get("features") or ()),
        )


@dataclass(frozen=True)
class TrainingSetup:
    """How workers train: the owner's compile config as Keras serializes it (optimizer, loss,
    metrics), or none (then plain SGD and the label kind's usual loss)."""

    compile_config: dict[str, Any] | None = None
    metrics: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        cfg = self.compile_config or {}
        opt = cfg.get("optimizer")
        name, lr = None, None
        if isinstance(opt, dict):
            name = opt.get("class_name") or opt.get("config", {}).get("name")
            value = opt.get("config", {}).get("learning_rate")
            lr = value if isinstance(value, int | float) else None
        elif isinstance(opt, str):
            name = opt
        loss = cfg.get("loss")
        if isinstance(loss, dict):
            loss = loss.get("class_name") or loss.get("config", {}).get("name")
        return {
            "optimizer": name or "sgd",
            "learning_rate": lr,
            "loss": loss,
            "metrics": list(self.metrics),
        }


def infer_label(model: Any) -> Label:
    """The label kind a Keras model's output layer implies: softmax over N -> classes:N,
    sigmoid over 1 -> binary, sigmoid over N -> multilabel:N, anything else -> regression."""
    out = model.outputs[0]
    units = int(out.shape[-1]) if out.shape[-1] is not None else 1
    layer = model.layers[-1]
    activation = getattr(getattr(layer, "activation", None), "__name__", None)
    if activation == "softmax" and units >= 2:
        return Label("classes", units)
    if activation == "sigmoid":
        return Label("binary") if units == 1 else Label("multilabel", units)
    return Label("regression", units)


def contract_of(model: Any, label: Label | None = None, features=()) -> DataContract:
    """The data contract of a built Keras model (and the owner's options)."""
    inp = model.inputs[0]
    shape = tuple(int(d) for d in inp.shape[1:] if d is not None)
    if len(shape) != len(inp.shape) - 1:
        raise UsageError(
            f"the model's input shape {tuple(inp.shape)} has unknown sizes",
            hint="give keras.Input a full shape, e.g. keras.Input(shape=(8,))",
        )
    features = tuple(features)
    if features and (len(shape) != 1 or shape[0] != len(features)):
        raise UsageError(
            f"{len(features)} feature columns given for an input of shape {shape}",
            hint="name one column per input feature, in the model's input order",
        )
    dtype = getattr(inp, "dtype", "float32")
    return DataContract(shape, label or infer_label(model), str(dtype), features)


# Keras metric and loss names for which lower is better; every other metric (accuracy, auc,
# precision, recall, ...) is better higher.
LOWER_IS_BETTER = frozenset(
    {
        "loss", "mae", "mse", "rmse", "mape", "msle", "mean_absolute_error",
        "mean_squared_error", "root_mean_squared_error", "mean_absolute_percentage_error",
        "mean_squared_logarithmic_error", "hinge", "squared_hinge", "categorical_hinge",
        "logcosh", "log_cosh", "huber", "poisson", "kl_divergence", "kld",
        "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy",
    }
)  # fmt: skip


def better(metric: str) -> int:
    """+1 when a higher ``metric`` is better (accuracy, auc), -1 when lower is (loss, mae)."""
    return -1 if metric.lower() in LOWER_IS_BETTER else 1


def check_data(
    contract: DataContract, x: np.ndarray, y: np.ndarray, min_examples: int = MIN_EXAMPLES
) -> None:
    """Raise DataMismatch if (x, y) does not fit ``contract``: shape, labels, NaN, size (at
    least ``min_examples``: `MIN_EXAMPLES` to evaluate, `MIN_TRAIN_EXAMPLES` to train)."""
    n = len(x)
    if len(y) != n:
        raise DataMismatch(f"{n} examples but {len(y)} labels")
    if n < min_examples:
        raise DataMismatch(
            f"{n} example(s): at least {min_examples} are needed to "
            + ("train" if min_examples < MIN_EXAMPLES else "train or evaluate"),
            hint="bring more data; nothing was staked or sent",
        )
    if tuple(x.shape[1:]) != contract.input_shape:
        raise DataMismatch(
            f"the data's examples have shape {tuple(x.shape[1:])}; the model takes "
            f"{contract.input_shape}",
            hint="reshape the data (or resize the images) to the model's input shape",
        )
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x.reshape(n, -1)))
        row, col = int(bad[0][0]), int(bad[0][1])
        where = contract.features[col] if contract.features else f"feature {col}"
        raise DataMismatch(
            f"missing or infinite value (NaN/inf) in {where}, row {row} "
            f"({len(bad)} such value(s) in all)",
            hint="fill or drop them before training (e.g. DataFrame.dropna())",
        )
    label = contract.label
    yv = np.asarray(y)
    if label.kind in ("classes", "binary"):
        yv = yv.reshape(n, -1)
        if yv.shape[1] != 1:
            raise DataMismatch(f"labels of shape {tuple(y.shape[1:])}; {label} takes one per row")
        yv = yv[:, 0]
    if not np.all(np.isfinite(yv.astype(np.float64))):
        raise DataMismatch("missing or infinite label (NaN/inf)", hint="drop those rows")
    if label.kind == "classes":
        if not np.all(np.equal(np.mod(yv, 1), 0)) or yv.min() < 0 or yv.max() >= label.n:
            raise DataMismatch(
                f"labels must be class indices 0..{label.n - 1}; found values from "
                f"{_fmt(yv.min())} to {_fmt(yv.max())}",
                hint="encode the classes as 0..N-1 (e.g. pandas factorize) as the model's "
                "owner did",
            )
    elif label.kind in ("binary", "multilabel"):
        if not np.all(np.isin(yv, (0, 1))):
            raise DataMismatch(f"{label} labels must be 0 or 1", hint="encode each label as 0/1")
        if label.kind == "multilabel" and yv.reshape(n, -1).shape[1] != label.n:
            raise DataMismatch(
                f"{yv.reshape(n, -1).shape[1]} labels per example; the model takes {label.n}"
            )
    elif yv.reshape(n, -1).shape[1] != label.n:
        raise DataMismatch(
            f"{yv.reshape(n, -1).shape[1]} targets per example; the model predicts {label.n}"
        )


def _fmt(v: Any) -> str:
    f = float(v)
    return str(int(f)) if math.isfinite(f) and f == int(f) else f"{f:g}"


def labels_array(contract: DataContract, y: np.ndarray) -> np.ndarray:
    """Labels in the dtype and shape training takes: int32 (n,) class indices, or float32
    (n, k) targets / 0-1 labels."""
    n = len(y)
    if contract.label.integer:
        return np.asarray(y).reshape(n).astype(np.int32)
    return np.asarray(y, dtype=np.float32).reshape(n, -1)


__all__ = [
    "DataContract",
    "DataMismatch",
    "LOWER_IS_BETTER",
    "Label",
    "TrainingSetup",
    "better",
    "check_data",
    "contract_of",
    "infer_label",
    "labels_array",
]
