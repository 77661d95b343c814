"""The one exception hierarchy of the project.

Every error says what went wrong (``str(err)``) and what to do about it (``err.hint``); the CLI
prints both as ``{"error": ..., "hint": ...}``.
"""

from __future__ import annotations


class DfmlError(Exception):
    """Base class: a message saying what was wrong, and a hint saying what to do."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def to_json(self) -> dict[str, str]:
        return {"error": str(self), "hint": self.hint}


class UsageError(DfmlError):
    """Bad arguments from the user (CLI, magic or API call)."""

    hint = "check the arguments: dfml VERB --help"


class NotFound(UsageError):
    """The request names something that does not exist (a model, a round): HTTP 404."""

    hint = "list what exists: dfml model list / dfml round history MODEL"


class SetupError(DfmlError):
    """A tool the project needs (node, npm, a package) is missing or unusable."""


class ChainError(DfmlError):
    """Anything to do with the chain."""


class ChainNotReachable(ChainError):
    """Nothing answers at the chain URL."""


class KeyLoadError(ChainError):
    """A key (dev URI, mnemonic, key file) could not be loaded or is not allowed here."""


class TransactionRejected(ChainError):
    """The chain refused the transaction before inclusion (bad signature, no funds, bad nonce)."""


class DispatchFailed(ChainError):
    """The transaction was included but its call failed; nothing it did was kept."""

    def __init__(self, message: str, receipt=None, hint: str | None = None):
        super().__init__(message, hint)
        self.receipt = receipt


class StorageError(DfmlError):
    """Anything to do with content-addressed storage."""


class IntegrityError(StorageError):
    """Bytes read from storage do not match their CID."""
