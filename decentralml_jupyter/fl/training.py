"""Local training (SGD, optional FedProx proximal term) and evaluation of (spec, weights).

Built models and their compiled train steps are cached per spec, so a simulation that trains
many clients on one architecture traces the TensorFlow graph once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np

from decentralml_jupyter.fl._tf import keras, tf
from decentralml_jupyter.fl.models import model_from_spec
from decentralml_jupyter.fl.types import FlError, Weights

_CACHE_SIZE = 4
_cache: OrderedDict[str, _Runner] = OrderedDict()


class _Runner:
    """One built model plus a traced train step; weights are swapped in per call."""

    def __init__(self, spec: bytes):
        t = tf()
        self.model = model_from_spec(spec)
        variables = self.model.trainable_variables
        self.lr = t.Variable(0.01, dtype=t.float32, trainable=False)
        self.mu = t.Variable(0.0, dtype=t.float32, trainable=False)
        # The global model's weights, the anchor of FedProx's proximal term.
        self.anchor = [t.Variable(v, trainable=False) for v in variables]
        loss_fn = keras().losses.SparseCategoricalCrossentropy()
        # Random layers (dropout) draw from these; train_local reseeds them per call rather
        # than resetting TensorFlow's global seed, which would force the traced graph to be
        # re-instantiated on every call (~0.1-0.3 s each).
        self.seed_generators = [
            sg for layer in self.model._flatten_layers() for sg in layer._seed_generators
        ]
        n_features = self.model.inputs[0].shape[1:]

        @t.function(
            input_signature=[
                t.TensorSpec([None, *n_features], t.float32),
                t.TensorSpec([None], t.int32),
                t.TensorSpec([None, None], t.int32),
                t.TensorSpec([], t.int32),
            ],
        )
        def fit(x: Any, y: Any, orders: Any, batch_size: Any) -> Any:
            # Every epoch and batch runs inside one graph call: per-step Python dispatch
            # would otherwise dominate the cost of these small models.
            n = t.shape(y)[0]
            n_batches = (n + batch_size - 1) // batch_size
            loss_sum = t.constant(0.0)
            correct = t.constant(0.0)
            for e in t.range(t.shape(orders)[0]):
                loss_sum = t.constant(0.0)
                correct = t.constant(0.0)
                for b in t.range(n_batches):
                    idx = orders[e, b * batch_size : t.minimum((b + 1) * batch_size, n)]
                    xb = t.gather(x, idx)
                    yb = t.gather(y, idx)
                    with t.GradientTape() as tape:
                        probs = self.model(xb, training=True)
                        loss = loss_fn(yb, probs)
                        # FedProx: mu/2 * ||w - w_global||^2 keeps local models near the
                        # global one on heterogeneous data. With mu = 0 it adds exactly zero.
                        prox = t.add_n(
                            [
                                t.reduce_sum(t.square(v - a))
                                for v, a in zip(variables, self.anchor, strict=True)
                            ]
                        )
                        total = loss + 0.5 * self.mu * prox
                    grads = tape.gradient(total, variables)
                    for v, g in zip(variables, grads, strict=True):
                        v.assign_sub(self.lr * g)
                    size = t.cast(t.shape(yb)[0], t.float32)
                    loss_sum += loss * size
                    correct += t.reduce_sum(
                        t.cast(t.equal(t.cast(t.argmax(probs, axis=1), t.int32), yb), t.float32)
                    )
            return loss_sum, correct

        self.fit = fit

    def set_weights(self, weights: Weights) -> None:
        expected = [tuple(w.shape) for w in self.model.weights]
        got = [tuple(np.shape(w)) for w in weights]
        if expected != got:
            raise FlError(
                f"weights do not fit the model: shapes {got}, model expects {expected}",
                "use weights made for this model spec",
            )
        self.model.set_weights([np.asarray(w) for w in weights])


def _runner(spec: bytes) -> _Runner:
    key = hashlib.sha256(spec).hexdigest()
    runner = _cache.get(key)
    if runner is None:
        runner = _Runner(spec)
        _cache[key] = runner
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    _cache.move_to_end(key)
    return runner


def _check_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int32)
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise FlError(
            f"bad training data: x shape {x.shape}, y shape {y.shape}",
            "x is (n, features...), y is (n,) integer labels, n >= 1",
        )
    return x, y


def train_local(
    spec: bytes,
    weights: Weights,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 0.05,
    proximal_mu: float = 0.0,
    seed: int = 0,
) -> tuple[Weights, int, dict[str, float]]:
    """Train from ``weights`` with minibatch SGD; returns (new weights, examples, metrics).

    ``proximal_mu > 0`` adds FedProx's proximal term towards the starting weights. Batches are
    shuffled by a numpy generator seeded with ``seed``, so runs are repeatable.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0 or proximal_mu < 0:
        raise FlError(
            f"bad training arguments: epochs={epochs}, batch_size={batch_size}, lr={lr}, "
            f"proximal_mu={proximal_mu}",
            "epochs >= 1, batch_size >= 1, lr > 0, proximal_mu >= 0",
        )
    x, y = _check_xy(x, y)
    t = tf()
    r = _runner(spec)
    for i, sg in enumerate(r.seed_generators):
        sg.state.assign(np.array([seed % 2**31, i], dtype=sg.state.dtype))
    r.set_weights(weights)
    for a, v in zip(r.anchor, r.model.trainable_variables, strict=True):
        a.assign(v)
    r.lr.assign(lr)
    r.mu.assign(proximal_mu)
    rng = np.random.default_rng(seed)
    n = len(y)
    orders = np.stack([rng.permutation(n) for _ in range(epochs)]).astype(np.int32)
    loss_sum, correct = r.fit(
        t.constant(x), t.constant(y), t.constant(orders), t.constant(batch_size, t.int32)
    )
    loss_sum, correct = float(loss_sum), float(correct)
    new = [np.array(w) for w in r.model.get_weights()]
    # Metrics of the last epoch, measured during training (before each step).
    return new, n, {"train_loss": loss_sum / n, "train_accuracy": correct / n}


def predict(spec: bytes, weights: Weights, x: np.ndarray) -> np.ndarray:
    """Class probabilities for ``x``."""
    r = _runner(spec)
    r.set_weights(weights)
    return np.asarray(r.model(np.asarray(x, dtype=np.float32), training=False))


def evaluate(spec: bytes, weights: Weights, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy and mean cross-entropy loss of (spec, weights) on labelled data."""
    x, y = _check_xy(x, y)
    probs = predict(spec, weights, x).astype(np.float64)
    p_true = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
    return {
        "accuracy": float(np.mean(np.argmax(probs, axis=1) == y)),
        "loss": float(np.mean(-np.log(p_true))),
    }
