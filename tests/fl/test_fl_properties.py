"""Property tests: aggregation is order independent and stays inside the clients' range."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from decentralml_jupyter.fl import ClientUpdate, make_strategy, weights_hash

NAMES = ["fedavg", "fedmedian", "trimmed_mean", "krum", "multikrum"]


@st.composite
def rounds(draw):
    n = draw(st.integers(3, 9))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ups = [
        ClientUpdate(
            f"id{rng.integers(1 << 30):09d}-{i}",
            [(rng.normal(size=shape) * 10 ** rng.uniform(-3, 3)).astype(np.float32)],
            int(rng.integers(1, 1000)),
        )
        for i in range(n)
    ]
    perm = draw(st.permutations(range(n)))
    return ups, [ups[i] for i in perm]


@settings(max_examples=40, deadline=None)
@given(rounds(), st.sampled_from(NAMES))
def test_any_order_same_bytes_and_within_range(data, name):
    ups, shuffled = data
    g = [np.zeros_like(ups[0].weights[0])]
    kwargs = {"num_malicious": 1, "num_to_keep": 2} if name == "multikrum" else {}
    a = make_strategy(name, **kwargs).aggregate(g, ups)
    b = make_strategy(name, **kwargs).aggregate(g, shuffled)
    assert weights_hash(a) == weights_hash(b)
    stack = np.stack([u.weights[0] for u in ups])
    # Every strategy here is a (weighted) average or order statistic of client values.
    tol = 1e-5 * np.max(np.abs(stack)) + 1e-30
    assert np.all(a[0] >= stack.min(axis=0) - tol)
    assert np.all(a[0] <= stack.max(axis=0) + tol)
