"""The protocol layer's exceptions, defined with every other in ``decentralml_jupyter.errors``.

A rejected protocol call is not an exception (it is recorded in state); these are for misuse:
bytes that cannot be encoded or decoded, calls fed out of chain order, corrupt snapshots.
"""

from __future__ import annotations

from ..errors import CodecError, OrderingError, ProtocolError, ProtocolRejected, SnapshotError

__all__ = ["CodecError", "OrderingError", "ProtocolError", "ProtocolRejected", "SnapshotError"]
