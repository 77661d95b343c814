"""Model specs and local training."""

from __future__ import annotations

import numpy as np
import pytest

from decentralml_jupyter.fl import (
    FlError,
    evaluate,
    init_weights,
    mlp,
    model_from_spec,
    model_to_spec,
    train_local,
)
from decentralml_jupyter.fl.checks import delta_norm


def test_spec_round_trip_and_determinism():
    spec = model_to_spec(mlp(64, 10, hidden=(16, 8)))
    # Building other models first must not change the spec (layer names are explicit).
    mlp(4, 3)
    mlp(5, 2)
    assert model_to_spec(mlp(64, 10, hidden=(16, 8))) == spec
    model = model_from_spec(spec)
    assert model_to_spec(model) == spec
    assert [tuple(w.shape) for w in model.get_weights()] == [
        (64, 16),
        (16,),
        (16, 8),
        (8,),
        (8, 10),
        (10,),
    ]
    assert model_to_spec(mlp(64, 10, hidden=(16,))) != spec


def test_init_weights_deterministic_by_seed(digits_spec):
    a, b, c = (
        init_weights(digits_spec, 3),
        init_weights(digits_spec, 3),
        init_weights(digits_spec, 4),
    )
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_bad_spec_and_bad_shape_raise():
    with pytest.raises(FlError):
        model_from_spec(b"{not json")
    with pytest.raises(FlError):
        mlp(0, 10)


def test_training_learns_and_is_deterministic(digits, digits_spec):
    w0 = init_weights(digits_spec, 0)
    before = evaluate(digits_spec, w0, digits.x_val, digits.y_val)
    args = (digits_spec, w0, digits.x_train[:400], digits.y_train[:400])
    w1, n, metrics = train_local(*args, epochs=3, batch_size=32, lr=0.1, seed=7)
    w2, _, _ = train_local(*args, epochs=3, batch_size=32, lr=0.1, seed=7)
    w3, _, _ = train_local(*args, epochs=3, batch_size=32, lr=0.1, seed=8)
    after = evaluate(digits_spec, w1, digits.x_val, digits.y_val)
    assert n == 400
    assert set(metrics) == {"train_loss", "train_accuracy"}
    assert after["accuracy"] > before["accuracy"] + 0.3
    assert after["loss"] < before["loss"]
    for a, b in zip(w1, w2, strict=True):
        np.testing.assert_array_equal(a, b)  # same seed: bit-identical
    assert not np.array_equal(w1[0], w3[0])  # other seed: other batch order
    # Inputs are not modified in place.
    np.testing.assert_array_equal(w0[0], init_weights(digits_spec, 0)[0])


def test_proximal_term_keeps_weights_near_start(digits, digits_spec):
    w0 = init_weights(digits_spec, 0)
    x, y = digits.x_train[:300], digits.y_train[:300]
    plain, _, _ = train_local(digits_spec, w0, x, y, epochs=3, lr=0.1, seed=1)
    prox, _, _ = train_local(digits_spec, w0, x, y, epochs=3, lr=0.1, proximal_mu=1.0, seed=1)
    assert delta_norm(w0, prox) < 0.8 * delta_norm(w0, plain)


def test_evaluate_metrics(digits, digits_spec):
    w = init_weights(digits_spec, 0)
    m = evaluate(digits_spec, w, digits.x_test, digits.y_test)
    assert 0.0 <= m["accuracy"] <= 1.0 and m["loss"] > 0
    # Untrained 10-class model: about chance level, loss near ln(10).
    assert m["accuracy"] < 0.35 and abs(m["loss"] - np.log(10)) < 1.0


def test_bad_training_input_raises(digits_spec):
    w = init_weights(digits_spec, 0)
    with pytest.raises(FlError):
        train_local(digits_spec, w, np.zeros((3, 64)), np.zeros(4), epochs=1)
    with pytest.raises(FlError):
        train_local(digits_spec, w, np.zeros((3, 64)), np.zeros(3), epochs=0)
    with pytest.raises(FlError):
        train_local(digits_spec, w[:-1], np.zeros((3, 64)), np.zeros(3))
