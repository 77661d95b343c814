"""``State``: the DecentralML "pallet", a deterministic state machine folded over protocol
remarks. It combines the domain mixins, routes each decoded call to its handler through one
table (``_HANDLERS``) and runs the end-of-block ``tick``.

Feed each block's remarks in chain order with ``State.apply``, then ``State.tick`` the block.
Invalid calls change nothing and are logged; ``state_hash`` is identical for identical inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import calls as C
from ..errors import CodecError, OrderingError
from ..values import CallContext, Outcome
from .governance import GovernanceHandlers
from .markets import MarketHandlers
from .models import ModelHandlers
from .payouts import Books
from .queries import Queries
from .records import _Reject
from .rounds import RoundHandlers
from .snapshot import Snapshots
from .stakes import StakeHandlers
from .tasks import TaskHandlers

# what a handler returns: the (entity, id) the call created, if any
Created = tuple[str, int] | None

# Each handler checks everything first (raising _Reject) and only then mutates.
_HANDLERS: dict[type[C.Call], Callable[[Any, CallContext, Any], Created]] = {
    C.RegisterModel: ModelHandlers._register_model,
    C.StartTraining: ModelHandlers._start_training,
    C.Stake: StakeHandlers._stake,
    C.Unstake: StakeHandlers._unstake,
    C.CreateTask: TaskHandlers._create_task,
    C.AssignTask: TaskHandlers._assign_task,
    C.SubmitResult: TaskHandlers._submit_result,
    C.AcceptSubmission: TaskHandlers._accept_submission,
    C.RejectSubmission: TaskHandlers._reject_submission,
    C.Propose: GovernanceHandlers._propose,
    C.Vote: GovernanceHandlers._vote,
    C.SettlePayout: Books._settle_payout,
    C.StartRound: RoundHandlers._start_round,
    C.StartRounds: RoundHandlers._start_rounds,
    C.SubmitUpdate: RoundHandlers._submit_update,
    C.SubmitUpdates: RoundHandlers._submit_updates,
    C.DelegateUpdates: RoundHandlers._delegate_updates,
    C.Attest: RoundHandlers._attest,
    C.AttestMetric: RoundHandlers._attest,
    C.AnnounceKey: RoundHandlers._announce_key,
    C.RevealSeeds: RoundHandlers._reveal_seeds,
    C.TablePart: RoundHandlers._table_part,
    C.RevealTestSet: MarketHandlers._reveal_test_set,
    C.AttestMarket: MarketHandlers._attest_market,
}


def _guess_call_name(remark: bytes) -> str | None:
    """The call a malformed remark meant, when its header is readable (for the error log)."""
    head = len(C.PREFIX) + 1
    if len(remark) > head and C.is_protocol_remark(remark) and remark[head - 1] == C.VERSION:
        cls = C.CALL.by_index.get(remark[head])
        return cls.NAME if cls else None  # type: ignore[attr-defined]
    return None


class State(GovernanceHandlers, MarketHandlers, StakeHandlers, TaskHandlers, Queries, Snapshots):
    """The protocol state. Not thread-safe; one writer (the indexer) at a time."""

    def apply(self, ctx: CallContext, remark: bytes | str) -> Outcome:
        """Apply one protocol remark (bytes, or 0x-hex as RPC returns it).

        Rejected calls change nothing but the error log. Raises OrderingError when ``ctx`` is
        in a block already ticked (an indexer bug, not a protocol rejection).
        """
        if isinstance(remark, str):
            try:
                remark = bytes.fromhex(remark.removeprefix("0x"))
            except ValueError:
                remark = remark.encode()  # not hex: its text cannot carry the binary prefix
        if ctx.block_number <= self._last_block:
            raise OrderingError(
                f"call in block {ctx.block_number} after block {self._last_block} was ticked"
            )
        where = (ctx.block_number, ctx.extrinsic_index)
        if self._open_extrinsic != where:
            self._open_extrinsic, self._protocol_call_seen = where, False
            self._debited.clear()
            self._table_parts.clear()  # a table's parts live only in their extrinsic
        self._protocol_call_seen = True
        try:
            call = C.decode_call(remark)
        except CodecError as e:
            return self._reject(ctx, _guess_call_name(remark), f"malformed call: {e}")
        try:
            created = _HANDLERS[type(call)](self, ctx, call)
        except _Reject as e:
            return self._reject(ctx, call.NAME, e.reason)
        entity, entity_id = created if created else (None, None)
        return Outcome(True, call.NAME, None, entity, entity_id)

    def tick(self, block_number: int, block_hash: str = "") -> None:
        """End of a block: tally proposals, advance round deadlines, close expired tasks,
        release unbonded stakes."""
        if block_number <= self._last_block:
            raise OrderingError(f"tick {block_number} after tick {self._last_block}")
        b = block_number
        self._tally_due(b, block_hash)
        self._advance_rounds(b, block_hash)
        self._advance_markets(b)
        self._close_reviewed_tasks(b)
        self._release_unbonded(b)
        # consumed keys carry their block number, so older ones can never match again
        self._consumed.clear()
        self._last_block = b
        self._last_hash = block_hash

    def _reject(self, ctx: CallContext, call: str | None, reason: str) -> Outcome:
        self._errors.append(
            {
                "block_number": ctx.block_number,
                "extrinsic_index": ctx.extrinsic_index,
                "batch_index": ctx.batch_index,
                "account": ctx.signer,
                "call": call or "unknown",
                "reason": reason,
            }
        )
        return Outcome(False, call, reason)
