"""The one exception hierarchy of the project.

Every error says what went wrong (``str(err)``) and what to do about it (``err.hint``); the CLI
prints both as ``{"error": ..., "hint": ...}``. Each class also says whose fault it is as an
HTTP status (``err.http_status``: 4xx the request's, 5xx the services'), which the server
extension answers with; subclasses inherit it unless they know better.

Every error class of the project is defined here; the modules that raise them import them from
here (``protocol.errors``, ``storage.store`` and ``fl.types`` re-export theirs for old imports).
"""

from __future__ import annotations


class DfmlError(Exception):
    """Base class: a message saying what was wrong, and a hint saying what to do."""

    hint: str = ""
    http_status: int = 500

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def to_json(self) -> dict[str, str]:
        return {"error": str(self), "hint": self.hint}


class UsageError(DfmlError):
    """Bad arguments from the user (CLI, magic or API call)."""

    hint = "check the arguments: dfml VERB --help"
    http_status = 400


class NotFound(UsageError):
    """The request names something that does not exist (a model, a round)."""

    hint = "list what exists: dfml model list / dfml round history MODEL"
    http_status = 404


class SetupError(DfmlError):
    """A tool the project needs (node, npm, a package) is missing or unusable."""


# -- chain ------------------------------------------------------------------------------------


class ChainError(DfmlError):
    """Anything to do with the chain."""


class ChainNotReachable(ChainError):
    """Nothing answers at the chain URL."""

    http_status = 503


class KeyLoadError(ChainError):
    """A key (dev URI, mnemonic, key file) could not be loaded or is not allowed here."""

    http_status = 400


class TransactionRejected(ChainError):
    """The chain refused the transaction before inclusion (bad signature, no funds, bad nonce)."""

    http_status = 409


class DispatchFailed(ChainError):
    """The transaction was included but its call failed; nothing it did was kept."""

    http_status = 409

    def __init__(self, message: str, receipt=None, hint: str | None = None):
        super().__init__(message, hint)
        self.receipt = receipt


# -- storage ----------------------------------------------------------------------------------

STORAGE_START_HINT = (
    "start the dev storage service with `dfml storage up`, or point --storage / "
    "DFML_STORAGE at a running Kubo RPC endpoint"
)


class StorageError(DfmlError):
    """Anything to do with content-addressed storage."""

    http_status = 503


class StorageUnavailable(StorageError):
    """Nothing answers at the storage URL."""

    hint = STORAGE_START_HINT


class StorageTimeout(StorageError):
    """The content was not found before the timeout (unknown CID, or no node provides it)."""

    hint = (
        "check the CID; if it is right, the node that holds it is offline or unreachable "
        "(raise the timeout with KuboStore(timeout=...) if the network is slow)"
    )
    http_status = 504


class IntegrityError(StorageError):
    """Bytes read from storage do not match their CID."""

    http_status = 502


class ArtifactTooLarge(StorageError):
    """The content is larger than the reader allows (``max_bytes``); nothing more is read."""

    hint = (
        "check that the CID is the one recorded for this artefact; if it is and it is "
        "legitimately this large, raise max_bytes"
    )
    http_status = 413

    def __init__(self, cid: str, size: int, limit: int, hint: str | None = None):
        super().__init__(f"{cid} holds {size} bytes, more than the {limit} allowed", hint)
        self.cid, self.size, self.limit = cid, size, limit


# -- protocol ---------------------------------------------------------------------------------


class ProtocolError(DfmlError):
    """A request the protocol's rules or state do not allow (a pool that may not take funds,
    a payout that is not owed), or misuse of the protocol layer."""

    http_status = 409


class ProtocolRejected(ProtocolError):
    """The transaction was included, but the protocol rejected the call (nothing changed)."""


class CodecError(ProtocolError):
    """A call could not be encoded or decoded (bad prefix, version, index, value or size)."""

    hint = "check the call's fields against the schema in decentralml_jupyter.protocol.calls"
    http_status = 400


class OrderingError(ProtocolError):
    """Calls or ticks were fed to the state machine out of chain order."""

    hint = "feed every block's calls in order, then tick that block, then the next block"
    http_status = 500


class SnapshotError(ProtocolError):
    """A state snapshot could not be read (corrupt, or written by another format version)."""

    hint = "rebuild the state from the chain"
    http_status = 500


# -- federated learning -----------------------------------------------------------------------


class DataMismatch(UsageError):
    """A participant's data does not fit the model's data contract (nothing was sent)."""

    hint = "fix the data (or choose the model it was made for); nothing was staked or sent"
    http_status = 422


class FlError(DfmlError):
    """Anything wrong in federated learning code: bad model, data or strategy arguments."""

    hint = "check the model, data and strategy arguments"
    http_status = 400


class UpdateRejected(FlError):
    """A client update failed the checks made before aggregation."""

    hint = "the update is not aggregated; the worker must retrain from the current global model"
    http_status = 422
