"""Exceptions raised by the protocol layer.

A rejected protocol call is not an exception (it is recorded in state); these are for misuse:
bytes that cannot be encoded or decoded, calls fed out of chain order, corrupt snapshots.
"""

from __future__ import annotations

from ..errors import DfmlError


class ProtocolError(DfmlError):
    """Base class of the protocol layer's errors."""


class CodecError(ProtocolError):
    """A call could not be encoded or decoded (bad prefix, version, index, value or size)."""

    hint = "check the call's fields against the schema in decentralml_jupyter.protocol.calls"


class OrderingError(ProtocolError):
    """Calls or ticks were fed to the state machine out of chain order."""

    hint = "feed every block's calls in order, then tick that block, then the next block"


class SnapshotError(ProtocolError):
    """A state snapshot could not be read (corrupt, or written by another format version)."""

    hint = "rebuild the state from the chain"
