"""ProxyFL: workers keep private models and share only proxies trained by mutual
distillation; on non-IID data their private models fit their own data better than the
FedAvg model does, while the proxies still learn a global model."""

from __future__ import annotations

import numpy as np
import pytest

from decentralml_jupyter import fl
from decentralml_jupyter.fl import FlError


def test_private_and_proxy_train_apart_and_repeatably():
    ds = fl.load_dataset("digits", seed=0)
    spec = fl.model_to_spec(fl.mlp(ds.input_dim, ds.num_classes, (16,)))
    start = fl.init_weights(spec, 0)
    x, y = ds.x_train[:200], ds.y_train[:200]
    proxy, private, n = fl.train_proxyfl(spec, start, None, x, y, epochs=2, seed=3)
    again, private_again, _ = fl.train_proxyfl(spec, start, None, x, y, epochs=2, seed=3)
    assert n == 200
    for a, b in zip(proxy + private, again + private_again, strict=True):
        np.testing.assert_array_equal(a, b)
    # the private model starts on its own and stays the worker's: the proxy is what moves on
    assert any(not np.array_equal(a, b) for a, b in zip(proxy, private, strict=True))
    # given as the private model, the proxy's weights are mutual distillation of two equals:
    # symmetric, so the two stay equal
    p0, q0, _ = fl.train_proxyfl(spec, start, start, x, y, seed=3)
    for a, b in zip(p0, q0, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_regression_model_is_refused_with_a_reason():
    import keras

    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    spec = fl.model_to_spec(model, label="regression")
    weights = [np.asarray(w) for w in model.get_weights()]
    with pytest.raises(FlError, match="softmax"):
        fl.train_proxyfl(spec, weights, None, np.zeros((4, 3)), np.zeros(4))


def test_on_non_iid_data_private_models_beat_the_fedavg_model_locally():
    kw = dict(rounds=6, epochs=2, alpha=0.1, local_test=0.2, seed=0)
    fedavg = fl.simulate("digits", 10, "dirichlet", strategy="fedavg", **kw)
    proxy = fl.simulate("digits", 10, "dirichlet", strategy="proxyfl", **kw)
    assert proxy[-1]["local_accuracy"] > fedavg[-1]["local_accuracy"] + 0.03
    assert proxy[-1]["accuracy"] > 0.6  # the shared proxy still learns a global model
