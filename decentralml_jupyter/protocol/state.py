"""The DecentralML "pallet": a deterministic state machine folded over protocol remarks.

Feed each block's remarks in chain order with ``State.apply``, then ``State.tick`` the block.
Invalid calls change nothing and are logged; ``state_hash`` is identical for identical inputs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from hashlib import blake2b
from typing import Any

from . import calls as C
from .accounts import account_id, pool_address, pool_threshold
from .errors import CodecError, OrderingError, SnapshotError
from .scale import Reader
from .values import (
    AssignmentInfo,
    AttestationInfo,
    CallContext,
    ErrorRecord,
    ModelInfo,
    Outcome,
    Payout,
    PoolInfo,
    ProposalInfo,
    ProtocolParams,
    RewardInfo,
    RoundInfo,
    SlashInfo,
    StakeInfo,
    SubmissionInfo,
    TaskInfo,
    Transfer,
    UpdateInfo,
)

FORMAT = 2  # 2: books per asset, pools' signatories, losses
_NATIVE = -1  # the asset key of the native token in the books
# fewer validators than this would make a model's pool one person's account: no funds go in
MIN_POOL_SIGNATORIES = 2
# what governance may set each protocol parameter to (none unbounded: a lock of 2^32 blocks
# would freeze every unstake, a one-block vote would let a minority capture a pool)
PARAM_BOUNDS: dict[str, tuple[int, int]] = {
    "unstake_lock_blocks": (1, 100_800),
    "quorum_permill": (100_000, 1_000_000),
    "threshold_permill": (500_000, 999_999),
    "min_voting_blocks": (10, 100_800),
    "max_voting_blocks": (10, 201_600),
    "task_review_blocks": (1, 100_800),
    "round_submit_blocks": (1, 14_400),
    "round_aggregate_blocks": (1, 14_400),
    "critical_quorum_permill": (334_000, 1_000_000),
}
_ID_KINDS = (
    "model",
    "task",
    "submission",
    "proposal",
    "payout",
    "unbonding",
    "round",
    "update",
    "attestation",
    "reward",
    "slash",
)
_ACTIVE_ASSIGNMENT = ("assigned", "submitted", "accepted")
_LIVE_ROUND = ("open", "aggregating")
_SEED_TAG = b"dfml/round-selection"


class _Reject(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise _Reject(reason)


def _asset_name(asset: int | None) -> str:
    return "native" if asset is None else f"asset {asset}"


def _akey(asset: int | None) -> int:
    return _NATIVE if asset is None else asset


def _asset(key: int) -> int | None:
    return None if key == _NATIVE else key


# Internal records: mutable, JSON-native fields only, so a snapshot is dataclasses.asdict.
@dataclass
class _Model:
    id: int
    owner: str
    name: str
    description: str
    architecture_cid: str
    weights_cid: str
    metric: str
    licence: str
    jurisdictions: list[str]
    strategy: str
    reward_policy: dict[str, Any]
    stake_asset: int | None
    validators: list[str]  # sorted by account id bytes
    eligibility: dict[str, Any]
    status: str
    global_cid: str
    round: int
    created_block: int
    created_extrinsic: int

    @property
    def pool(self) -> str:
        return _pool(self.owner, tuple(self.validators))


@dataclass
class _Task:
    id: int
    model_id: int
    creator: str
    role: str
    reward: int
    max_assignments: int
    validation: str
    description: str
    asset: int | None
    expires_at: int
    review_until: int
    escrow: int
    status: str
    assignments: list[dict[str, Any]]  # {"account", "status", "submission_id"}
    created_block: int
    created_extrinsic: int


@dataclass
class _Submission:
    id: int
    task_id: int
    worker: str
    result_cid: str
    status: str
    reason: str
    block_number: int
    extrinsic_index: int


@dataclass
class _Proposal:
    id: int
    proposer: str
    target: int | None
    action_hex: str
    deadline: int
    status: str
    votes: dict[str, bool]
    ayes: int
    nays: int
    note: str
    created_block: int
    created_extrinsic: int
    escrow: int = 0  # a StartRound proposal's reward budget, held until the tally

    @property
    def action(self) -> C.Action:
        return C.ACTION.decode(Reader(bytes.fromhex(self.action_hex)))  # type: ignore[return-value]


@dataclass
class _Unbonding:
    id: int
    account: str
    model_id: int
    amount: int
    asset: int | None
    unlock_at: int


@dataclass
class _Payout:
    id: int
    model_id: int
    pool: str
    dest: str
    amount: int
    asset: int | None
    reason: str
    created_block: int
    status: str
    paid_block: int | None


@dataclass
class _Round:
    id: int
    model_id: int
    starter: str  # who funded it: the owner, or the StartRound proposal's proposer
    proposal_id: int | None
    spec: dict[str, Any]  # RoundSpec.to_json() without "type", with defaults resolved
    base_cid: str  # the global model the clients train from
    seed: str
    eligible: int
    selected: list[str]  # in selection order
    start_block: int
    submit_deadline: int  # first block in which updates are no longer accepted
    aggregate_deadline: int  # first block in which attestations are no longer accepted
    status: str  # open, aggregating, finalized, failed
    escrow: int  # reward budget not yet paid out or refunded
    aggregate_cid: str | None
    metrics: dict[str, int] | None  # {"accuracy_ppm", "loss_ppm"} once finalized
    digest: str | None
    number: int | None  # the model's round number it produced, once finalized
    note: str
    ended_block: int | None
    created_block: int
    created_extrinsic: int  # -1 when started by a proposal in a tick
    follow: int = 0  # rounds of a StartRounds plan still to open after this one
    reserve: int = 0  # their reward budget, held in the pool meanwhile


@dataclass
class _Update:
    id: int
    round_id: int
    worker: str
    cid: str
    num_examples: int
    status: str  # submitted, accepted, rejected
    contribution: int | None
    reason: str
    block_number: int
    extrinsic_index: int


@dataclass
class _Attestation:
    id: int
    round_id: int
    validator: str
    digest: str
    aggregate_cid: str
    accuracy_ppm: int
    loss_ppm: int
    accepted: list[list[Any]]  # [account, score]
    rejected: list[list[Any]]  # [account, reason]
    block_number: int
    extrinsic_index: int


@dataclass
class _Reward:
    id: int
    round_id: int
    model_id: int
    account: str
    amount: int
    contribution: int
    payout_id: int | None


@dataclass
class _Slash:
    id: int
    round_id: int
    model_id: int
    account: str
    amount: int
    stake_before: int
    slash_permill: int
    reason: str
    block_number: int


@lru_cache(maxsize=1024)
def _pool(owner: str, validators: tuple[str, ...]) -> str:
    return pool_address(owner, validators)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _param_problem(name: str, value: int, params: dict[str, int]) -> str | None:
    """Why ``name = value`` would be an invalid parameter set, or None."""
    lo, hi = PARAM_BOUNDS[name]
    if not lo <= value <= hi:
        return f"{name} must be in {lo}..{hi}"
    if name == "min_voting_blocks" and value > params["max_voting_blocks"]:
        return "min_voting_blocks must be at most max_voting_blocks"
    if name == "max_voting_blocks" and value < params["min_voting_blocks"]:
        return "max_voting_blocks must be at least min_voting_blocks"
    if name == "critical_quorum_permill" and value < params["quorum_permill"]:
        return "critical_quorum_permill must be at least quorum_permill"
    if name == "quorum_permill" and value > params["critical_quorum_permill"]:
        return "quorum_permill must be at most critical_quorum_permill"
    return None


class State:
    """The protocol state. Not thread-safe; one writer (the indexer) at a time."""

    def __init__(self, params: ProtocolParams | None = None):
        self._params: dict[str, int] = dataclasses.asdict(params or ProtocolParams())
        self._last_block = -1
        self._last_hash = ""
        self._next: dict[str, int] = dict.fromkeys(_ID_KINDS, 1)
        self._models: dict[int, _Model] = {}
        self._tasks: dict[int, _Task] = {}
        self._submissions: dict[int, _Submission] = {}
        self._proposals: dict[int, _Proposal] = {}
        self._unbonding: dict[int, _Unbonding] = {}
        self._payouts: dict[int, _Payout] = {}
        self._rounds: dict[int, _Round] = {}
        self._updates: dict[int, _Update] = {}
        self._attestations: dict[int, _Attestation] = {}
        self._rewards: dict[int, _Reward] = {}
        self._slashes: dict[int, _Slash] = {}
        self._stakes: dict[tuple[str, int], int] = {}  # (account, model) -> active stake
        # (model, pool address, asset key) -> funds the chain moved there for the model
        self._held: dict[tuple[int, str, int], int] = {}
        # every multisig pool a model ever had: address -> {"signatories", "threshold", "models"}
        self._pools: dict[str, dict[str, Any]] = {}
        # value that left a pool outside the protocol's payouts (a dishonest quorum, dust)
        self._losses: list[dict[str, Any]] = []
        # transfers already backing a call: (block, extrinsic, position, src, dst, amount, asset)
        self._consumed: set[tuple[Any, ...]] = set()
        # transfers out of a pool that a settled payout accounted for, in the open extrinsic
        self._debited: set[tuple[Any, ...]] = set()
        self._open_extrinsic: tuple[int, int] | None = None
        self._protocol_call_seen = False
        self._errors: list[dict[str, Any]] = []
        self._keys: dict[str, str] = {}  # account -> announced X25519 public key (0x-hex)

    # ----------------------------------------------------------------- feeding the machine
    @property
    def last_block(self) -> int:
        """The last block ticked (-1 before the first)."""
        return self._last_block

    @property
    def last_block_hash(self) -> str:
        return self._last_hash

    @property
    def params(self) -> ProtocolParams:
        return ProtocolParams(**self._params)

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
        self._protocol_call_seen = True
        try:
            call = C.decode_call(remark)
        except CodecError as e:
            return self._reject(ctx, _guess_call_name(remark), f"malformed call: {e}")
        try:
            created = self._HANDLERS[type(call)](self, ctx, call)
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
        for p in sorted(self._proposals.values(), key=lambda p: p.id):
            if p.status == "open" and p.deadline <= b:
                self._tally(p, b, block_hash)
        for r in sorted(self._rounds.values(), key=lambda r: r.id):
            self._round_deadlines(r, b, block_hash)
        for t in sorted(self._tasks.values(), key=lambda t: t.id):
            if t.status == "open" and t.review_until <= b:
                self._close_task(t, b)
        for u in sorted(self._unbonding.values(), key=lambda u: u.id):
            if u.unlock_at <= b:
                del self._unbonding[u.id]
                self._new_payout(u.model_id, u.account, u.amount, "unstake", b)
        # consumed keys carry their block number, so older ones can never match again
        self._consumed.clear()
        self._last_block = b
        self._last_hash = block_hash

    def close_extrinsic(
        self,
        block_number: int,
        extrinsic_index: int,
        transfers: tuple[Transfer, ...] = (),
        losses: tuple[tuple[str, int, int | None], ...] = (),
    ) -> None:
        """Account for what the chain moved in one extrinsic beyond the calls it carried.

        ``transfers`` are the extrinsic's executed transfers (from its events, in order: the
        same tuple every call of the extrinsic was given), ``losses`` what left an account
        otherwise (dust, burns) as (account, amount, asset). Call after the extrinsic's last
        ``apply`` (or alone, for an extrinsic without protocol calls). Value that reached a
        pool in an extrinsic with protocol calls and backs no accepted call is owed back to
        its sender (a ``refund`` payout); value that left a pool other than by a settled
        payout is debited from the books and recorded in ``losses()``, so the books never
        count more than the chain holds.
        """
        if block_number <= self._last_block:
            raise OrderingError(f"extrinsic in block {block_number} after it was ticked")
        same = self._open_extrinsic == (block_number, extrinsic_index)
        protocol = same and self._protocol_call_seen
        debited = self._debited if same else set()
        for i, t in enumerate(transfers):
            if t.source == t.dest:
                continue
            key = _transfer_key(block_number, extrinsic_index, i, t)
            if t.source in self._pools and key not in debited:
                self._lose(t.source, t.amount, t.asset_id, block_number, f"transfer to {t.dest}")
            if t.dest in self._pools and protocol and key not in self._consumed:
                self._refund(t, block_number)
        for account, amount, asset in losses:
            if account in self._pools and amount > 0:
                self._lose(account, amount, asset, block_number, "removed by the chain")
        self._open_extrinsic, self._protocol_call_seen = None, False
        self._debited.clear()

    def _lose(self, pool: str, amount: int, asset: int | None, block: int, what: str) -> None:
        """Debit value the chain took out of ``pool`` outside the protocol's payouts, from the
        models booked there in id order: what the books count never exceeds the chain."""
        left = amount
        for key in sorted(k for k in self._held if k[1] == pool and k[2] == _akey(asset)):
            take = min(left, self._held[key])
            self._credit(key[0], pool, -take, asset)
            left -= take
        self._losses.append(
            {"block_number": block, "pool": pool, "amount": amount, "asset": asset, "note": what}
        )
        # a migration out of this pool can no longer be paid in full: derive it again from
        # what the books still hold there, so the rest of the pool does not stay stuck
        stale = [
            p
            for p in self._payouts.values()
            if p.status == "pending" and p.reason == "migrate" and p.pool == pool
        ]
        for p in stale:
            p.status = "void"
        for model_id in sorted({p.model_id for p in stale}):
            self._sweep(model_id, block)

    def _refund(self, t: Transfer, block: int) -> None:
        """Owe ``t`` back to its sender from the pool it paid into."""
        info = self._pools[t.dest]
        current = [m.id for _, m in sorted(self._models.items()) if m.pool == t.dest]
        same_asset = [i for i in current if self._models[i].stake_asset == t.asset_id]
        model_id = (same_asset or current or sorted(info["models"]))[0]
        self._credit(model_id, t.dest, t.amount, t.asset_id)
        self._new_payout(
            model_id, t.source, t.amount, "refund", block, pool=t.dest, asset=t.asset_id
        )

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

    # ----------------------------------------------------------------- helpers
    def _model(self, model_id: int) -> _Model:
        m = self._models.get(model_id)
        _require(m is not None, f"unknown model {model_id}")
        return m  # type: ignore[return-value]

    def _live_model(self, model_id: int) -> _Model:
        m = self._model(model_id)
        _require(m.status != "retired", f"model {model_id} is retired")
        return m

    def _take_id(self, kind: str) -> int:
        n = self._next[kind]
        self._next[kind] = n + 1
        return n

    def _find_transfer(
        self, ctx: CallContext, source: str, dest: str, amount: int, asset: int | None
    ) -> tuple[Any, ...]:
        """The unused transfer in ``ctx`` backing a call, or a rejection saying what is wrong."""
        near = []
        for i, t in enumerate(ctx.transfers):
            key = _transfer_key(ctx.block_number, ctx.extrinsic_index, i, t)
            if key in self._consumed or t.source == t.dest:  # a self-transfer moves nothing
                continue
            if (t.source, t.dest, t.amount, t.asset_id) == (source, dest, amount, asset):
                return key
            if t.source == source:
                near.append(f"{t.amount} {_asset_name(t.asset_id)} to {t.dest}")
        what = f"{amount} {_asset_name(asset)} from {source} to {dest}"
        seen = f" (found: {'; '.join(near)})" if near else ""
        raise _Reject(f"no unused transfer of {what} in the same batch{seen}")

    def _custodial(self, m: _Model) -> None:
        """Refuse funds for a model whose pool one person would hold."""
        _require(
            len(m.validators) >= MIN_POOL_SIGNATORIES,
            f"model {m.id} has {len(m.validators)} validator(s): its pool would be one "
            f"person's account, so it takes no funds until it has {MIN_POOL_SIGNATORIES} "
            "(a multisig nobody controls alone)",
        )

    def _record_pool(self, m: _Model) -> None:
        """Remember who signs for the model's pool, for as long as it may hold anything."""
        if len(m.validators) < MIN_POOL_SIGNATORIES:
            return
        info = self._pools.setdefault(
            m.pool,
            {
                "signatories": list(m.validators),
                "threshold": pool_threshold(len(m.validators)),
                "models": [],
            },
        )
        if m.id not in info["models"]:
            info["models"].append(m.id)
            info["models"].sort()

    def _credit(self, model_id: int, pool: str, amount: int, asset: int | None = ...) -> None:
        if asset is ...:
            asset = self._models[model_id].stake_asset
        key = (model_id, pool, _akey(asset))  # type: ignore[arg-type]
        value = self._held.get(key, 0) + amount
        if value:
            self._held[key] = value
        else:  # absent and zero must serialize the same
            self._held.pop(key, None)

    def _new_payout(
        self,
        model_id: int,
        dest: str,
        amount: int,
        reason: str,
        block: int,
        pool: str = "",
        asset: int | None = ...,  # type: ignore[assignment]
    ) -> int | None:
        if amount <= 0:
            return None
        m = self._models[model_id]
        pid = self._take_id("payout")
        self._payouts[pid] = _Payout(
            pid,
            model_id,
            pool or m.pool,
            dest,
            amount,
            m.stake_asset if asset is ... else asset,
            reason,
            block,
            "pending",
            None,
        )
        return pid

    def _sweep(self, model_id: int, block: int) -> None:
        """Move what earlier pools of a model hold, beyond their pending payouts, to its pool."""
        current = self._models[model_id].pool
        owed: dict[tuple[str, int], int] = {}
        for p in self._payouts.values():
            if p.model_id == model_id and p.status == "pending":
                k = (p.pool, _akey(p.asset))
                owed[k] = owed.get(k, 0) + p.amount
        for (mid, pool, a), held in sorted(self._held.items()):
            if mid == model_id and pool != current:
                self._new_payout(
                    model_id, current, held - owed.get((pool, a), 0), "migrate", block, pool,
                    _asset(a),
                )  # fmt: skip

    def _weight(self, account: str, target: int | None) -> int:
        if target is not None:
            return self._stakes.get((account, target), 0)
        return sum(
            v
            for (a, m), v in self._stakes.items()
            if a == account and self._models[m].stake_asset is None
        )

    def _total_weight(self, target: int | None) -> int:
        if target is not None:
            return sum(v for (_, m), v in self._stakes.items() if m == target)
        return sum(v for (_, m), v in self._stakes.items() if self._models[m].stake_asset is None)

    def _eligible(self, m: _Model, account: str) -> str | None:
        e = m.eligibility
        if e["type"] == "allow_list" and account not in e["accounts"]:
            return f"{account} is not on model {m.id}'s allow-list"
        if e["type"] == "min_stake" and self._stakes.get((account, m.id), 0) < e["amount"]:
            return f"model {m.id} requires a stake of at least {e['amount']} to work on it"
        return None

    # ----------------------------------------------------------------- call handlers
    # Each handler checks everything first (raising _Reject) and only then mutates.
    def _register_model(self, ctx: CallContext, c: C.RegisterModel) -> tuple[str, int]:
        mid = self._take_id("model")
        policy = c.reward_policy.to_json()
        del policy["type"]
        self._models[mid] = _Model(
            id=mid,
            owner=ctx.signer,
            name=c.name,
            description=c.description,
            architecture_cid=c.architecture_cid,
            weights_cid=c.weights_cid,
            metric=c.metric,
            licence=c.licence,
            jurisdictions=list(c.jurisdictions),
            strategy=c.strategy,
            reward_policy=policy,
            stake_asset=c.stake_asset,
            validators=sorted(c.validators, key=account_id),
            eligibility={"type": "anyone"},
            status="proposed",
            global_cid=c.weights_cid,
            round=0,
            created_block=ctx.block_number,
            created_extrinsic=ctx.extrinsic_index,
        )
        self._record_pool(self._models[mid])
        return ("model", mid)

    def _start_training(self, ctx: CallContext, c: C.StartTraining) -> None:
        m = self._model(c.model_id)
        _require(ctx.signer == m.owner, f"only the owner of model {m.id} can start training")
        _require(m.status == "approved", f"model {m.id} is {m.status}, not approved")
        _require(
            len(m.validators) >= MIN_POOL_SIGNATORIES,
            f"model {m.id} has {len(m.validators)} validator(s); training needs "
            f"{MIN_POOL_SIGNATORIES} (its pool must be a multisig)",
        )
        m.status = "training"

    def _stake(self, ctx: CallContext, c: C.Stake) -> None:
        m = self._live_model(c.model_id)
        _require(c.amount > 0, "stake amount must be positive")
        _require(
            c.asset_id == m.stake_asset,
            f"model {m.id} takes stakes in {_asset_name(m.stake_asset)}, "
            f"not {_asset_name(c.asset_id)}",
        )
        self._custodial(m)
        key = self._find_transfer(ctx, ctx.signer, m.pool, c.amount, c.asset_id)
        self._consumed.add(key)
        skey = (ctx.signer, m.id)
        self._stakes[skey] = self._stakes.get(skey, 0) + c.amount
        self._credit(m.id, m.pool, c.amount)

    def _unstake(self, ctx: CallContext, c: C.Unstake) -> tuple[str, int]:
        m = self._model(c.model_id)
        _require(c.amount > 0, "unstake amount must be positive")
        staked = self._stakes.get((ctx.signer, m.id), 0)
        _require(c.amount <= staked, f"cannot unstake {c.amount}: {staked} staked on model {m.id}")
        # a selected worker's stake backs its update until the round ends (it may be slashed)
        live = self._live_round(m.id)
        _require(
            live is None or ctx.signer not in live.selected,
            f"{ctx.signer} is a client of round {live.id if live else 0} of model {m.id}: "
            "its stake is bonded until the round ends",
        )
        if staked == c.amount:
            del self._stakes[(ctx.signer, m.id)]
        else:
            self._stakes[(ctx.signer, m.id)] = staked - c.amount
        uid = self._take_id("unbonding")
        unlock = ctx.block_number + self._params["unstake_lock_blocks"]
        self._unbonding[uid] = _Unbonding(uid, ctx.signer, m.id, c.amount, m.stake_asset, unlock)
        return ("unbonding", uid)

    def _create_task(self, ctx: CallContext, c: C.CreateTask) -> tuple[str, int]:
        m = self._live_model(c.model_id)
        _require(c.reward > 0, "task reward must be positive")
        _require(c.max_assignments > 0, "max_assignments must be positive")
        _require(c.duration_blocks > 0, "duration_blocks must be positive")
        budget = c.reward * c.max_assignments
        _require(budget < 1 << 128, "task budget overflows u128")
        self._custodial(m)
        key = self._find_transfer(ctx, ctx.signer, m.pool, budget, m.stake_asset)
        self._consumed.add(key)
        tid = self._take_id("task")
        expires = ctx.block_number + c.duration_blocks
        self._tasks[tid] = _Task(
            id=tid,
            model_id=m.id,
            creator=ctx.signer,
            role=c.role,
            reward=c.reward,
            max_assignments=c.max_assignments,
            validation=c.validation,
            description=c.description,
            asset=m.stake_asset,
            expires_at=expires,
            review_until=expires + self._params["task_review_blocks"],
            escrow=budget,
            status="open",
            assignments=[],
            created_block=ctx.block_number,
            created_extrinsic=ctx.extrinsic_index,
        )
        self._credit(m.id, m.pool, budget)
        return ("task", tid)

    def _open_task(self, ctx: CallContext, task_id: int) -> _Task:
        t = self._tasks.get(task_id)
        _require(t is not None, f"unknown task {task_id}")
        assert t is not None
        _require(t.status == "open", f"task {t.id} is closed")
        _require(ctx.block_number < t.expires_at, f"task {t.id} expired at block {t.expires_at}")
        return t

    def _assign_task(self, ctx: CallContext, c: C.AssignTask) -> None:
        t = self._open_task(ctx, c.task_id)
        _require(ctx.signer != t.creator, "a task's creator cannot take it")
        problem = self._eligible(self._models[t.model_id], ctx.signer)
        _require(problem is None, str(problem))
        active = [a for a in t.assignments if a["status"] in _ACTIVE_ASSIGNMENT]
        _require(
            all(a["account"] != ctx.signer for a in active),
            f"{ctx.signer} already holds an assignment on task {t.id}",
        )
        _require(len(active) < t.max_assignments, f"task {t.id} has no free assignment")
        t.assignments.append({"account": ctx.signer, "status": "assigned", "submission_id": None})

    def _submit_result(self, ctx: CallContext, c: C.SubmitResult) -> tuple[str, int]:
        t = self._open_task(ctx, c.task_id)
        mine = [a for a in t.assignments if a["account"] == ctx.signer]
        _require(
            bool(mine) and mine[-1]["status"] == "assigned",
            f"{ctx.signer} has no open assignment on task {t.id}",
        )
        sid = self._take_id("submission")
        self._submissions[sid] = _Submission(
            sid,
            t.id,
            ctx.signer,
            c.result_cid,
            "pending",
            "",
            ctx.block_number,
            ctx.extrinsic_index,
        )
        mine[-1]["status"] = "submitted"
        mine[-1]["submission_id"] = sid
        return ("submission", sid)

    def _decidable(self, ctx: CallContext, submission_id: int) -> tuple[_Submission, _Task, dict]:
        s = self._submissions.get(submission_id)
        _require(s is not None, f"unknown submission {submission_id}")
        assert s is not None
        _require(s.status == "pending", f"submission {s.id} is already {s.status}")
        t = self._tasks[s.task_id]
        _require(
            t.status == "open" and ctx.block_number < t.review_until,
            f"review of task {t.id} closed at block {t.review_until}",
        )
        m = self._models[t.model_id]
        allowed = ctx.signer == t.creator or (t.validation == "auto" and ctx.signer in m.validators)
        who = "its creator" + (" or the model's validators" if t.validation == "auto" else "")
        _require(allowed, f"only {who} can decide on submissions to task {t.id}")
        slot = next(a for a in t.assignments if a["submission_id"] == s.id)
        return s, t, slot

    def _accept_submission(self, ctx: CallContext, c: C.AcceptSubmission) -> None:
        s, t, slot = self._decidable(ctx, c.submission_id)
        s.status = "accepted"
        slot["status"] = "accepted"
        t.escrow -= t.reward
        self._new_payout(t.model_id, s.worker, t.reward, "task_reward", ctx.block_number)

    def _reject_submission(self, ctx: CallContext, c: C.RejectSubmission) -> None:
        s, _t, slot = self._decidable(ctx, c.submission_id)
        s.status = "rejected"
        s.reason = c.reason
        slot["status"] = "rejected"  # frees the slot for another worker

    def _propose(self, ctx: CallContext, c: C.Propose) -> tuple[str, int]:
        a = c.action
        lo, hi = self._params["min_voting_blocks"], self._params["max_voting_blocks"]
        _require(lo <= c.voting_blocks <= hi, f"voting period must be {lo}..{hi} blocks")
        if a.PROTOCOL:
            _require(c.target is None, f"{a.NAME} targets the protocol, not a model")
            problem = _param_problem(a.name, a.value, self._params)  # type: ignore[attr-defined]
            _require(problem is None, str(problem))
        else:
            _require(c.target is not None, f"{a.NAME} needs a model as its target")
            m = self._model(c.target)  # type: ignore[arg-type]
            problem = self._action_problem(m, a)
            _require(problem is None, str(problem))
        escrow = a.spec.reward if isinstance(a, C.StartRoundProposal) else 0
        if escrow:
            self._custodial(m)
            key = self._find_transfer(ctx, ctx.signer, m.pool, escrow, m.stake_asset)
            self._consumed.add(key)
            self._credit(m.id, m.pool, escrow)
        pid = self._take_id("proposal")
        self._proposals[pid] = _Proposal(
            id=pid,
            proposer=ctx.signer,
            target=c.target,
            action_hex=C.ACTION.encode(a).hex(),
            deadline=ctx.block_number + c.voting_blocks,
            status="open",
            votes={},
            ayes=0,
            nays=0,
            note="",
            created_block=ctx.block_number,
            created_extrinsic=ctx.extrinsic_index,
            escrow=escrow,
        )
        return ("proposal", pid)

    def _vote(self, ctx: CallContext, c: C.Vote) -> None:
        p = self._proposals.get(c.proposal_id)
        _require(p is not None, f"unknown proposal {c.proposal_id}")
        assert p is not None
        _require(
            p.status == "open" and ctx.block_number <= p.deadline,
            f"voting on proposal {p.id} closed at block {p.deadline}",
        )
        where = "any model" if p.target is None else f"model {p.target}"
        _require(self._weight(ctx.signer, p.target) > 0, f"no stake on {where} to vote with")
        p.votes[ctx.signer] = c.aye  # a later vote replaces the earlier one

    def _settle_payout(self, ctx: CallContext, c: C.SettlePayout) -> None:
        p = self._payouts.get(c.payout_id)
        _require(p is not None, f"unknown payout {c.payout_id}")
        assert p is not None
        _require(p.status == "pending", f"payout {p.id} is already {p.status}")
        _require(ctx.signer == p.pool, f"payout {p.id} can only be settled by its pool {p.pool}")
        # a new pool may owe payouts before the migration funding it has landed
        have = self._held.get((p.model_id, p.pool, _akey(p.asset)), 0)
        _require(
            have >= p.amount,
            f"pool {p.pool} holds {have} for model {p.model_id}, payout {p.id} needs {p.amount}: "
            "settle the migration payout into it first",
        )
        key = self._find_transfer(ctx, p.pool, p.dest, p.amount, p.asset)
        self._consumed.add(key)
        self._debited.add(key)
        p.status = "paid"
        p.paid_block = ctx.block_number
        self._credit(p.model_id, p.pool, -p.amount, p.asset)
        if p.reason == "migrate":
            self._credit(p.model_id, p.dest, p.amount, p.asset)
            # the pool may have changed again while this migration was in flight
            self._sweep(p.model_id, ctx.block_number)

    # ----------------------------------------------------------------- rounds
    def _live_round(self, model_id: int) -> _Round | None:
        for r in self._rounds.values():
            if r.model_id == model_id and r.status in _LIVE_ROUND:
                return r
        return None

    def _spec_problem(self, m: _Model, spec: C.RoundSpec) -> str | None:
        """Why a round with ``spec`` can never start on ``m`` as it is now, or None."""
        if m.status != "training":
            return f"model {m.id} is {m.status}, not training"
        if not 1 <= spec.min_clients <= spec.clients:
            return f"need 1 <= min_clients ({spec.min_clients}) <= clients ({spec.clients})"
        if spec.epochs < 1 or spec.batch_size < 1:
            return "epochs and batch_size must be at least 1"
        floor = m.reward_policy["round_reward"]
        if spec.reward < floor:
            return f"model {m.id}'s policy asks a reward of at least {floor}, not {spec.reward}"
        return None

    def _round_workers(self, m: _Model) -> list[str]:
        """Eligible clients, in canonical (account id) order: a non-zero active stake on the
        model, not one of its validators (they judge the updates), and passing the model's
        SetEligibleWorkers rule (anyone with stake / allow-list / min_stake)."""
        out = [
            a
            for (a, mid), v in self._stakes.items()
            if mid == m.id and v > 0 and a not in m.validators and self._eligible(m, a) is None
        ]
        return sorted(out, key=account_id)

    def _open_round(
        self,
        m: _Model,
        starter: str,
        spec: C.RoundSpec,
        block: int,
        extrinsic: int,
        block_hash: str,
        proposal_id: int | None = None,
    ) -> int:
        """Check, then create a round funded with ``spec.reward`` (the caller credits it)."""
        problem = self._spec_problem(m, spec)
        _require(problem is None, str(problem))
        live = self._live_round(m.id)
        _require(live is None, f"model {m.id} already has round {live.id if live else 0} open")
        workers = self._round_workers(m)
        _require(
            len(workers) >= spec.min_clients,
            f"model {m.id} has {len(workers)} eligible workers, the round needs {spec.min_clients}",
        )
        rid = self._take_id("round")
        try:
            hash_bytes = bytes.fromhex(block_hash.removeprefix("0x"))
        except ValueError:
            hash_bytes = block_hash.encode()
        seed = blake2b(
            _SEED_TAG + hash_bytes + m.id.to_bytes(8, "little") + rid.to_bytes(8, "little"),
            digest_size=32,
        ).digest()
        # A keyed-hash ranking is a uniform shuffle that any client can recompute.
        ranked = sorted(
            workers, key=lambda a: (blake2b(seed + account_id(a), digest_size=32).digest(), a)
        )
        submit = spec.submit_blocks or self._params["round_submit_blocks"]
        aggregate = spec.aggregate_blocks or self._params["round_aggregate_blocks"]
        # a round started in a tick takes calls from the next block on
        first = block if extrinsic >= 0 else block + 1
        spec_json = spec.to_json()
        del spec_json["type"]
        if spec_json["dp"] is not None:
            del spec_json["dp"]["type"]
        spec_json["submit_blocks"], spec_json["aggregate_blocks"] = submit, aggregate
        self._rounds[rid] = _Round(
            id=rid,
            model_id=m.id,
            starter=starter,
            proposal_id=proposal_id,
            spec=spec_json,
            base_cid=m.global_cid,
            seed="0x" + seed.hex(),
            eligible=len(workers),
            selected=ranked[: spec.clients],
            start_block=block,
            submit_deadline=first + submit,
            aggregate_deadline=first + submit + aggregate,
            status="open",
            escrow=spec.reward,
            aggregate_cid=None,
            metrics=None,
            digest=None,
            number=None,
            note="",
            ended_block=None,
            created_block=block,
            created_extrinsic=extrinsic,
        )
        return rid

    def _start_round(self, ctx: CallContext, c: C.StartRound) -> tuple[str, int]:
        return self._start_owned(ctx, c.model_id, c.spec, 1, "a round")

    def _start_rounds(self, ctx: CallContext, c: C.StartRounds) -> tuple[str, int]:
        _require(c.rounds >= 1, "a plan needs at least 1 round")
        return self._start_owned(ctx, c.model_id, c.spec, c.rounds, "rounds")

    def _start_owned(
        self, ctx: CallContext, model_id: int, spec: C.RoundSpec, rounds: int, what: str
    ) -> tuple[str, int]:
        """The owner opens a round now and schedules ``rounds - 1`` more after it; the whole
        budget (``rounds * spec.reward``) comes with a transfer in the same batch."""
        m = self._model(model_id)
        _require(ctx.signer == m.owner, f"only the owner of model {m.id} can start {what}")
        problem = self._spec_problem(m, spec)
        _require(problem is None, str(problem))
        budget = spec.reward * rounds
        key = None
        if budget:
            self._custodial(m)
            key = self._find_transfer(ctx, ctx.signer, m.pool, budget, m.stake_asset)
        rid = self._open_round(
            m, ctx.signer, spec, ctx.block_number, ctx.extrinsic_index, ctx.block_hash
        )
        r = self._rounds[rid]
        r.follow, r.reserve = rounds - 1, budget - spec.reward
        if key is not None:
            self._consumed.add(key)
            self._credit(m.id, m.pool, budget)
        return ("round", rid)

    def _continue_plan(self, r: _Round, block: int, extrinsic: int, block_hash: str) -> None:
        """A plan's next round opens as ``r`` ends, in the same block; or, when it cannot
        open, the rest of the plan's budget goes back to its starter."""
        if r.follow <= 0:
            return
        follow, reserve, r.follow, r.reserve = r.follow, r.reserve, 0, 0
        m = self._models[r.model_id]
        spec = _spec_from_json(r.spec)
        try:
            rid = self._open_round(m, r.starter, spec, block, extrinsic, block_hash)
        except _Reject as e:
            r.note = (r.note + "; " if r.note else "") + f"plan stopped: {e.reason}"
            self._new_payout(m.id, r.starter, reserve, "round_refund", block)
            return
        nxt = self._rounds[rid]
        nxt.follow, nxt.reserve = follow - 1, reserve - spec.reward

    def _announce_key(self, ctx: CallContext, c: C.AnnounceKey) -> None:
        _require(c.public_key != "0x" + "00" * 32, "the all-zero key would make every mask public")
        self._keys[ctx.signer] = c.public_key
        return None

    def public_keys(self, accounts: Any = None) -> dict[str, str]:
        """Announced X25519 public keys (for secure aggregation), by account."""
        if accounts is None:
            return dict(sorted(self._keys.items()))
        return {a: self._keys[a] for a in accounts if a in self._keys}

    def _submit_update(self, ctx: CallContext, c: C.SubmitUpdate) -> tuple[str, int]:
        r = self._rounds.get(c.round_id)
        _require(r is not None, f"unknown round {c.round_id}")
        assert r is not None
        _require(
            r.status == "open" and ctx.block_number < r.submit_deadline,
            f"round {r.id} takes no updates: it is {r.status} (submit deadline block "
            f"{r.submit_deadline})",
        )
        _require(ctx.signer in r.selected, f"{ctx.signer} was not selected for round {r.id}")
        done = self._round_updates(r.id)
        _require(
            all(u.worker != ctx.signer for u in done),
            f"{ctx.signer} already submitted an update to round {r.id}",
        )
        uid = self._take_id("update")
        self._updates[uid] = _Update(
            uid,
            r.id,
            ctx.signer,
            c.cid,
            c.num_examples,
            "submitted",
            None,
            "",
            ctx.block_number,
            ctx.extrinsic_index,
        )
        if len(done) + 1 == len(r.selected):
            r.status = "aggregating"  # every client is in: validators need not wait
        return ("update", uid)

    def _round_updates(self, round_id: int) -> list[_Update]:
        return [u for _, u in sorted(self._updates.items()) if u.round_id == round_id]

    def _attest(self, ctx: CallContext, c: C.Attest) -> tuple[str, int]:
        r = self._rounds.get(c.round_id)
        _require(r is not None, f"unknown round {c.round_id}")
        assert r is not None
        _require(
            r.status == "aggregating" and ctx.block_number < r.aggregate_deadline,
            f"round {r.id} takes no attestations: it is {r.status} (aggregate deadline block "
            f"{r.aggregate_deadline})",
        )
        m = self._models[r.model_id]
        _require(ctx.signer in m.validators, f"{ctx.signer} is not a validator of model {m.id}")
        mine = [a for a in self._attestations.values() if a.round_id == r.id]
        # once each: a replaceable verdict would let a validator follow the others' digests
        _require(
            all(a.validator != ctx.signer for a in mine),
            f"{ctx.signer} already attested round {r.id}",
        )
        judged = [x.account for x in c.accepted] + [x.account for x in c.rejected]
        _require(len(set(judged)) == len(judged), "an update is both accepted and rejected")
        submitted = {u.worker for u in self._round_updates(r.id)}
        _require(
            set(judged) == submitted,
            f"an attestation must judge exactly the {len(submitted)} updates of round {r.id}",
        )
        if c.accepted:
            total = sum(x.score for x in c.accepted)
            _require(total == C.PERMILL, f"contribution scores sum to {total}, not {C.PERMILL}")
        else:
            _require(
                c.aggregate_cid == r.base_cid,
                "with no accepted update the aggregate must be the round's base model "
                f"{r.base_cid}",
            )
        aid = self._take_id("attestation")
        att = _Attestation(
            aid,
            r.id,
            ctx.signer,
            c.result_digest(),
            c.aggregate_cid,
            c.accuracy_ppm,
            c.loss_ppm,
            [[x.account, x.score] for x in c.accepted],
            [[x.account, x.reason] for x in c.rejected],
            ctx.block_number,
            ctx.extrinsic_index,
        )
        self._attestations[aid] = att
        agreeing = sum(
            1 for a in (*mine, att) if a.digest == att.digest and a.validator in m.validators
        )
        if agreeing >= pool_threshold(len(m.validators)):
            self._finalize(r, m, att, ctx.block_number)
            self._continue_plan(r, ctx.block_number, ctx.extrinsic_index, ctx.block_hash)
        return ("attestation", aid)

    def _finalize(self, r: _Round, m: _Model, att: _Attestation, block: int) -> None:
        """Apply a quorum's verdict: slash rejected updates, reward accepted ones, advance."""
        updates = {u.worker: u for u in self._round_updates(r.id)}
        # when every update fails, the round itself was bad (e.g. hostile hints): nobody is
        # slashed, and the starter cannot profit from a round nobody could pass
        permill = m.reward_policy["slash_permill"] if att.accepted else 0
        slashed = 0
        for account, reason in sorted(att.rejected, key=lambda x: account_id(x[0])):
            if not att.accepted:
                updates[account].status, updates[account].reason = "rejected", reason
                continue
            stake = self._stakes.get((account, m.id), 0)
            amount = stake * permill // C.PERMILL
            if amount:
                if stake == amount:
                    del self._stakes[(account, m.id)]
                else:
                    self._stakes[(account, m.id)] = stake - amount
            slashed += amount
            sid = self._take_id("slash")
            self._slashes[sid] = _Slash(
                sid, r.id, m.id, account, amount, stake, permill, reason, block
            )
            updates[account].status, updates[account].reason = "rejected", reason
        # slashed stake joins the pot, so honest contributors gain what poisoners lose
        pot, r.escrow = r.escrow + slashed, 0
        r.aggregate_cid = att.aggregate_cid
        r.metrics = {"accuracy_ppm": att.accuracy_ppm, "loss_ppm": att.loss_ppm}
        r.digest = att.digest
        r.ended_block = block
        if not att.accepted:
            r.status, r.note = "failed", "validators rejected every update"
            self._new_payout(m.id, r.starter, pot, "round_refund", block)
            return
        accepted = sorted(att.accepted, key=lambda x: account_id(x[0]))
        if m.reward_policy["kind"] == "equal":
            shares = [pot // len(accepted)] * len(accepted)
        else:
            shares = [pot * score // C.PERMILL for _, score in accepted]
        # the rounding remainder goes to the largest contributor (first in account order)
        top = max(range(len(accepted)), key=lambda i: (accepted[i][1], -i))
        shares[top] += pot - sum(shares)
        for (account, score), amount in zip(accepted, shares, strict=True):
            updates[account].status, updates[account].contribution = "accepted", score
            payout = self._new_payout(m.id, account, amount, "round_reward", block)
            rid = self._take_id("reward")
            self._rewards[rid] = _Reward(rid, r.id, m.id, account, amount, score, payout)
        m.global_cid = att.aggregate_cid
        m.round += 1
        r.number = m.round
        r.status = "finalized"

    def _fail_round(self, r: _Round, block: int, note: str) -> None:
        r.status, r.note, r.ended_block = "failed", note, block
        refund, r.escrow = r.escrow, 0
        self._new_payout(r.model_id, r.starter, refund, "round_refund", block)

    def _round_deadlines(self, r: _Round, b: int, block_hash: str = "") -> None:
        """Deadlines are the first block in which a call is refused, so a round moves on at
        the end of the block before: no round outlives its deadlines."""
        if r.status == "open" and b + 1 >= r.submit_deadline:
            n = len(self._round_updates(r.id))
            if n >= r.spec["min_clients"]:
                r.status = "aggregating"
            else:
                self._fail_round(
                    r, b, f"{n} updates by the deadline, {r.spec['min_clients']} needed"
                )
                self._continue_plan(r, b, -1, block_hash)
        elif r.status == "aggregating" and b + 1 >= r.aggregate_deadline:
            self._fail_round(r, b, "no quorum of validators attested one result in time")
            self._continue_plan(r, b, -1, block_hash)

    _HANDLERS: dict[type, Callable[..., Any]] = {
        C.RegisterModel: _register_model,
        C.StartTraining: _start_training,
        C.Stake: _stake,
        C.Unstake: _unstake,
        C.CreateTask: _create_task,
        C.AssignTask: _assign_task,
        C.SubmitResult: _submit_result,
        C.AcceptSubmission: _accept_submission,
        C.RejectSubmission: _reject_submission,
        C.Propose: _propose,
        C.Vote: _vote,
        C.SettlePayout: _settle_payout,
        C.StartRound: _start_round,
        C.StartRounds: _start_rounds,
        C.SubmitUpdate: _submit_update,
        C.Attest: _attest,
        C.AnnounceKey: _announce_key,
    }

    # ----------------------------------------------------------------- governance
    def _action_problem(self, m: _Model, a: C.Action) -> str | None:
        """Why action ``a`` cannot apply to model ``m`` now, or None."""
        if isinstance(a, C.ApproveModel):
            return None if m.status == "proposed" else f"model {m.id} is {m.status}"
        if m.status == "retired":
            return f"model {m.id} is retired"
        if isinstance(a, C.AddValidator):
            if a.account in m.validators:
                return f"{a.account} is already a validator of model {m.id}"
            if len(m.validators) >= C.MAX_VALIDATORS:
                return f"model {m.id} already has {C.MAX_VALIDATORS} validators"
        if isinstance(a, C.RemoveValidator):
            if a.account not in m.validators:
                return f"{a.account} is not a validator of model {m.id}"
            if len(m.validators) <= MIN_POOL_SIGNATORIES:
                return (
                    f"model {m.id} would be left with fewer than {MIN_POOL_SIGNATORIES} "
                    "validators (its pool must stay a multisig): add one first"
                )
        if isinstance(a, C.StartRoundProposal):
            return self._spec_problem(m, a.spec)
        return None

    def _tally(self, p: _Proposal, block: int, block_hash: str = "") -> None:
        ayes = sum(self._weight(a, p.target) for a, v in p.votes.items() if v)
        nays = sum(self._weight(a, p.target) for a, v in p.votes.items() if not v)
        total = self._total_weight(p.target)
        p.ayes, p.nays = ayes, nays
        quorum, threshold = self._params["quorum_permill"], self._params["threshold_permill"]
        if isinstance(p.action, _CRITICAL):
            quorum = max(quorum, self._params["critical_quorum_permill"])
        if ayes == 0:
            p.status, p.note = "rejected", "no aye weight"
        elif (ayes + nays) * C.PERMILL < quorum * total:
            p.status, p.note = "rejected", f"turnout below quorum ({quorum} permill of {total})"
        elif ayes * C.PERMILL <= threshold * (ayes + nays):
            p.status, p.note = "rejected", f"ayes not above threshold ({threshold} permill)"
        else:
            problem = self._execute(p, block, block_hash)
            if problem:
                p.status, p.note = "void", problem
            else:
                p.status = "passed"
                p.note = p.note if isinstance(p.action, C.StartRoundProposal) else ""
        if p.escrow:  # a StartRound budget that did not become a round goes back
            self._new_payout(p.target, p.proposer, p.escrow, "round_refund", block)  # type: ignore[arg-type]
            p.escrow = 0

    def _execute(self, p: _Proposal, block: int, block_hash: str = "") -> str | None:
        a = p.action
        if isinstance(a, C.SetProtocolParam):
            problem = _param_problem(a.name, a.value, self._params)
            if problem is None:
                self._params[a.name] = a.value
            return problem
        m = self._models[p.target]  # type: ignore[index]
        problem = self._action_problem(m, a)
        if problem:
            return problem
        if isinstance(a, C.StartRoundProposal):
            try:
                rid = self._open_round(m, p.proposer, a.spec, block, -1, block_hash, p.id)
            except _Reject as e:
                return e.reason
            p.escrow = 0  # now the round's escrow
            p.note = f"started round {rid}"
        elif isinstance(a, C.ApproveModel):
            m.status = "approved"
        elif isinstance(a, C.RetireModel):
            m.status = "retired"
            live = self._live_round(m.id)
            if live is not None:
                self._fail_round(live, block, "model retired")
                self._continue_plan(live, block, -1, block_hash)  # refunds the rest
        elif isinstance(a, C.SetRewardPolicy):
            policy = a.policy.to_json()
            del policy["type"]
            m.reward_policy = policy
        elif isinstance(a, C.SetStrategy):
            m.strategy = a.strategy
        elif isinstance(a, C.SetLicence):
            m.licence = a.licence
        elif isinstance(a, C.SetJurisdictions):
            m.jurisdictions = list(a.jurisdictions)
        elif isinstance(a, C.SetEligibleWorkers):
            m.eligibility = a.eligibility.to_json()
        elif isinstance(a, C.AddValidator | C.RemoveValidator):
            vals = set(m.validators)
            vals = vals | {a.account} if isinstance(a, C.AddValidator) else vals - {a.account}
            m.validators = sorted(vals, key=account_id)
            self._record_pool(m)
            self._sweep(m.id, block)
        return None

    def _close_task(self, t: _Task, block: int) -> None:
        for slot in t.assignments:
            if slot["status"] in ("assigned", "submitted"):
                if slot["submission_id"] is not None:
                    self._submissions[slot["submission_id"]].status = "expired"
                slot["status"] = "expired"
        t.status = "closed"
        refund, t.escrow = t.escrow, 0
        self._new_payout(t.model_id, t.creator, refund, "task_refund", block)

    # ----------------------------------------------------------------- queries
    def models(self) -> list[ModelInfo]:
        return [self._model_info(m) for _, m in sorted(self._models.items())]

    def model(self, model_id: int) -> ModelInfo | None:
        m = self._models.get(model_id)
        return None if m is None else self._model_info(m)

    def _model_info(self, m: _Model) -> ModelInfo:
        return ModelInfo(
            id=m.id,
            name=m.name,
            owner=m.owner,
            status=m.status,
            pool=m.pool,
            global_cid=m.global_cid,
            round=m.round,
            strategy=m.strategy,
            validators=tuple(m.validators),
            total_stake=self._total_weight(m.id),
            description=m.description,
            architecture_cid=m.architecture_cid,
            weights_cid=m.weights_cid,
            metric=m.metric,
            licence=m.licence,
            jurisdictions=tuple(m.jurisdictions),
            reward_policy=dict(m.reward_policy),
            stake_asset=m.stake_asset,
            eligibility=json.loads(json.dumps(m.eligibility)),
            pool_threshold=pool_threshold(len(m.validators)) if len(m.validators) > 1 else 1,
            created_block=m.created_block,
            created_extrinsic=m.created_extrinsic,
        )

    def stakes(self, model_id: int | None = None, account: str | None = None) -> list[StakeInfo]:
        """Active stakes, then unbonding ones (each with the block it is paid out at)."""
        out = [
            StakeInfo(a, m, v, self._models[m].stake_asset, None, "active")
            for (a, m), v in sorted(self._stakes.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        ]
        out += [
            StakeInfo(u.account, u.model_id, u.amount, u.asset, u.unlock_at, "unbonding")
            for _, u in sorted(self._unbonding.items())
        ]
        return [
            s
            for s in out
            if (model_id is None or s.model_id == model_id)
            and (account is None or s.account == account)
        ]

    def proposals(self, open_only: bool = False) -> list[ProposalInfo]:
        return [
            self._proposal_info(p)
            for _, p in sorted(self._proposals.items())
            if not open_only or p.status == "open"
        ]

    def proposal(self, proposal_id: int) -> ProposalInfo | None:
        p = self._proposals.get(proposal_id)
        return None if p is None else self._proposal_info(p)

    def _proposal_info(self, p: _Proposal) -> ProposalInfo:
        ayes, nays = p.ayes, p.nays
        if p.status == "open":  # live weights; the tally freezes them
            ayes = sum(self._weight(a, p.target) for a, v in p.votes.items() if v)
            nays = sum(self._weight(a, p.target) for a, v in p.votes.items() if not v)
        params = p.action.to_json()
        kind = params.pop("type")
        return ProposalInfo(
            id=p.id,
            kind=kind,
            target="protocol" if p.target is None else p.target,
            status=p.status,
            ayes=ayes,
            nays=nays,
            deadline=p.deadline,
            proposer=p.proposer,
            params=params,
            voters=len(p.votes),
            note=p.note,
        )

    def tasks(self, model_id: int | None = None) -> list[TaskInfo]:
        return [
            self._task_info(t)
            for _, t in sorted(self._tasks.items())
            if model_id is None or t.model_id == model_id
        ]

    def task(self, task_id: int) -> TaskInfo | None:
        t = self._tasks.get(task_id)
        return None if t is None else self._task_info(t)

    def _task_info(self, t: _Task) -> TaskInfo:
        return TaskInfo(
            id=t.id,
            model_id=t.model_id,
            creator=t.creator,
            role=t.role,
            reward=t.reward,
            max_assignments=t.max_assignments,
            budget=t.reward * t.max_assignments,
            escrow=t.escrow,
            asset=t.asset,
            validation=t.validation,
            status=t.status,
            expires_at=t.expires_at,
            review_until=t.review_until,
            description=t.description,
            assignments=tuple(
                AssignmentInfo(a["account"], a["status"], a["submission_id"]) for a in t.assignments
            ),
        )

    def submissions(self, task_id: int | None = None) -> list[SubmissionInfo]:
        return [
            SubmissionInfo(
                s.id, s.task_id, s.worker, s.result_cid, s.status, s.reason, s.block_number
            )
            for _, s in sorted(self._submissions.items())
            if task_id is None or s.task_id == task_id
        ]

    def payouts(self, status: str | None = None) -> list[Payout]:
        return [
            Payout(
                p.id,
                p.model_id,
                p.pool,
                p.dest,
                p.amount,
                p.asset,
                p.reason,
                p.created_block,
                p.status,
                p.paid_block,
            )
            for _, p in sorted(self._payouts.items())
            if status is None or p.status == status
        ]

    def pending_payouts(self, ready_only: bool = False) -> list[Payout]:
        """What pools owe now, in id order: every honest validator derives the same list.

        ``ready_only``: those the pool can pay now (in id order, cumulatively), leaving out
        payouts of a new pool whose migration payout has not landed yet.
        """
        pending = self.payouts("pending")
        if not ready_only:
            return pending
        left = dict(self._held)
        ready = []
        for p in pending:
            key = (p.model_id, p.pool, _akey(p.asset_id))
            if left.get(key, 0) >= p.amount:
                left[key] -= p.amount
                ready.append(p)
        return ready

    def pool_signers(self, pool: str) -> tuple[tuple[str, ...], int] | None:
        """The signatories and threshold of a multisig pool any model ever had, current or
        former (former validators sign its migration and refunds), or None."""
        info = self._pools.get(pool)
        return None if info is None else (tuple(info["signatories"]), info["threshold"])

    def holdings(self) -> dict[tuple[str, int | None], int]:
        """What the books count in each multisig pool, by (pool, asset), over all its models:
        never more than the chain's balance of that pool in that asset."""
        out: dict[tuple[str, int | None], int] = {}
        for (_, pool, a), v in self._held.items():
            out[(pool, _asset(a))] = out.get((pool, _asset(a)), 0) + v
        return dict(sorted(out.items(), key=lambda kv: (kv[0][0], _akey(kv[0][1]))))

    def losses(self) -> list[dict[str, Any]]:
        """Value that left a pool other than through a settled payout (a transfer that a
        dishonest quorum of validators signed, dust the chain removed), debited from the books."""
        return [dict(x) for x in self._losses]

    def pools(self) -> list[PoolInfo]:
        return [self._pool_info(m) for _, m in sorted(self._models.items())]

    def pool(self, model_id: int) -> PoolInfo | None:
        m = self._models.get(model_id)
        return None if m is None else self._pool_info(m)

    def _pool_info(self, m: _Model) -> PoolInfo:
        stakes = self._total_weight(m.id)
        unbonding = sum(u.amount for u in self._unbonding.values() if u.model_id == m.id)
        escrow = sum(t.escrow for t in self._tasks.values() if t.model_id == m.id)
        round_escrow = sum(
            r.escrow + r.reserve for r in self._rounds.values() if r.model_id == m.id
        )
        round_escrow += sum(p.escrow for p in self._proposals.values() if p.target == m.id)
        pending = sum(
            p.amount
            for p in self._payouts.values()
            if p.model_id == m.id
            and p.status == "pending"
            and p.reason != "migrate"
            and p.asset == m.stake_asset
        )
        asset = _akey(m.stake_asset)
        balances = tuple(
            (pool, v)
            for (mid, pool, a), v in sorted(self._held.items())
            if mid == m.id and a == asset
        )
        n = len(m.validators)
        return PoolInfo(
            model_id=m.id,
            pool=m.pool,
            signatories=tuple(m.validators) if m.validators else (m.owner,),
            threshold=pool_threshold(n) if n > 1 else 1,
            asset_id=m.stake_asset,
            stakes=stakes,
            unbonding=unbonding,
            task_escrow=escrow,
            pending_payouts=pending,
            obligations=stakes + unbonding + escrow + pending + round_escrow,
            held=sum(v for _, v in balances),
            balances=balances,
            round_escrow=round_escrow,
        )

    def rounds(self, model_id: int | None = None) -> list[RoundInfo]:
        """Every round (of one model when given), in id order."""
        return [
            self._round_info(r)
            for _, r in sorted(self._rounds.items())
            if model_id is None or r.model_id == model_id
        ]

    def round(self, round_id: int) -> RoundInfo | None:
        r = self._rounds.get(round_id)
        return None if r is None else self._round_info(r)

    def round_history(self, model_id: int) -> list[RoundInfo]:
        """A model's rounds in the order they started, the live one (if any) last."""
        return self.rounds(model_id)

    def open_round(self, model_id: int) -> RoundInfo | None:
        """The model's round that is open or aggregating (at most one), or None."""
        r = self._live_round(model_id)
        return None if r is None else self._round_info(r)

    def eligible_workers(self, model_id: int) -> list[str]:
        """Who a round started now would select from, in canonical (account id) order."""
        m = self._models.get(model_id)
        return [] if m is None else self._round_workers(m)

    def rewards(self, round_id: int | None = None, account: str | None = None) -> list[RewardInfo]:
        return [
            RewardInfo(
                x.id, x.round_id, x.model_id, x.account, x.amount, x.contribution, x.payout_id
            )
            for _, x in sorted(self._rewards.items())
            if (round_id is None or x.round_id == round_id)
            and (account is None or x.account == account)
        ]

    def slashes(self, round_id: int | None = None, account: str | None = None) -> list[SlashInfo]:
        return [
            SlashInfo(
                x.id,
                x.round_id,
                x.model_id,
                x.account,
                x.amount,
                x.stake_before,
                x.slash_permill,
                x.reason,
                x.block_number,
            )
            for _, x in sorted(self._slashes.items())
            if (round_id is None or x.round_id == round_id)
            and (account is None or x.account == account)
        ]

    def _round_info(self, r: _Round) -> RoundInfo:
        m = self._models[r.model_id]
        updates = tuple(
            UpdateInfo(
                u.id,
                u.round_id,
                u.worker,
                u.cid,
                u.num_examples,
                u.status,
                u.contribution,
                u.reason,
                u.block_number,
            )
            for u in self._round_updates(r.id)
        )
        attestations = tuple(
            AttestationInfo(
                a.id,
                a.round_id,
                a.validator,
                a.digest,
                a.aggregate_cid,
                a.accuracy_ppm / C.PERMILL,
                a.loss_ppm / C.PERMILL,
                tuple((acc, score) for acc, score in a.accepted),
                tuple((acc, why) for acc, why in a.rejected),
                a.block_number,
            )
            for _, a in sorted(self._attestations.items())
            if a.round_id == r.id
        )
        metrics: dict[str, Any] = {}
        if r.metrics is not None:
            metrics = {
                "accuracy": r.metrics["accuracy_ppm"] / C.PERMILL,
                "loss": r.metrics["loss_ppm"] / C.PERMILL,
                **r.metrics,
            }
        spec = r.spec
        dp = spec["dp"]
        return RoundInfo(
            round_id=r.id,
            model_id=r.model_id,
            status=r.status,
            selected=tuple(r.selected),
            submitted=tuple(u.worker for u in updates),
            aggregate_cid=r.aggregate_cid,
            metrics=metrics,
            rewards={x.account: x.amount for x in self.rewards(round_id=r.id)},
            slashes={x.account: x.amount for x in self.slashes(round_id=r.id)},
            number=r.number,
            starter=r.starter,
            proposal_id=r.proposal_id,
            base_cid=r.base_cid,
            clients=spec["clients"],
            min_clients=spec["min_clients"],
            eligible=r.eligible,
            reward=spec["reward"],
            escrow=r.escrow,
            hints={
                "epochs": spec["epochs"],
                "batch_size": spec["batch_size"],
                "learning_rate": spec["learning_rate_ppm"] / C.PERMILL,
            },
            dp=None
            if dp is None
            else {
                "clip_norm": dp["clip_norm_ppm"] / C.PERMILL,
                "noise_multiplier": dp["noise_multiplier_ppm"] / C.PERMILL,
            },
            seed=r.seed,
            start_block=r.start_block,
            submit_deadline=r.submit_deadline,
            aggregate_deadline=r.aggregate_deadline,
            quorum=pool_threshold(len(m.validators)),
            validators=len(m.validators),
            digest=r.digest,
            note=r.note,
            ended_block=r.ended_block,
            updates=updates,
            attestations=attestations,
            rounds_left=r.follow,
        )

    def errors(self, account: str | None = None) -> list[ErrorRecord]:
        return [
            ErrorRecord(
                e["block_number"],
                e["extrinsic_index"],
                e["account"],
                e["call"],
                e["reason"],
                e["batch_index"],
            )
            for e in self._errors
            if account is None or e["account"] == account
        ]

    def errors_at(self, block_number: int, extrinsic_index: int) -> list[ErrorRecord]:
        """The rejected calls of one extrinsic (look-up by a transaction receipt)."""
        return [
            e
            for e in self.errors()
            if (e.block_number, e.extrinsic_index) == (block_number, extrinsic_index)
        ]

    def created_by(self, block_number: int, extrinsic_index: int) -> list[tuple[str, int]]:
        """(entity, id) created by one extrinsic's calls: how a client maps a receipt to ids."""
        out: list[tuple[str, int]] = []
        for kind, table in (
            ("model", self._models),
            ("task", self._tasks),
            ("proposal", self._proposals),
            ("round", self._rounds),
        ):
            for i, r in sorted(table.items()):
                if (r.created_block, r.created_extrinsic) == (block_number, extrinsic_index):
                    out.append((kind, i))
        for kind, table in (
            ("submission", self._submissions),
            ("update", self._updates),
            ("attestation", self._attestations),
        ):
            for i, s in sorted(table.items()):
                if (s.block_number, s.extrinsic_index) == (block_number, extrinsic_index):
                    out.append((kind, i))
        return out

    # ----------------------------------------------------------------- snapshots
    def _dump(self) -> dict[str, Any]:
        def rows(table: dict[int, Any]) -> list[dict[str, Any]]:
            return [dataclasses.asdict(r) for _, r in sorted(table.items())]

        return {
            "format": FORMAT,
            "last_block": self._last_block,
            "last_hash": self._last_hash,
            "params": dict(self._params),
            "next": dict(self._next),
            "models": rows(self._models),
            "tasks": rows(self._tasks),
            "submissions": rows(self._submissions),
            "proposals": rows(self._proposals),
            "unbonding": rows(self._unbonding),
            "payouts": rows(self._payouts),
            "rounds": rows(self._rounds),
            "updates": rows(self._updates),
            "attestations": rows(self._attestations),
            "rewards": rows(self._rewards),
            "slashes": rows(self._slashes),
            "stakes": [[a, m, v] for (a, m), v in sorted(self._stakes.items())],
            "held": [[m, p, a, v] for (m, p, a), v in sorted(self._held.items())],
            "pools": {k: v for k, v in sorted(self._pools.items())},
            "losses": list(self._losses),
            "consumed": sorted(list(k) for k in self._consumed),
            "keys": [[a, k] for a, k in sorted(self._keys.items())],
        }

    def state_hash(self) -> str:
        """blake2b-256 of the canonical serialization of the state (the error log excluded)."""
        return "0x" + blake2b(_canonical(self._dump()), digest_size=32).hexdigest()

    def to_bytes(self) -> bytes:
        """A canonical snapshot, the error log included; ``from_bytes`` restores it exactly."""
        data = self._dump()
        data["errors"] = self._errors
        return _canonical(data)

    @classmethod
    def from_bytes(cls, data: bytes) -> State:
        try:
            d = json.loads(data)
            if d.get("format") != FORMAT:
                raise SnapshotError(f"unsupported snapshot format {d.get('format')!r}")
            s = cls()
            s._last_block = d["last_block"]
            s._last_hash = d["last_hash"]
            s._params = dict(d["params"])
            s._next.update(d["next"])  # snapshots from before rounds lack their kinds
            for attr, rec in (
                ("_models", _Model),
                ("_tasks", _Task),
                ("_submissions", _Submission),
                ("_proposals", _Proposal),
                ("_unbonding", _Unbonding),
                ("_payouts", _Payout),
                ("_rounds", _Round),
                ("_updates", _Update),
                ("_attestations", _Attestation),
                ("_rewards", _Reward),
                ("_slashes", _Slash),
            ):
                rows = d[attr[1:]] if attr[1:] in d or rec not in _ROUND_RECORDS else []
                setattr(s, attr, {r["id"]: rec(**r) for r in rows})
            s._stakes = {(a, m): v for a, m, v in d["stakes"]}
            s._held = {(m, p, a): v for m, p, a, v in d["held"]}
            s._pools = {k: dict(v) for k, v in d["pools"].items()}
            s._losses = list(d["losses"])
            s._consumed = {tuple(k) for k in d["consumed"]}
            s._keys = {a: k for a, k in d.get("keys", [])}  # snapshots from before keys
            s._errors = list(d["errors"])
        except SnapshotError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise SnapshotError(f"corrupt state snapshot: {e}") from e
        return s


_ROUND_RECORDS = (_Round, _Update, _Attestation, _Reward, _Slash)
# proposals that change who holds pooled funds or the rules need the critical quorum
_CRITICAL = (C.AddValidator, C.RemoveValidator, C.SetProtocolParam, C.RetireModel)


def _transfer_key(block: int, extrinsic: int, position: int, t: Transfer) -> tuple[Any, ...]:
    return (block, extrinsic, position, t.source, t.dest, t.amount, _akey(t.asset_id))


def _spec_from_json(spec: dict[str, Any]) -> C.RoundSpec:
    """The RoundSpec a round recorded (deadlines as it resolved them), for a plan's next."""
    fields = {k: v for k, v in spec.items() if k != "dp"}
    dp = spec.get("dp")
    return C.RoundSpec(**fields, dp=None if dp is None else C.DpParams(**dp))


def _guess_call_name(remark: bytes) -> str | None:
    """The call a malformed remark meant, when its header is readable (for the error log)."""
    head = len(C.PREFIX) + 1
    if len(remark) > head and C.is_protocol_remark(remark) and remark[head - 1] == C.VERSION:
        cls = C.CALL.by_index.get(remark[head])
        return cls.NAME if cls else None  # type: ignore[attr-defined]
    return None
