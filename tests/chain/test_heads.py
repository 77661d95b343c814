"""The head subscription that wakes agents on each new block, against the real dev chain."""

from __future__ import annotations

import threading
import time

from decentralml_jupyter.chain.heads import HeadWatcher
from tests.conftest import free_port


def test_a_new_block_wakes_a_waiter_at_once(chain):
    watcher = HeadWatcher(chain.url)
    try:
        start = watcher.wait(after=-1, timeout=10)  # the current head arrives on subscribing
        assert start == chain.block_number()
        woke = {}

        def waiter():  # a timeout far longer than the test: only the push can wake it
            woke["number"] = watcher.wait(after=start, timeout=600)

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.3)
        assert t.is_alive()  # nothing new yet: still waiting
        chain.new_blocks(1)
        t.join(timeout=60)
        assert not t.is_alive(), "the new block did not wake the waiter"
        assert woke["number"] == start + 1
    finally:
        watcher.close()


def test_wake_releases_a_waiter_and_a_dead_url_only_times_out(chain):
    dead = HeadWatcher(f"ws://127.0.0.1:{free_port()}", reconnect=0.1)
    try:
        assert dead.wait(after=-1, timeout=0.5) == -1  # nothing to wake it: its timeout
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("n", dead.wait(after=-1, timeout=60)))
        t.start()
        time.sleep(0.2)
        dead.wake()
        t.join(timeout=5)
        assert not t.is_alive() and out["n"] == -1
    finally:
        dead.close()
    assert not dead._thread.is_alive()
