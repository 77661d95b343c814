"""Strategies as objects configured per model: parameters by short name checked as the
protocol checks them, sensible defaults for the robust ones, FedAvgM equal to Flower's, and
server state that survives a trip through bytes (what a validator stores by CID between
rounds) bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from decentralml_jupyter.fl import ClientUpdate, FlError
from decentralml_jupyter.fl.strategies import (
    STRATEGIES,
    FedAvgM,
    Krum,
    MultiKrum,
    check_params,
    strategy_for,
)
from tests.conftest import require


def _round_updates(rng, current, n=5):
    return [
        ClientUpdate(
            f"c{i}",
            [(c + rng.normal(size=c.shape) * 0.1).astype(np.float32) for c in current],
            int(rng.integers(10, 50)),
        )
        for i in range(n)
    ]


def test_fedavgm_equals_flower_over_rounds():
    require("flwr")
    import flwr.server.strategy as fs
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    rng = np.random.default_rng(5)
    current = [rng.normal(size=s).astype(np.float32) for s in ((4, 3), (3,))]
    theirs = fs.FedAvgM(
        initial_parameters=ndarrays_to_parameters(current),
        server_learning_rate=0.7,
        server_momentum=0.5,
    )
    ours = strategy_for("fedavgm", {"eta": "0.7", "momentum": "0.5"})
    for rnd in range(1, 5):
        ups = _round_updates(rng, current)
        results = [
            (None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(u.weights),
                          u.num_examples, {}))
            for u in ups
        ]  # fmt: skip
        params, _ = theirs.aggregate_fit(rnd, results, [])
        ref = parameters_to_ndarrays(params)
        current = ours.aggregate(current, ups)
        for a, b in zip(current, ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [n for n, c in STRATEGIES.items() if c.STATEFUL])
def test_server_state_through_bytes_is_bit_identical(name):
    """A validator rebuilds the strategy every round from the model's parameters and the
    stored state: its rounds equal one strategy object kept in memory, bit for bit."""
    rng = np.random.default_rng(1)
    start = [rng.normal(size=s).astype(np.float32) for s in ((6, 4), (4,))]
    kept = strategy_for(name, {"eta": "0.05"})
    kept_w, rebuilt_w, state = start, start, None
    for _ in range(4):
        ups = _round_updates(rng, kept_w)
        kept_w = kept.aggregate(kept_w, ups)
        fresh = strategy_for(name, {"eta": "0.05"})
        fresh.restore(state)
        rebuilt_w = fresh.aggregate(rebuilt_w, ups)
        state = fresh.state_bytes()
        for a, b in zip(kept_w, rebuilt_w, strict=True):
            np.testing.assert_array_equal(a, b)
    assert state == kept.state_bytes()
    # a state that is not this strategy's is refused, not half-applied
    with pytest.raises(FlError, match="server state"):
        strategy_for(name).restore(b"not a state")


def test_parameters_are_checked_by_name_and_range():
    assert check_params("fedprox", {"mu": "0.5"}) == {"mu": 0.5}
    assert check_params("multikrum", {"f": "1", "keep": 3}) == {"f": 1, "keep": 3}
    assert check_params("fedadam:secure", {}) == {}
    bad = [
        ("fedprox", {"eta": "1"}, "has no parameter eta"),
        ("fedprox", {"mu": "-1"}, "out of range"),
        ("fedadam", {"beta_1": "1"}, "out of range"),
        ("fedadam", {"tau": "0"}, "out of range"),
        ("trimmed_mean", {"beta": "0.5"}, "out of range"),
        ("krum", {"f": "1.5"}, "must be an integer"),
        ("fedavgm", {"momentum": "nan"}, "out of range"),
        ("fedavg", {"eta": "inf"}, "has no parameter"),
        ("fedmedian:secure", {}, "cannot run on secure aggregation"),
        ("fedfoo", {}, "unknown strategy"),
    ]
    for name, params, why in bad:
        with pytest.raises(FlError, match=why):
            check_params(name, params)


def test_robust_defaults_assume_attackers():
    """Krum tolerates as many attackers as it can by default, and Multi-Krum averages all but
    that many (it used to keep one update, and Krum to assume no attacker)."""
    rng = np.random.default_rng(3)
    current = [np.zeros((3,), np.float32)]
    ups = _round_updates(rng, current, n=7)
    assert Krum().tolerated(7) == 2 and len(Krum().select(ups)) == 1
    assert MultiKrum().kept(7) == 5 and len(MultiKrum().select(ups)) == 5
    assert MultiKrum(num_malicious=1, num_to_keep=3).kept(7) == 3
    params = strategy_for("multikrum").params()
    assert params == {"f": None, "keep": None}  # chosen each round
    assert isinstance(strategy_for("fedavgm"), FedAvgM)
    assert strategy_for("fedprox", {"mu": 0.3}).client_config() == {"proximal_mu": 0.3}


def test_linear_strategies_step_on_a_secure_sum():
    """What secure aggregation reveals (the mean) is enough for the linear strategies: their
    step on the mean equals their aggregate of the updates."""
    rng = np.random.default_rng(4)
    current = [rng.normal(size=(5,)).astype(np.float32)]
    ups = _round_updates(rng, current)
    from decentralml_jupyter.fl.strategies import weighted_average

    for name, cls in STRATEGIES.items():
        if not cls.LINEAR:
            with pytest.raises(FlError, match="needs each update"):
                strategy_for(name).step(current, weighted_average(ups))
            continue
        a = strategy_for(name).aggregate(current, ups)
        b = strategy_for(name).step(current, weighted_average(ups))
        np.testing.assert_array_equal(a[0], b[0])


def test_a_claim_of_examples_buys_at_most_three_times_the_median_weight():
    """num_examples is what a worker says: a liar claiming a million examples against honest
    workers' hundred gets 3x a typical weight in FedAvg, not 10,000x; honest counts stay."""
    from decentralml_jupyter.fl import FedAvg, bound_examples

    g = [np.zeros((1,), np.float32)]
    honest = [ClientUpdate(f"h{i}", [np.full((1,), 1.0, np.float32)], 100 + i) for i in range(4)]
    liar = ClientUpdate("liar", [np.full((1,), 100.0, np.float32)], 1_000_000)
    bounded = bound_examples([*honest, liar])
    assert [u.num_examples for u in bounded] == [100, 101, 102, 103, 306]
    mean = FedAvg().aggregate(g, bounded)[0][0]
    assert mean < 100 * 306 / (406 + 306) + 1  # the liar's pull is bounded
    assert bound_examples(honest) == honest
