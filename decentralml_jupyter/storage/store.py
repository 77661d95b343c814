"""The ``Store`` interface every role uses, its value types and its errors.

A store maps bytes to CIDs and back; every read is verified against the CID it was asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

from decentralml_jupyter.errors import STORAGE_START_HINT as START_HINT  # noqa: F401
from decentralml_jupyter.errors import (  # noqa: F401 - defined there, importable from here
    ArtifactTooLarge,
    StorageError,
    StorageTimeout,
    StorageUnavailable,
)


@dataclass(frozen=True)
class Stored:
    """An artefact in storage: its CID and its size in bytes (``dfml storage put|get``)."""

    cid: str
    size: int

    def to_json(self) -> dict[str, object]:
        return {"cid": self.cid, "size": self.size}


@dataclass(frozen=True)
class ObjectStat:
    """What the root block of a stored file says (verified against the CID)."""

    cid: str
    size: int  # content bytes
    block_size: int  # bytes of the root block
    links: int  # children of the root block (0 for a single-block file)


Source = bytes | bytearray | memoryview | BinaryIO


@runtime_checkable
class Store(Protocol):
    """Content-addressed storage. CIDs follow Kubo's default import (see unixfs.py)."""

    def put(self, data: Source, *, pin: bool = True) -> str:
        """Store bytes or a binary stream (read to its end); return the CID."""
        ...

    def put_file(self, path: str | os.PathLike[str], *, pin: bool = True) -> Stored: ...

    def get(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        """The verified bytes of ``cid``; ArtifactTooLarge, before reading them, if there are
        more than ``max_bytes`` (None: no limit)."""
        ...

    def get_file(
        self, cid: str, path: str | os.PathLike[str], *, max_bytes: int | None = None
    ) -> Stored:
        """Stream ``cid`` into ``path``; the file appears only once all of it is verified."""
        ...

    def has(self, cid: str) -> bool: ...

    def stat(self, cid: str) -> ObjectStat: ...

    def pin(self, cid: str) -> None: ...

    def unpin(self, cid: str) -> None: ...
