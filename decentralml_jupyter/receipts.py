"""What a `Session` verb that writes returns: frozen receipts, one class per kind of result.

Each carries the chain's `Receipt` (block, extrinsic, success) and the ids the call created;
``to_json()`` gives the CLI's JSON for the verb (``../shared/CLI.md``), so every front end
renders the same document from the same object.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: importing this module stays cheap
    from .chain import Receipt
    from .protocol.values import PoolInfo, StakeInfo


def _json(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


@dataclass(frozen=True)
class _Result:
    def to_json(self) -> dict[str, Any]:
        return {f.name: _json(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class Sent(_Result):
    """A plain chain transaction (a transfer, a remark) and the fee it paid."""

    receipt: Receipt
    fee: int | None


@dataclass(frozen=True)
class ModelSubmitted(_Result):
    model_id: int
    architecture_cid: str
    weights_cid: str
    pool: str
    receipt: Receipt


@dataclass(frozen=True)
class ModelStarted(_Result):
    model_id: int
    receipt: Receipt


@dataclass(frozen=True)
class Staked(_Result):
    """A stake and the staker's stake on the model after it."""

    stake: StakeInfo | None
    receipt: Receipt


@dataclass(frozen=True)
class Unstaked(_Result):
    """An unstake and the account's stakes on the model after it (its unbonding included)."""

    stake: tuple[StakeInfo, ...]
    receipt: Receipt


@dataclass(frozen=True)
class Proposed(_Result):
    proposal_id: int
    receipt: Receipt


@dataclass(frozen=True)
class Done(_Result):
    """A call that creates nothing (a vote, a task decision)."""

    receipt: Receipt


@dataclass(frozen=True)
class TaskCreated(_Result):
    task_id: int
    receipt: Receipt


@dataclass(frozen=True)
class TaskAssigned(_Result):
    task_id: int
    receipt: Receipt


@dataclass(frozen=True)
class ResultSubmitted(_Result):
    submission_id: int
    receipt: Receipt


@dataclass(frozen=True)
class RoundsStarted(_Result):
    """A round started (``rounds`` 1), or the first of a plan of ``rounds`` back to back;
    with a bounty, the prediction market it opened."""

    round_id: int
    rounds: int
    receipt: Receipt
    market_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"round_id": self.round_id, "receipt": self.receipt.to_json()}
        if self.rounds > 1:
            out["rounds"] = self.rounds
        if self.market_id is not None:
            out["market_id"] = self.market_id
        return out


@dataclass(frozen=True)
class MarketCommitment(_Result):
    """A commitment to a hidden test set (``Session.commit_test_set``): its CID (computed
    locally: nothing uploaded), a random salt and ``commitment``, what ``round start
    --bounty`` publishes. Keep the salt and the file until the reveal; ``to_json`` leaves the
    CID and the salt out (what is printed is public)."""

    cid: str
    salt: str
    commitment: str
    test_set: str  # the file's path

    def to_json(self) -> dict[str, Any]:
        return {"commitment": self.commitment, "test_set": self.test_set}


@dataclass(frozen=True)
class PayoutApproved(_Result):
    payout_id: int | tuple[int, ...]
    receipt: Receipt


@dataclass(frozen=True)
class CallSent(_Result):
    """Any protocol call (`Session.send`): its name, the ids it created, the receipt."""

    call: str
    created: dict[str, int]
    receipt: Receipt


@dataclass(frozen=True)
class AccountBalance(_Result):
    """A named (dev) account and its balance."""

    name: str
    address: str
    free: int
    reserved: int


@dataclass(frozen=True)
class PoolHolding(_Result):
    """A model's pool as the protocol's books have it, beside what the chain says it holds
    (``on_chain``: the native balance; None for a pool in an Assets token)."""

    pool: PoolInfo
    on_chain: int | None

    def to_json(self) -> dict[str, Any]:
        row = self.pool.to_json()
        if self.on_chain is not None:
            row["on_chain"] = self.on_chain
        return row


@dataclass(frozen=True)
class PlanStep(_Result):
    """One ended round of a plan followed by `Session.watch_round`."""

    round_id: int
    status: str
    accuracy: float | None
    ended_block: int | None


@dataclass(frozen=True)
class Predicted(_Result):
    """The classes a global model predicts, and the CID of the weights that predicted them."""

    predictions: tuple[int, ...]
    cid: str


@dataclass(frozen=True)
class Fetched(_Result):
    """A global model saved to ``path``, and the CID of its weights."""

    path: str
    cid: str


__all__ = [
    "AccountBalance",
    "CallSent",
    "Done",
    "Fetched",
    "ModelStarted",
    "ModelSubmitted",
    "PayoutApproved",
    "PlanStep",
    "PoolHolding",
    "Predicted",
    "Proposed",
    "ResultSubmitted",
    "RoundsStarted",
    "Sent",
    "Staked",
    "TaskAssigned",
    "TaskCreated",
    "Unstaked",
]
