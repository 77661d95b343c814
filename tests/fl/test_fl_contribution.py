"""Leave-one-out contribution scores."""

from __future__ import annotations

import numpy as np
import pytest

from decentralml_jupyter.fl import (
    ClientUpdate,
    FedAdam,
    FedAvg,
    FlError,
    evaluate,
    init_weights,
    leave_one_out,
    train_local,
)


def test_scores_are_shares_and_punish_a_harmful_update():
    target = np.array([1.0, 2.0, 3.0], np.float32)

    def loss_to_target(w):
        return {"loss": float(np.sum((w[0] - target) ** 2)), "accuracy": 0.0}

    g = [np.zeros(3, np.float32)]
    ups = [
        ClientUpdate("a", [target + 0.1], 10),
        ClientUpdate("b", [target - 0.2], 10),
        ClientUpdate("c", [np.array([-50, 50, -50], np.float32)], 10),
    ]
    s = leave_one_out(FedAvg(), g, ups, loss_to_target)
    assert set(s) == {"a", "b", "c"}
    assert sum(s.values()) == pytest.approx(1.0)
    assert min(s.values()) >= 0
    assert s["c"] == 0.0
    assert s["a"] > 0 and s["b"] > 0
    # Order of arrival does not matter.
    assert leave_one_out(FedAvg(), g, ups[::-1], loss_to_target) == s


def test_no_helpful_update_splits_equally_and_single_gets_all():
    g = [np.zeros(2, np.float32)]
    ups = [ClientUpdate(c, [np.zeros(2, np.float32)], 1) for c in "xyz"]
    const = leave_one_out(FedAvg(), g, ups, lambda w: {"loss": 1.0})
    assert const == {c: pytest.approx(1 / 3) for c in "xyz"}
    assert leave_one_out(FedAvg(), g, ups[:1], lambda w: {"loss": 1.0}) == {"x": 1.0}
    with pytest.raises(FlError):
        leave_one_out(FedAvg(), g, ups, lambda w: {"loss": 1.0}, metric="f1")


def test_stateful_strategy_not_advanced():
    g = [np.zeros(2, np.float32)]
    ups = [ClientUpdate(c, [np.full(2, i + 1.0, np.float32)], 1) for i, c in enumerate("ab")]
    strat = FedAdam()
    leave_one_out(strat, g, ups, lambda w: {"loss": float(np.sum(w[0] ** 2))})
    assert strat.round == 0 and strat.m is None


def test_flipped_labels_worker_scores_lowest(digits, digits_spec):
    g = init_weights(digits_spec, 0)
    # A few honest rounds first, so the model is past the point where any update helps.
    g, _, _ = train_local(digits_spec, g, digits.x_train, digits.y_train, epochs=2, lr=0.1)
    ups = []
    for k in range(4):
        idx = np.arange(k, len(digits.y_train), 4)
        y = digits.y_train[idx]
        if k == 0:
            y = digits.num_classes - 1 - y
        w, n, _ = train_local(digits_spec, g, digits.x_train[idx], y, epochs=2, lr=0.1, seed=k)
        ups.append(ClientUpdate(f"w{k}", w, n))
    s = leave_one_out(
        FedAvg(), g, ups, lambda w: evaluate(digits_spec, w, digits.x_val, digits.y_val)
    )
    assert s["w0"] == min(s.values())
    assert s["w0"] < 0.1
    assert sum(s.values()) == pytest.approx(1.0)
