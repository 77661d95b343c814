"""ProxyFL (Kalra et al., Nature Communications 2023): each worker keeps a private model that
never leaves it, and shares only a proxy. Both train on the worker's data by deep mutual
learning: the private model learns the labels and distils from the proxy, the proxy learns
the labels and distils from the private model. Proxies are averaged as FedAvg averages
models (the ``proxyfl`` strategy), so the private model gains from the others' data through
its proxy while fitting its own distribution, which helps most on non-IID data.

For classifiers with a softmax output. Minibatch SGD; batches shuffled by a generator seeded
with ``seed``, so runs are repeatable.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import numpy as np

from decentralml_jupyter.fl._tf import tf
from decentralml_jupyter.fl.contract import labels_array
from decentralml_jupyter.fl.models import init_weights, model_from_spec, spec_contract
from decentralml_jupyter.fl.types import FlError, Weights

_EPS = 1e-7
_runners: dict[str, _Pair] = {}
_runners_lock = threading.Lock()


def check_model(spec: bytes, model: Any = None) -> None:
    """Raise FlError unless the model can take part in ProxyFL: a classifier (class labels)
    with a softmax output, whose probabilities the two models distil from each other."""
    model = model_from_spec(spec) if model is None else model
    last = getattr(getattr(model.layers[-1], "activation", None), "__name__", None)
    if spec_contract(spec, model).label.kind != "classes" or last != "softmax":
        raise FlError(
            "ProxyFL distils class probabilities: the model must be a classifier with a "
            "softmax output",
            "use another strategy for this model (fedavg, fedprox, ...)",
        )


class _Pair:
    """A private and a proxy model of one architecture and their traced mutual step."""

    def __init__(self, spec: bytes):
        t = tf()
        self.lock = threading.RLock()
        self.private = model_from_spec(spec)
        self.proxy = model_from_spec(spec)
        self.contract = spec_contract(spec, self.private)
        check_model(spec, self.private)
        self.lr = t.Variable(0.05, dtype=t.float32, trainable=False)
        self.alpha = t.Variable(0.5, dtype=t.float32, trainable=False)
        self.beta = t.Variable(0.5, dtype=t.float32, trainable=False)
        private_vars = self.private.trainable_variables
        proxy_vars = self.proxy.trainable_variables
        n_features = self.private.inputs[0].shape[1:]

        def ce(y: Any, p: Any) -> Any:
            picked = t.gather(p, y, axis=1, batch_dims=1)
            return -t.reduce_mean(t.math.log(t.clip_by_value(picked, _EPS, 1.0)))

        def kl(p: Any, q: Any) -> Any:
            p = t.clip_by_value(p, _EPS, 1.0)
            q = t.clip_by_value(q, _EPS, 1.0)
            return t.reduce_mean(t.reduce_sum(p * (t.math.log(p) - t.math.log(q)), axis=1))

        @t.function(
            input_signature=[
                t.TensorSpec([None, *n_features], t.float32),
                t.TensorSpec([None], t.int32),
            ]
        )
        def step(x: Any, y: Any) -> Any:
            with t.GradientTape(persistent=True) as tape:
                p_private = self.private(x, training=True)
                p_proxy = self.proxy(x, training=True)
                # each learns the labels and the other's (fixed) predictions
                private_loss = (1 - self.alpha) * ce(y, p_private) + self.alpha * kl(
                    t.stop_gradient(p_proxy), p_private
                )
                proxy_loss = (1 - self.beta) * ce(y, p_proxy) + self.beta * kl(
                    t.stop_gradient(p_private), p_proxy
                )
            for loss, variables in ((private_loss, private_vars), (proxy_loss, proxy_vars)):
                grads = tape.gradient(loss, variables)
                for v, g in zip(variables, grads, strict=True):
                    v.assign_sub(self.lr * g)
            del tape
            return private_loss, proxy_loss

        self.step = step


def _pair(spec: bytes) -> _Pair:
    key = hashlib.sha256(spec).hexdigest()
    with _runners_lock:
        if key not in _runners:
            _runners[key] = _Pair(spec)
        return _runners[key]


def train_proxyfl(
    spec: bytes,
    proxy: Weights,
    private: Weights | None,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float | None = None,
    alpha: float = 0.5,
    beta: float = 0.5,
    seed: int = 0,
) -> tuple[Weights, Weights, int]:
    """One round of ProxyFL on a worker: from the global ``proxy`` and the worker's own
    ``private`` model (None: its first round, from its own random start), train both by mutual
    distillation (``alpha``: the private model's weight on the proxy's predictions, ``beta``:
    the proxy's on the private model's). Returns (new proxy, to share; new private model, to
    keep; examples)."""
    if epochs < 1 or batch_size < 1 or (lr is not None and lr <= 0):
        raise FlError(
            f"bad training arguments: epochs={epochs}, batch_size={batch_size}, lr={lr}",
            "epochs >= 1, batch_size >= 1, lr > 0",
        )
    if not (0 <= alpha <= 1 and 0 <= beta <= 1):
        raise FlError(f"alpha and beta must be in [0, 1], got {alpha}, {beta}", "e.g. 0.5")
    t = tf()
    pair = _pair(spec)
    x = np.asarray(x, dtype=np.float32)
    y = labels_array(pair.contract, y)
    if x.ndim < 2 or len(x) != len(y) or len(x) == 0:
        raise FlError(f"bad training data: x {x.shape}, y {np.shape(y)}", "one label per row")
    with pair.lock:
        pair.proxy.set_weights([np.asarray(w) for w in proxy])
        if private is None:  # its own random start, as the paper's private models have
            private = init_weights(spec, seed)
        pair.private.set_weights([np.asarray(w) for w in private])
        pair.lr.assign(0.05 if lr is None else lr)
        pair.alpha.assign(alpha)
        pair.beta.assign(beta)
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            order = rng.permutation(len(y))
            for start in range(0, len(y), batch_size):
                idx = order[start : start + batch_size]
                pair.step(t.constant(x[idx]), t.constant(y[idx]))
        new_proxy = [np.array(w) for w in pair.proxy.get_weights()]
        new_private = [np.array(w) for w in pair.private.get_weights()]
    return new_proxy, new_private, len(y)
