"""First-order contribution shares (large rounds) against exact leave-one-out, on real
training: the same ranking of who helped, free riders and label flippers at zero."""

from __future__ import annotations

import numpy as np
import pytest

from decentralml_jupyter import fl


@pytest.fixture(scope="module")
def round_of_40():
    ds = fl.load_dataset("digits", seed=0)
    model = fl.mlp(ds.input_dim, ds.num_classes, hidden=(16,))
    spec = fl.model_to_spec(model)
    base = fl.init_weights(spec, 0)
    parts = fl.partition(ds.y_train, 40, "iid", seed=0)
    # a few rounds of FedAvg first, so that the base is a model worth improving
    for r in range(3):
        ups = [
            fl.ClientUpdate(
                f"c{k:02d}",
                *fl.train_local(spec, base, ds.x_train[i], ds.y_train[i], 2, 16, seed=r)[:2],
            )
            for k, i in enumerate(parts)
        ]
        base = fl.FedAvg().aggregate(base, ups)
    updates = []
    for k, idx in enumerate(parts):
        x, y = ds.x_train[idx], ds.y_train[idx]
        if k < 4:  # label flippers
            y = ds.num_classes - 1 - y
        w, n, _ = fl.train_local(spec, base, x, y, 2, 16, seed=k)
        if k in (4, 5):  # free riders: the global model back
            w = [np.array(b) for b in base]
        updates.append(fl.ClientUpdate(f"c{k:02d}", w, n))
    return spec, base, updates, ds


def test_first_order_shares_rank_like_leave_one_out(round_of_40) -> None:
    spec, base, updates, ds = round_of_40

    def ev(w):
        return fl.evaluate(spec, w, ds.x_val, ds.y_val)

    exact = fl.leave_one_out(fl.FedAvg(), base, updates, ev, metric="loss")
    agg = fl.FedAvg().aggregate(base, updates)
    gradient = fl.loss_gradient(spec, agg, ds.x_val, ds.y_val)
    approx = fl.first_order_shares(gradient, iter(updates))  # a stream: each read once
    assert set(approx) == set(exact) and abs(sum(approx.values()) - 1) < 1e-9
    bad = [f"c{k:02d}" for k in range(6)]
    # flippers and free riders earn nothing to first order (exactly 0: their gain <= 0)
    assert all(approx[c] == 0.0 for c in bad), {c: approx[c] for c in bad}
    honest = [c for c in exact if c not in bad]
    assert min(approx[c] for c in honest) >= 0
    # the honest clients' shares track the exact ones: rank correlation well above chance
    a = np.argsort(np.argsort([approx[c] for c in honest]))
    e = np.argsort(np.argsort([exact[c] for c in honest]))
    rho = np.corrcoef(a, e)[0, 1]
    assert rho > 0.6, rho
    # and the total share of the honest is at least the exact rule's
    assert sum(approx[c] for c in honest) >= sum(exact[c] for c in honest) - 1e-9


def test_first_order_shares_edge_cases() -> None:
    g = [np.ones((2, 2)), np.ones(2)]
    w = [np.zeros((2, 2)), np.zeros(2)]
    assert fl.first_order_shares(g, []) == {}
    assert fl.first_order_shares(g, [fl.ClientUpdate("a", w, 5)]) == {"a": 1.0}
    same = [fl.ClientUpdate(c, w, 5) for c in "abc"]  # nobody helps more: equal shares
    assert fl.first_order_shares(g, same) == {c: pytest.approx(1 / 3) for c in "abc"}
    with pytest.raises(fl.FlError, match="twice"):
        fl.first_order_shares(g, [fl.ClientUpdate("a", w, 5)] * 2)
    with pytest.raises(fl.FlError, match="weight arrays"):
        fl.first_order_shares(g, [fl.ClientUpdate("a", w[:1], 5), fl.ClientUpdate("b", w, 1)])


def test_a_simulated_round_of_100_clients_scores_to_first_order() -> None:
    hist = fl.simulate(
        "digits", n_clients=100, rounds=1, epochs=1, hidden=(8,), poisoners=5,
        contributions=True,
    )  # fmt: skip
    shares = hist[0]["contributions"]
    assert len(shares) == len(hist[0]["accepted"]) > fl.EXACT_CONTRIBUTIONS_MAX
    assert abs(sum(shares.values()) - 1) < 1e-9 and min(shares.values()) >= 0
