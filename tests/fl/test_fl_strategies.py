"""Aggregation strategies: equal to Flower's reference implementations, order independent,
bit-reproducible across processes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import make_updates

from decentralml_jupyter.fl import (
    ClientUpdate,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    FlError,
    Krum,
    MultiKrum,
    make_strategy,
    weights_hash,
)
from tests.conftest import require

RTOL, ATOL = 1e-6, 1e-6  # Flower sums in float32 in arrival order; we sum in float64 by id


def _as_flwr(updates):
    return [([w.copy() for w in u.weights], u.num_examples) for u in updates]


def _close(ours, theirs, exact=False):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == np.shape(b)
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


@pytest.fixture()
def updates():
    return make_updates(7, seed=3)


@pytest.fixture()
def global_w(updates):
    return [np.zeros_like(w) for w in updates[0].weights]


def test_fedavg_equals_flower(updates, global_w):
    agg = require("flwr.server.strategy.aggregate")
    _close(FedAvg().aggregate(global_w, updates), agg.aggregate(_as_flwr(updates)))
    # FedProx's server side is FedAvg.
    _close(FedProx(0.1).aggregate(global_w, updates), agg.aggregate(_as_flwr(updates)))


def test_median_trimmed_equal_flower(updates, global_w):
    agg = require("flwr.server.strategy.aggregate")
    _close(FedMedian().aggregate(global_w, updates), agg.aggregate_median(_as_flwr(updates)))
    for beta in (0.0, 0.2, 0.3):
        _close(
            FedTrimmedAvg(beta).aggregate(global_w, updates),
            agg.aggregate_trimmed_avg(_as_flwr(updates), beta),
        )


def test_krum_and_multikrum_equal_flower(global_w):
    agg = require("flwr.server.strategy.aggregate")
    rng = np.random.default_rng(5)
    # 7 honest updates around 1.0, 2 outliers: Krum must pick an honest one.
    base = [np.ones((6, 4), np.float32), np.ones((4,), np.float32)]
    ups = []
    for i in range(9):
        spread = 20.0 if i in (2, 6) else 0.1
        ws = [(b + rng.normal(size=b.shape) * spread).astype(np.float32) for b in base]
        ups.append(ClientUpdate(f"c{i}", ws, 10 + i))
    g = [np.zeros_like(b) for b in base]
    ours = Krum(num_malicious=2).aggregate(g, ups)
    _close(ours, agg.aggregate_krum(_as_flwr(ups), 2, 0), exact=True)
    assert weights_hash(ours) not in {weights_hash(ups[2].weights), weights_hash(ups[6].weights)}
    for keep in (3, 5):
        _close(
            MultiKrum(num_malicious=2, num_to_keep=keep).aggregate(g, ups),
            agg.aggregate_krum(_as_flwr(ups), 2, keep),
        )
    assert "c2" not in [u.client_id for u in Krum(2, 7).select(ups)]


@pytest.mark.parametrize("ours_cls, name", [(FedAdam, "FedAdam"), (FedYogi, "FedYogi")])
def test_server_optimisers_equal_flower_over_rounds(ours_cls, name):
    require("flwr")
    import flwr.server.strategy as fs
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    rng = np.random.default_rng(11)
    shapes = ((5, 3), (3,))
    current = [rng.normal(size=s).astype(np.float32) for s in shapes]
    kwargs = {"eta": 0.05, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}
    theirs = getattr(fs, name)(initial_parameters=ndarrays_to_parameters(current), **kwargs)
    ours = ours_cls(**kwargs)
    for rnd in range(1, 4):
        ups = [
            ClientUpdate(
                f"c{i}",
                [(c + rng.normal(size=c.shape) * 0.1).astype(np.float32) for c in current],
                int(rng.integers(10, 50)),
            )
            for i in range(4)
        ]
        results = [
            (
                None,
                FitRes(Status(Code.OK, ""), ndarrays_to_parameters(u.weights), u.num_examples, {}),
            )
            for u in ups
        ]
        params, _ = theirs.aggregate_fit(rnd, results, [])
        ref = parameters_to_ndarrays(params)
        current = ours.aggregate(current, ups)
        np.testing.assert_allclose(current[0], ref[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(current[1], ref[1], rtol=1e-5, atol=1e-6)
    assert ours.round == 3


def test_fedavg_weights_by_examples():
    g = [np.zeros((2,), np.float32)]
    ups = [
        ClientUpdate("a", [np.array([1.0, 1.0], np.float32)], 1),
        ClientUpdate("b", [np.array([4.0, 0.0], np.float32)], 3),
    ]
    np.testing.assert_allclose(FedAvg().aggregate(g, ups)[0], [3.25, 0.25])


def test_median_resists_one_outlier():
    g = [np.zeros((3,), np.float32)]
    ups = [ClientUpdate(f"c{i}", [np.full((3,), 1.0 + i * 0.01, np.float32)], 1) for i in range(4)]
    ups.append(ClientUpdate("evil", [np.full((3,), 1e6, np.float32)], 1000))
    assert np.all(FedMedian().aggregate(g, ups)[0] < 1.1)
    assert np.all(FedAvg().aggregate(g, ups)[0] > 1e5)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("fedavg", {}),
        ("fedmedian", {}),
        ("trimmed_mean", {"beta": 0.2}),
        ("krum", {"num_malicious": 2}),
        ("multikrum", {"num_malicious": 2, "num_to_keep": 4}),
        ("fedadam", {}),
        ("fedyogi", {}),
    ],
)
def test_result_independent_of_arrival_order(name, kwargs, updates, global_w):
    shuffled = list(updates)
    random.Random(1).shuffle(shuffled)
    assert [u.client_id for u in shuffled] != [u.client_id for u in updates]
    a = make_strategy(name, **kwargs).aggregate(global_w, updates)
    b = make_strategy(name, **kwargs).aggregate(global_w, shuffled)
    assert weights_hash(a) == weights_hash(b)
    assert [x.dtype for x in a] == [x.dtype for x in global_w]


_SCRIPT = textwrap.dedent(
    """
    import json, random, sys
    import numpy as np
    from decentralml_jupyter.fl import ClientUpdate, make_strategy, weights_hash

    rng = np.random.default_rng(0)
    shapes = [(64, 32), (32,), (32, 10), (10,)]
    ups = [
        ClientUpdate(f"w{i:02d}", [rng.normal(size=s).astype(np.float32) for s in shapes],
                     int(rng.integers(10, 300)))
        for i in range(10)
    ]
    g = [np.zeros(s, np.float32) for s in shapes]
    random.Random(int(sys.argv[1])).shuffle(ups)
    out = {}
    for name, kw in json.loads(sys.argv[2]).items():
        s = make_strategy(name, **kw)
        w = s.aggregate(g, ups)
        w = s.aggregate(w, ups)  # a second round exercises optimiser state
        out[name] = weights_hash(w)
    print(json.dumps({"order": [u.client_id for u in ups], "hashes": out}))
    """
)


def test_bit_reproducible_across_processes_and_orders():
    strategies = {
        "fedavg": {},
        "fedmedian": {},
        "trimmed_mean": {"beta": 0.2},
        "krum": {"num_malicious": 3},
        "multikrum": {"num_malicious": 3, "num_to_keep": 5},
        "fedadam": {},
        "fedyogi": {},
    }
    runs = []
    for shuffle_seed in (1, 2):
        r = subprocess.run(
            [sys.executable, "-c", _SCRIPT, str(shuffle_seed), json.dumps(strategies)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert runs[0]["order"] != runs[1]["order"]
    assert runs[0]["hashes"] == runs[1]["hashes"]
    # The hashes are real content hashes: different strategies give different models.
    assert len(set(runs[0]["hashes"].values())) == len(strategies)


def test_bad_arguments_raise(global_w, updates):
    with pytest.raises(FlError):
        make_strategy("nope")
    with pytest.raises(FlError):
        make_strategy("fedavg", bogus=1)
    with pytest.raises(FlError):
        FedTrimmedAvg(0.5)
    with pytest.raises(FlError):
        FedAvg().aggregate(global_w, [])
    with pytest.raises(FlError):
        FedAvg().aggregate(global_w, [updates[0], updates[0]])
