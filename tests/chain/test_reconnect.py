"""A chain client outlives its chain: after the chain stops and comes back on the same URL,
the same `Chain` object reconnects and works; while nothing answers it says so."""

from __future__ import annotations

import pytest
import websocket

from decentralml_jupyter.agents.base import _connection_lost
from decentralml_jupyter.chain import Chain, devchain
from decentralml_jupyter.errors import ChainNotReachable
from tests.conftest import free_port


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
