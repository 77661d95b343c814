"""Fixtures shared by the whole suite: a real dev chain, started once and always stopped."""

from __future__ import annotations

import socket

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def devchain_url():
    """A dev chain (Chopsticks, instant blocks, 4 extra funded accounts) for the session."""
    from decentralml_jupyter.chain import devchain

    port = free_port()
    info = devchain.up(port=port, accounts=4)
    try:
        yield info["url"]
    finally:
        devchain.down(port)


@pytest.fixture()
def chain(devchain_url):
    from decentralml_jupyter.chain import Chain

    c = Chain(devchain_url)
    try:
        yield c
    finally:
        c.close()
