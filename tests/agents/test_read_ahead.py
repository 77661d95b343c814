"""A validator reads a round's updates ahead of its checks (agents/validator._read_ahead): in
order, each load's error handed over at its turn (the rest still come), none ahead for a model
whose updates are big."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from decentralml_jupyter.agents.validator import READ_AHEAD_BYTES, _read_ahead
from decentralml_jupyter.errors import DfmlError


def test_updates_read_ahead_come_in_order_with_their_errors_in_place():
    threads = set()

    def load(cid: str):
        threads.add(threading.current_thread().name)
        if cid == "bad":
            raise DfmlError("unreadable")
        return cid.upper()

    pool = ThreadPoolExecutor(4)
    try:
        got = list(_read_ahead(["a", "b", "bad", "c", "d"], load, 3, lambda: pool))
        assert [v for v, _ in got] == ["A", "B", None, "C", "D"]
        assert isinstance(got[2][1], DfmlError) and [e for _, e in got].count(None) == 4
        assert any(t != threading.current_thread().name for t in threads)
    finally:
        pool.shutdown()
    threads.clear()
    assert list(_read_ahead(["x", "y"], load, 0, lambda: pool)) == [("X", None), ("Y", None)]
    assert threads == {threading.current_thread().name}  # none ahead: read in this thread
    assert READ_AHEAD_BYTES // (400 << 20) - 1 < 1  # a 100 M-parameter model's: none ahead


def test_a_one_block_update_is_read_from_the_root_block_the_check_fetched(storage_url):
    """The availability check reads each update's root block; an update of one block is
    then taken from it (not read again), within the model's size limit; a bigger one is
    read from storage as before (None)."""
    import numpy as np

    from decentralml_jupyter import fl
    from decentralml_jupyter.agents.validator import _one_block_file
    from decentralml_jupyter.storage import ArtifactTooLarge, KuboStore

    store = KuboStore(storage_url)
    small = fl.weights_to_bytes([np.ones((64, 32), np.float32), np.zeros(10, np.float32)])
    big = fl.weights_to_bytes([np.ones((300, 300), np.float32)])
    cid = store.put(small)
    assert _one_block_file(cid, store.block(cid), 1 << 20) == small
    assert _one_block_file(cid, None, 1 << 20) is None
    with pytest.raises(ArtifactTooLarge):
        _one_block_file(cid, store.block(cid), 100)
    many = store.put(big)
    assert _one_block_file(many, store.block(many), 1 << 20) is None
