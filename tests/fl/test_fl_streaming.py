"""Aggregation that streams the updates (one float64 accumulator, each update added and
dropped) gives the same bits as aggregating them in memory, for every LINEAR strategy; leaving
one update out by subtraction gives the same contributions as re-aggregating the others."""

from __future__ import annotations

import copy
import zlib

import numpy as np
import pytest

import decentralml_jupyter.fl.strategies as strategies
from decentralml_jupyter.fl import (
    STRATEGIES,
    ClientUpdate,
    FedAvg,
    FedMedian,
    FlError,
    WeightedSum,
    leave_one_out,
    leave_one_out_linear,
    strategy_for,
    weights_from_buffer,
    weights_from_bytes,
    weights_to_bytes,
)

SHAPES = [(3 * 256 + 63,), (2, 256), (64,), (1,), (), (0,), (7, 5)]
LINEAR = sorted(name for name, cls in STRATEGIES.items() if cls.LINEAR)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(strategies, "_BLOCK", 256)  # layers cross several block boundaries


def _values(rng, shape, kind):
    if kind == "zeros":  # signed zeros and exact ties
        return rng.choice([-0.0, 0.0, 1.0, -1.0, 0.5], size=shape)
    if kind == "cancel":  # big and tiny terms together: any change of order changes rounding
        return rng.choice([1.0, -1.0, 2.0**-24, 3e4, -3e4], size=shape)
    return rng.standard_normal(shape)


def _updates(seed, dtype, kind, k, huge=False):
    rng = np.random.default_rng(seed)
    counts = rng.integers(2**29 - 3, 2**40, k) if huge else rng.integers(1, 500, k)
    return [
        ClientUpdate(
            f"c{i:02d}", [_values(rng, s, kind).astype(dtype) for s in SHAPES], int(counts[i])
        )
        for i in range(k)
    ]


def _streamed(strategy, base, updates):
    total = WeightedSum(base)
    for u in sorted(updates, key=lambda u: u.client_id):
        total.add(u)
    return total.aggregate(strategy, base), total


def _same_bits(a, b) -> bool:
    return all(
        x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("kind", ["normal", "zeros", "cancel"])
def test_a_streamed_aggregate_has_the_bits_of_the_in_memory_one(name, dtype, kind):
    seed = zlib.crc32(f"{name}-{np.dtype(dtype).name}-{kind}".encode())
    for k, huge in ((1, False), (2, True), (5, False), (11, True)):
        ups = _updates(seed + k, dtype, kind, k, huge)
        base = [np.zeros(s, dtype) for s in SHAPES]
        in_memory = strategy_for(name)
        streamed = copy.deepcopy(in_memory)
        want = in_memory.aggregate(base, list(reversed(ups)))  # any order in memory
        got, _ = _streamed(streamed, base, ups)
        assert _same_bits(got, want), (name, k)
        assert streamed.state_bytes() == in_memory.state_bytes()


def test_the_sum_takes_updates_in_client_id_order_only():
    ups = _updates(1, np.float32, "normal", 3)
    total = WeightedSum([np.zeros(s, np.float32) for s in SHAPES])
    total.add(ups[1])
    with pytest.raises(FlError, match="added after"):
        total.add(ups[0])
    with pytest.raises(FlError, match="added after"):
        total.add(ups[1])
    with pytest.raises(FlError, match="not in the sum"):
        total.mean(without=ups[2])


def test_a_robust_strategy_cannot_stream():
    base = [np.zeros(s, np.float32) for s in SHAPES]
    total = WeightedSum(base)
    total.add(_updates(2, np.float32, "normal", 1)[0])
    with pytest.raises(FlError, match="every update"):
        total.aggregate(FedMedian(), base)


@pytest.mark.parametrize("name", ["fedavg", "fedadam"])
def test_leaving_one_out_by_subtraction_is_close_to_re_aggregating(name):
    rng = np.random.default_rng(3)
    base = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    ups = _updates(4, np.float32, "normal", 5)
    total = WeightedSum(base)
    for u in ups:
        total.add(u)
    strategy = strategy_for(name)
    by_id = {u.client_id: u for u in ups}
    for u in ups:
        others = [v for v in ups if v is not u]
        want = copy.deepcopy(strategy).aggregate(base, others)
        got = total.aggregate(copy.deepcopy(strategy), base, without=u)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # contributions: a quality that is plain arithmetic on the weights, so shares can be
    # compared; an update far from the others scores apart from them
    target = [np.full(s, 0.1, np.float32) for s in SHAPES]

    def evaluate(weights):
        pairs = zip(weights, target, strict=True)
        loss = sum(float(np.sum((w.astype(np.float64) - t) ** 2)) for w, t in pairs)
        return {"loss": loss}

    reads = []

    def read(cid):
        reads.append(cid)
        return by_id[cid]

    want = leave_one_out(strategy, base, ups, evaluate)
    got = leave_one_out_linear(strategy, base, total, read, evaluate)
    assert reads == sorted(by_id)  # each update read again once, in client-id order
    assert got.keys() == want.keys() and abs(sum(got.values()) - 1.0) < 1e-9
    for cid in want:
        assert got[cid] == pytest.approx(want[cid], abs=1e-4)
    assert strategy.state_bytes() is None  # the strategy was copied, not advanced


def test_leave_one_out_linear_of_one_update_gives_it_everything():
    base = [np.zeros(s, np.float32) for s in SHAPES]
    total = WeightedSum(base)
    total.add(_updates(5, np.float32, "normal", 1)[0])
    shares = leave_one_out_linear(FedAvg(), base, total, lambda c: None, lambda w: {"loss": 0.0})
    assert shares == {"c00": 1.0}


def test_weights_read_from_a_buffer_are_views_equal_to_a_copying_read():
    rng = np.random.default_rng(6)
    weights = [
        rng.standard_normal((3, 5)).astype(np.float32),
        rng.standard_normal(7).astype(np.float16),
        np.arange(4, dtype=np.uint64),
        np.zeros((0, 3), np.float64),
        np.asarray(2.5, np.float32),
        np.asarray([True, False]),
    ]
    data = bytearray(weights_to_bytes(weights))
    got = weights_from_buffer(data)
    want = weights_from_bytes(bytes(data))
    assert _same_bits(got, want) and _same_bits(got, weights)
    assert all(not a.flags.writeable for a in got)
    data[-1] ^= 1  # a view: the buffer's bytes, not a copy of them
    assert not _same_bits(weights_from_buffer(data), want)


@pytest.mark.parametrize(
    "damage",
    ["truncated", "header too long", "not json", "gap", "overlap", "wrong size", "bad dtype"],
)
def test_a_damaged_weights_buffer_is_refused(damage):
    import json
    import struct

    data = weights_to_bytes([np.ones(4, np.float32), np.ones(2, np.float32)])
    n = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8 : 8 + n]), data[8 + n :]
    if damage == "truncated":
        raw = data[:-1]
    elif damage == "header too long":
        raw = struct.pack("<Q", len(data)) + data[8:]
    elif damage == "not json":
        raw = data[:8] + b"{" * n + body
    else:
        if damage == "gap":
            header["w000001"]["data_offsets"] = [20, 28]
        elif damage == "overlap":
            header["w000001"]["data_offsets"] = [8, 16]
        elif damage == "wrong size":
            header["w000001"]["shape"] = [3]
        else:
            header["w000001"]["dtype"] = "Q9"
        text = json.dumps(header).encode()
        raw = struct.pack("<Q", len(text)) + text + body
    with pytest.raises(FlError, match="not a weights file"):
        weights_from_buffer(bytearray(raw))
