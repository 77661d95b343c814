"""Content-addressed artefact storage: the ``Store`` interface, the Kubo RPC client, local CIDs.

Start the dev service with ``storage_up()``; reach any Kubo-compatible node with ``KuboStore``.
"""

from .cid import CID
from .client import DEFAULT_URL, KuboStore
from .service import storage_down, storage_status, storage_up
from .store import (
    ArtifactTooLarge,
    ObjectStat,
    StorageTimeout,
    StorageUnavailable,
    Store,
    Stored,
)
from .unixfs import CHUNK_SIZE, IMPORT_OPTIONS, compute_cid

__all__ = [
    "ArtifactTooLarge",
    "CHUNK_SIZE",
    "CID",
    "DEFAULT_URL",
    "IMPORT_OPTIONS",
    "KuboStore",
    "ObjectStat",
    "StorageTimeout",
    "StorageUnavailable",
    "Store",
    "Stored",
    "compute_cid",
    "storage_down",
    "storage_status",
    "storage_up",
]
