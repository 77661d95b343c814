"""A chain client outlives its chain: after the chain stops and comes back on the same URL,
the same `Chain` object reconnects and works; while nothing answers it says so."""

from __future__ import annotations

import pytest
import websocket

from decentralml_jupyter.agents.base import _connection_lost
from decentralml_jupyter.chain import Chain, devchain
from decentralml_jupyter.errors import ChainNotReachable
from tests.conftest import free_port, wait_until


def test_a_client_reconnects_after_its_chain_restarts():
    port = free_port()
    devchain.up(port=port)
    try:
        chain = Chain(f"ws://127.0.0.1:{port}")
        chain.transfer("//Alice", "Bob", 10**12)
        devchain.down(port)
        with pytest.raises((OSError, websocket.WebSocketException)) as lost:
            chain.block_number()
        assert _connection_lost(lost.value)  # what the agents' loop reconnects on
        with pytest.raises(ChainNotReachable, match="still not reachable"):
            chain.reconnect()
        devchain.up(port=port)
        chain.reconnect()
        assert chain.block_number() >= 0
        receipt = chain.transfer("//Alice", "Bob", 10**12)  # signing works again
        assert receipt.success
        chain.close()
    finally:
        devchain.down(port)


def test_the_clock_keeps_ticking_across_a_chain_restart():
    import threading

    from decentralml_jupyter.agents import clock

    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    devchain.up(port=port)
    stop = threading.Event()
    ticker = threading.Thread(target=clock.run, args=(url, 0.2, stop), daemon=True)
    try:
        ticker.start()
        with Chain(url) as chain:
            wait_until(lambda: chain.block_number() >= 2, 60, "new blocks")
        devchain.down(port)
        devchain.up(port=port)  # a fresh chain at block 0: only the clock builds blocks
        with Chain(url) as chain:
            wait_until(lambda: chain.block_number() >= 2, 60, "new blocks")
        assert ticker.is_alive()
    finally:
        stop.set()
        ticker.join(30)
        devchain.down(port)
