"""Artefact helpers: exact dtypes and shapes, deterministic bytes (one CID), kind checks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from decentralml_jupyter.errors import StorageError, UsageError
from decentralml_jupyter.storage import compute_cid
from decentralml_jupyter.storage.artifacts import (
    decode_tensors,
    encode_tensors,
    get_aggregate,
    get_model_spec,
    get_task_result,
    get_update,
    get_weights,
    put_aggregate,
    put_model_spec,
    put_task_result,
    put_update,
    put_weights,
)

TENSORS = {
    "dense/kernel": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "dense/bias": np.array([1e-8, -0.0, np.inf], dtype=np.float64),
    "half": np.array([[0.1, 65504.0]], dtype=np.float16),
    "steps": np.array(7, dtype=np.int64),  # a 0-d scalar
    "mask": np.array([True, False]),
    "bytes": np.array([0, 255], dtype=np.uint8),
    "big": np.array([2**64 - 1], dtype=np.uint64),
    "empty": np.zeros((0, 3), dtype=np.int8),
}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k  # bit-exact, -0.0 and inf included


def test_weights_round_trip_exactly(store) -> None:
    cid = put_weights(store, TENSORS, {"model_id": 3, "round": 0})
    got = get_weights(store, cid)
    assert_same(TENSORS, got.tensors)
    assert got.meta == {"model_id": 3, "round": 0} and got.kind == "weights"
    assert all(a.flags.writeable for a in got.tensors.values())


def test_a_list_of_arrays_comes_back_in_order(store) -> None:
    arrays = [np.ones((2, 2), np.float32), np.zeros(3, np.float32), np.arange(11)]
    got = get_weights(store, put_weights(store, arrays))
    assert got.is_list
    assert [a.tolist() for a in got.as_list()] == [a.tolist() for a in arrays]


def test_big_endian_input_keeps_values() -> None:
    be = np.array([1.5, -2.25], dtype=">f8")
    got = decode_tensors(encode_tensors({"w": be})).tensors["w"]
    assert got.dtype == np.float64 and got.tolist() == [1.5, -2.25]


def test_equal_content_gives_equal_bytes_whatever_the_order() -> None:
    a = encode_tensors(TENSORS, "aggregate", {"round": 4, "contributors": ["x", "y"]})
    reordered = dict(reversed(list(TENSORS.items())))
    b = encode_tensors(reordered, "aggregate", {"contributors": ["x", "y"], "round": 4})
    assert a == b


def test_bytes_are_equal_across_processes() -> None:
    # safetensors writes several metadata entries in a per-process random order; we keep one.
    code = (
        "import sys, numpy as np;"
        "from decentralml_jupyter.storage.artifacts import encode_tensors;"
        "d = encode_tensors({'w': np.arange(4.0)}, 'update', {f'k{i}': i for i in range(8)});"
        "sys.stdout.write(d.hex())"
    )
    runs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
        for _ in range(3)
    }
    assert len(runs) == 1 and runs != {""}


def test_updates_and_aggregates_are_distinct_kinds(store) -> None:
    meta = {"model_id": 1, "round": 2, "base_cid": compute_cid(b"base"), "num_examples": 50}
    ucid = put_update(store, {"d": np.ones(3, np.float32)}, meta)
    acid = put_aggregate(store, {"d": np.ones(3, np.float32)}, {"round": 2})
    assert get_update(store, ucid).meta == meta
    assert get_aggregate(store, acid).kind == "aggregate"
    assert ucid != acid
    with pytest.raises(StorageError, match="not a aggregate"):
        get_aggregate(store, ucid)
    with pytest.raises(StorageError, match="not a dfml tensor artefact"):
        get_weights(store, store.put(b"some other bytes"))


def test_model_spec_and_task_result_round_trip(store) -> None:
    spec = {"class_name": "Sequential", "config": {"layers": [{"units": 10}]}, "name": "é"}
    cid = put_model_spec(store, spec)
    assert get_model_spec(store, cid) == spec
    assert (
        put_model_spec(
            store,
            '{"name": "\\u00e9", "config": {"layers": [{"units": 10}]},'
            ' "class_name": "Sequential"}',
        )
        == cid
    )  # canonical JSON
    result = {"task_id": 9, "labels": [0, 1, 1], "artefact": cid}
    assert get_task_result(store, put_task_result(store, result)) == result
    with pytest.raises(StorageError, match="not a task_result"):
        get_task_result(store, cid)


def test_unstorable_values_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        encode_tensors({"o": np.array([object()])})
    with pytest.raises(UsageError):
        encode_tensors({"w": np.ones(1)}, kind="gradient")
    from decentralml_jupyter.storage.artifacts import canonical_json

    with pytest.raises(UsageError):
        canonical_json({"loss": float("nan")})
