"""Weights serialization: exact round trip and deterministic bytes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from decentralml_jupyter.fl import FlError, weights_from_bytes, weights_hash, weights_to_bytes


def test_round_trip_keeps_dtypes_shapes_values():
    rng = np.random.default_rng(1)
    weights = [
        rng.normal(size=(3, 5)).astype(np.float32),
        rng.normal(size=(7,)),  # float64
        rng.integers(-5, 5, size=(2, 2, 2)).astype(np.int32),
        np.float16(1.5) * np.ones((4,), np.float16),
        np.array(2.5, dtype=np.float32),  # 0-d
        np.zeros((0, 3), np.float32),
    ]
    back = weights_from_bytes(weights_to_bytes(weights))
    assert len(back) == len(weights)
    for a, b in zip(weights, back, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_same_weights_same_bytes_regardless_of_memory_layout():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    fortran = np.asfortranarray(a)
    big_endian = a.astype(">f4")
    ref = weights_to_bytes([a])
    assert weights_to_bytes([fortran]) == ref
    assert weights_to_bytes([big_endian]) == ref
    assert weights_hash([a]) == hashlib.sha256(ref).hexdigest()


def test_bytes_stable_over_repeated_calls():
    # Guards against hash-map ordering in the safetensors header (randomised per call).
    rng = np.random.default_rng(2)
    weights = [rng.normal(size=(4, 3)).astype(np.float32), np.arange(5)]
    assert len({weights_to_bytes(weights) for _ in range(30)}) == 1


def test_different_weights_different_bytes():
    a = np.zeros((2, 2), np.float32)
    b = a.copy()
    b[1, 1] = np.float32(1e-30)
    assert weights_to_bytes([a]) != weights_to_bytes([b])
    # Same values, other dtype: not the same weights.
    assert weights_to_bytes([a]) != weights_to_bytes([a.astype(np.float64)])


def test_order_of_many_tensors_is_kept():
    weights = [np.full((1,), i, np.int64) for i in range(25)]
    back = weights_from_bytes(weights_to_bytes(weights))
    assert [int(w[0]) for w in back] == list(range(25))


def test_garbage_bytes_raise_fl_error():
    with pytest.raises(FlError) as info:
        weights_from_bytes(b"not safetensors at all")
    assert info.value.hint
