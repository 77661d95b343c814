"""Local training and evaluation of (spec, weights), the way the model's owner set it up.

A model compiled before it was registered (its spec records the compile config, see
`fl.models`) trains with the owner's optimizer and loss; an uncompiled one with plain
minibatch SGD and the usual loss of its label kind (sparse cross-entropy for classes, binary
cross-entropy for binary and multi-label, mean squared error for regression). An optional
FedProx proximal term pulls towards the starting weights.

Built models and their compiled train steps are cached per spec, so a simulation that trains
many clients on one architecture traces the TensorFlow graph once. A cached model holds one
set of weights and optimizer variables, so its users take turns on its lock: two workers in
one kernel (threads) training the same model must never interleave their steps.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from decentralml_jupyter.fl._tf import keras, tf
from decentralml_jupyter.fl.contract import DataContract, labels_array
from decentralml_jupyter.fl.models import model_from_spec, spec_contract, spec_training
from decentralml_jupyter.fl.types import FlError, Weights

_CACHE_SIZE = 4
_cache: OrderedDict[str, _Runner] = OrderedDict()
_cache_lock = threading.Lock()
DEFAULT_LR = 0.05  # plain SGD's learning rate when neither the model nor the round sets one


def _default_loss(contract: DataContract, model: Any) -> Any:
    k = keras()
    kind = contract.label.kind
    activation = getattr(getattr(model.layers[-1], "activation", None), "__name__", None)
    if kind == "classes":
        return k.losses.SparseCategoricalCrossentropy(from_logits=activation != "softmax")
    if kind in ("binary", "multilabel"):
        return k.losses.BinaryCrossentropy(from_logits=activation != "sigmoid")
    return k.losses.MeanSquaredError()


class _Runner:
    """One built model plus a traced train step; weights are swapped in per call."""

    def __init__(self, spec: bytes):
        self.lock = threading.RLock()  # one user of its model and optimizer at a time
        t = tf()
        k = keras()
        self.model = model_from_spec(spec)
        self.contract = spec_contract(spec, self.model)
        self.setup = spec_training(spec)
        label = self.contract.label
        variables = self.model.trainable_variables
        self.lr = t.Variable(DEFAULT_LR, dtype=t.float32, trainable=False)
        self.mu = t.Variable(0.0, dtype=t.float32, trainable=False)
        # The global model's weights, the anchor of FedProx's proximal term.
        self.anchor = [t.Variable(v, trainable=False) for v in variables]
        self.optimizer = None
        if self.setup.compile_config:
            cfg = self.setup.compile_config
            try:
                self.optimizer = k.optimizers.deserialize(cfg["optimizer"])
                loss_fn = k.losses.get(cfg["loss"]) if cfg.get("loss") else None
            except (ValueError, TypeError, KeyError) as err:
                raise FlError(
                    f"the model's training setup cannot be rebuilt here: {err}",
                    "the owner's optimizer and loss must be Keras built-ins",
                ) from err
            loss_fn = loss_fn or _default_loss(self.contract, self.model)
            self.optimizer.build(variables)
            # every update starts from the optimizer's initial state (a worker's rounds are
            # independent): these values are restored before each call
            self.optimizer_start = [v.numpy() for v in self.optimizer.variables]
        else:
            loss_fn = _default_loss(self.contract, self.model)
        self.loss_fn = loss_fn
        # Random layers (dropout) draw from these; train_local reseeds them per call rather
        # than resetting TensorFlow's global seed, which would force the traced graph to be
        # re-instantiated on every call (~0.1-0.3 s each).
        self.seed_generators = [
            sg for layer in self.model._flatten_layers() for sg in layer._seed_generators
        ]
        n_features = self.model.inputs[0].shape[1:]
        if label.integer:
            y_spec = t.TensorSpec([None], t.int32)
        else:
            y_spec = t.TensorSpec([None, label.n], t.float32)
        optimizer = self.optimizer

        @t.function(
            input_signature=[
                t.TensorSpec([None, *n_features], t.float32),
                y_spec,
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
                        # a Loss object reduces; a loss function (keras.losses.get("mse"))
                        # gives one value per example
                        loss = t.reduce_mean(loss_fn(yb, probs))
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
                    if optimizer is None:
                        for v, g in zip(variables, grads, strict=True):
                            v.assign_sub(self.lr * g)
                    else:
                        optimizer.apply_gradients(zip(grads, variables, strict=True))
                    size = t.cast(t.shape(yb)[0], t.float32)
                    loss_sum += t.cast(loss, t.float32) * size
                    if label.integer:
                        hits = t.equal(t.cast(t.argmax(probs, axis=1), t.int32), yb)
                        correct += t.reduce_sum(t.cast(hits, t.float32))
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
    with _cache_lock:
        runner = _cache.get(key)
        if runner is None:
            runner = _Runner(spec)
            _cache[key] = runner
            if len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        _cache.move_to_end(key)
        return runner


def _check_xy(
    x: np.ndarray, y: np.ndarray, contract: DataContract
) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or len(x) != len(y) or len(x) == 0:
        raise FlError(
            f"bad training data: x shape {x.shape}, y shape {np.shape(y)}",
            "x is (n, features...), y has one label (or target row) per example, n >= 1",
        )
    return x, labels_array(contract, y)


def train_local(
    spec: bytes,
    weights: Weights,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float | None = None,
    proximal_mu: float = 0.0,
    seed: int = 0,
) -> tuple[Weights, int, dict[str, float]]:
    """Train from ``weights``; returns (new weights, examples, metrics of the last epoch).

    The model's own optimizer and loss when its owner compiled it, else minibatch SGD. ``lr``
    overrides the optimizer's learning rate (None: the model's, or 0.05 for plain SGD).
    ``proximal_mu > 0`` adds FedProx's proximal term towards the starting weights. Batches are
    shuffled by a numpy generator seeded with ``seed``, so runs are repeatable.
    """
    if epochs < 1 or batch_size < 1 or (lr is not None and lr <= 0) or proximal_mu < 0:
        raise FlError(
            f"bad training arguments: epochs={epochs}, batch_size={batch_size}, lr={lr}, "
            f"proximal_mu={proximal_mu}",
            "epochs >= 1, batch_size >= 1, lr > 0, proximal_mu >= 0",
        )
    t = tf()
    r = _runner(spec)
    x, y = _check_xy(x, y, r.contract)
    with r.lock:
        return _train(t, r, weights, x, y, epochs, batch_size, lr, proximal_mu, seed)


def _train(
    t: Any,
    r: _Runner,
    weights: Weights,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    lr: float | None,
    proximal_mu: float,
    seed: int,
) -> tuple[Weights, int, dict[str, float]]:
    for i, sg in enumerate(r.seed_generators):
        sg.state.assign(np.array([seed % 2**31, i], dtype=sg.state.dtype))
    r.set_weights(weights)
    for a, v in zip(r.anchor, r.model.trainable_variables, strict=True):
        a.assign(v)
    if r.optimizer is None:
        r.lr.assign(DEFAULT_LR if lr is None else lr)
    else:
        for var, start in zip(r.optimizer.variables, r.optimizer_start, strict=True):
            var.assign(start)
        if lr is not None:
            _set_learning_rate(r.optimizer, lr)
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
    metrics = {"train_loss": loss_sum / n}
    if r.contract.label.integer:
        metrics["train_accuracy"] = correct / n
    return new, n, metrics


def _set_learning_rate(optimizer: Any, lr: float) -> None:
    current = optimizer.learning_rate
    if hasattr(current, "assign"):
        current.assign(lr)
    else:  # a schedule: the round's rate replaces it for this update
        optimizer.learning_rate = lr


def predict(spec: bytes, weights: Weights, x: np.ndarray) -> np.ndarray:
    """The model's outputs for ``x`` (class probabilities for a classifier)."""
    r = _runner(spec)
    with r.lock:
        r.set_weights(weights)
        return np.asarray(r.model(np.asarray(x, dtype=np.float32), training=False))


def loss_gradient(spec: bytes, weights: Weights, x: np.ndarray, y: np.ndarray) -> Weights:
    """The gradient of the model's loss (the loss it trains with, averaged over the
    examples) at ``weights`` on (x, y): one float64 array per weight, zeros for weights that
    are not trained (a normalization layer's statistics)."""
    t = tf()
    r = _runner(spec)
    x, y = _check_xy(x, y, r.contract)
    y_in = np.asarray(y, dtype=np.int32 if r.contract.label.integer else np.float32)
    with r.lock:
        r.set_weights(weights)
        variables = r.model.weights
        with t.GradientTape() as tape:
            out = r.model(np.asarray(x, dtype=np.float32), training=False)
            loss = t.reduce_mean(r.loss_fn(y_in, out))
        grads = tape.gradient(loss, variables)
    return [
        np.zeros(tuple(v.shape)) if g is None else np.asarray(g, dtype=np.float64)
        for v, g in zip(variables, grads, strict=True)
    ]


def evaluate(
    spec: bytes, weights: Weights, x: np.ndarray, y: np.ndarray, metric: str | None = None
) -> dict[str, float]:
    """``loss`` (the model's loss: mean cross-entropy for classifiers) and, where it applies,
    ``accuracy`` of (spec, weights) on labelled data, ``mae`` for regression, and the metric
    named ``metric`` (a Keras name: auc, mse, precision, ...) when it is none of these."""
    metrics = _evaluate(spec, weights, x, y)
    if metric and metric not in metrics:
        metrics[metric] = _keras_metric(spec, weights, x, y, metric)
    return metrics


def _keras_metric(spec: bytes, weights: Weights, x: np.ndarray, y: np.ndarray, name: str) -> float:
    r = _runner(spec)
    x, y = _check_xy(x, y, r.contract)
    out = predict(spec, weights, x)
    try:
        found = keras().metrics.get(name)
    except ValueError:
        raise FlError(
            f"unknown metric {name!r}", "name a Keras metric: accuracy, auc, mae, mse, ..."
        ) from None
    if hasattr(found, "update_state"):
        found.reset_state()
        found.update_state(y, out)
        return float(found.result())
    return float(np.mean(np.asarray(found(y, out), dtype=np.float64)))


def _evaluate(spec: bytes, weights: Weights, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    r = _runner(spec)
    x, y = _check_xy(x, y, r.contract)
    out = predict(spec, weights, x).astype(np.float64)
    kind = r.contract.label.kind
    if kind == "classes" and r.setup.compile_config is None and _softmax(r.model):
        # the exact float64 formula every validator computes the same way
        p_true = np.clip(out[np.arange(len(y)), y], 1e-7, 1.0)
        return {
            "accuracy": float(np.mean(np.argmax(out, axis=1) == y)),
            "loss": float(np.mean(-np.log(p_true))),
        }
    loss = float(np.mean(np.asarray(r.loss_fn(y, out.astype(np.float32)), dtype=np.float64)))
    metrics = {"loss": loss}
    if kind == "classes":
        metrics["accuracy"] = float(np.mean(np.argmax(out, axis=1) == y))
    elif kind in ("binary", "multilabel"):
        probs = out if _sigmoid(r.model) else 1.0 / (1.0 + np.exp(-out))
        metrics["accuracy"] = float(np.mean((probs > 0.5) == (y > 0.5)))
    else:
        metrics["mae"] = float(np.mean(np.abs(out - y)))
    return metrics


def _activation(model: Any) -> str | None:
    return getattr(getattr(model.layers[-1], "activation", None), "__name__", None)


def _softmax(model: Any) -> bool:
    return _activation(model) == "softmax"


def _sigmoid(model: Any) -> bool:
    return _activation(model) == "sigmoid"
