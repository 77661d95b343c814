"""The blocked, fused aggregation paths give the same bytes as the plain float64 formulas.

FedAvg, FedMedian and trimmed mean work a block of elements at a time, and FedAvg multiplies
and adds in one np.einsum pass when that is exact. FedAvg over float32 updates normally runs
the compiled pass in fl/_fedavg_kernel.py instead; every FedAvg test runs on both paths
("compiled" and "numpy"). These tests pin the results to the
straightforward whole-array formulas, bit for bit, on inputs chosen to expose any change of
rounding or accumulation order (cancellation, signed zeros, huge example counts, block tails).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import decentralml_jupyter.fl.strategies as strategies
from decentralml_jupyter.fl import (
    ClientUpdate,
    FedAvg,
    FedMedian,
    FedTrimmedAvg,
    FlError,
    MultiKrum,
)

BLOCK = 256  # small blocks, so modest arrays cross several block boundaries


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(strategies, "_BLOCK", BLOCK)


@pytest.fixture(params=["compiled", "numpy"])
def fedavg_path(request, monkeypatch):
    """Runs a test with the compiled FedAvg pass (numba is a dependency: it must load) and
    again with the numpy path."""
    if request.param == "compiled":
        kernel = strategies._fedavg_kernel()
        assert kernel is not None, "numba did not import: the compiled FedAvg pass is missing"
        # Every layer through the pass, split over threads even on a one-core machine.
        monkeypatch.setattr(kernel, "MIN_WORK", 1)
        monkeypatch.setattr(kernel, "PARALLEL_MIN", 1)
        monkeypatch.setattr(kernel, "_threads", lambda: 3)
    else:
        monkeypatch.setattr(strategies, "_KERNEL", False)
    return request.param


def _plain_fedavg(updates, like):
    ordered = sorted(updates, key=lambda u: u.client_id)
    total = float(sum(u.num_examples for u in ordered))
    out = []
    for i, g in enumerate(like):
        acc = np.zeros(np.shape(g), dtype=np.float64)
        for u in ordered:
            acc += np.asarray(u.weights[i], dtype=np.float64) * float(u.num_examples)
        out.append((acc / total).astype(g.dtype))
    return out


def _plain_sorted(updates, i):
    ordered = sorted(updates, key=lambda u: u.client_id)
    return np.sort(np.stack([np.asarray(u.weights[i], dtype=np.float64) for u in ordered]), 0)


def _plain_median(updates, like):
    return [
        np.median(_plain_sorted(updates, i), axis=0).astype(g.dtype) for i, g in enumerate(like)
    ]


def _plain_trimmed(updates, like, beta):
    n = len(updates)
    cut = int(beta * n)
    out = []
    for i, g in enumerate(like):
        acc = np.zeros(np.shape(g), dtype=np.float64)
        for row in _plain_sorted(updates, i)[cut : n - cut]:
            acc += row
        out.append((acc / float(n - 2 * cut)).astype(g.dtype))
    return out


# (3, 1031): longer than the compiled pass's 1024-element strips, and split over 3 threads at
# points that are not strip boundaries.
SHAPES = [
    (3 * BLOCK + 63,),
    (BLOCK + 1,),
    (2, BLOCK),
    (64,),
    (63,),
    (1,),
    (),
    (0,),
    (7, 5),
    (3, 1031),
]


def _values(rng, shape, kind):
    if kind == "normal":
        return rng.standard_normal(shape) * 10.0 ** rng.integers(-4, 4)  # float16 range
    if kind == "zeros":  # signed zeros and exact ties
        return rng.choice([-0.0, 0.0, 1.0, -1.0, 0.5], size=shape)
    # big and tiny terms together: any change of summation order changes the rounding
    return rng.choice([1.0, -1.0, 2.0**-24, 2.0**-30, 3e4, -3e4], size=shape) * rng.choice(
        [1.0, 1.0 + 2.0**-10], size=shape
    )


def _updates(rng, dtype, kind, k, counts):
    ups = [
        ClientUpdate(
            f"c{i:02d}",
            [_values(rng, s, kind).astype(dtype) for s in SHAPES],
            int(counts[i]),
        )
        for i in range(k)
    ]
    rng.shuffle(ups)
    return ups


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("kind", ["normal", "zeros", "cancel"])
@pytest.mark.parametrize("counts", ["small", "huge"])
def test_blocked_aggregates_equal_plain_formulas(dtype, kind, counts, fedavg_path):
    rng = np.random.default_rng(zlib.crc32(f"{np.dtype(dtype).name}-{kind}-{counts}".encode()))
    for k in (1, 2, 4, 6, 11, 15):
        n = rng.integers(1, 500, k) if counts == "small" else rng.integers(2**29 - 3, 2**40, k)
        ups = _updates(rng, dtype, kind, k, n)
        like = [np.zeros(s, dtype) for s in SHAPES]
        cases = [
            (FedAvg(), _plain_fedavg(ups, like)),
            (FedMedian(), _plain_median(ups, like)),
            (FedTrimmedAvg(0.2), _plain_trimmed(ups, like, 0.2)),
            (FedTrimmedAvg(0.0), _plain_trimmed(ups, like, 0.0)),
        ]
        for strategy, want in cases:
            got = strategy.aggregate(like, ups)
            for a, b in zip(got, want, strict=True):
                assert a.dtype == b.dtype and a.shape == b.shape
                assert a.tobytes() == b.tobytes(), (strategy.name, dtype, kind, counts, k)
        # Uncast float64 means (FedAdam, FedYogi and Multi-Krum use them): casting to float32
        # would hide a changed last bit, so compare these too.
        raw = strategies.weighted_average(ups)
        want = _plain_fedavg(ups, [np.zeros(s, np.float64) for s in SHAPES])
        for a, b in zip(raw, want, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes(), ("weighted_average", dtype, kind, counts, k)


def test_fused_sum_keeps_client_order(fedavg_path):
    # 1 + 2**-53 + 2**-53: left to right rounds back to 1 twice; any pairing first gives
    # 1 + 2**-52. Only strict client order reproduces the plain formula's float64 bits.
    size = 2 * BLOCK
    ones = np.ones(size, np.float32)
    tiny = np.full(size, 2.0**-53, np.float32)
    ups = [ClientUpdate("a", [ones], 1), ClientUpdate("b", [tiny], 1)]
    ups.append(ClientUpdate("c", [tiny.copy()], 1))
    got = strategies.weighted_average(ups)[0]
    want = ((1.0 + 2.0**-53) + 2.0**-53) / 3.0
    assert np.all(got == want)
    assert got.tobytes() == np.full(size, want).tobytes()


def test_fedavg_of_read_only_and_strided_updates(fedavg_path):
    # Updates read from storage are read-only buffers; a layer may also arrive transposed
    # (not contiguous). Both paths must give the plain formula's bytes for any mix.
    rng = np.random.default_rng(7)
    shape = (40, 70)
    ups = []
    for i in range(7):
        w = rng.standard_normal(shape).astype(np.float32)
        if i % 3 == 0:
            w = np.frombuffer(w.tobytes(), np.float32).reshape(shape)  # read-only
            assert not w.flags.writeable
        elif i % 3 == 1:
            w = np.asfortranarray(w)
        ups.append(ClientUpdate(f"c{i}", [w, w.T], int(rng.integers(1, 300))))
    like = [np.zeros(shape, np.float32), np.zeros(shape[::-1], np.float32)]
    got = FedAvg().aggregate(like, ups)
    for a, b in zip(got, _plain_fedavg(ups, like), strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_mismatched_updates_are_refused():
    g = [np.zeros((4,), np.float32), np.zeros((2,), np.float32)]
    good = ClientUpdate("a", [np.ones((4,), np.float32), np.ones((2,), np.float32)], 1)
    short = ClientUpdate("b", [np.ones((4,), np.float32)], 1)
    wrong = ClientUpdate("c", [np.ones((5,), np.float32), np.ones((2,), np.float32)], 1)
    for strategy in (FedAvg(), FedMedian(), FedTrimmedAvg(0.2), MultiKrum(0, 2)):
        with pytest.raises(FlError):
            strategy.aggregate(g, [good, short])
        with pytest.raises(FlError):
            strategy.aggregate(g, [good, wrong])
