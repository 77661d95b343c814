"""Frozen values crossing the protocol layer's boundary: inputs from the indexer, query results.

Query results carry at least the fields of CLI.md; ``to_json()`` gives the CLI's JSON shape.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .accounts import normalize_address


class _Json:
    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Transfer(_Json):
    """A value transfer that succeeded in the same ``Utility.batch_all`` as a remark.

    ``asset_id`` is None for the native token (Balances), else the Assets pallet's asset id.
    """

    source: str
    dest: str
    amount: int
    asset_id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", normalize_address(self.source))
        object.__setattr__(self, "dest", normalize_address(self.dest))
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or self.amount < 0:
            raise ValueError(f"transfer amount must be a non-negative int, got {self.amount!r}")


@dataclass(frozen=True)
class CallContext(_Json):
    """Where and by whom a protocol remark was made, as read from the chain by the indexer.

    ``signer`` is the remark's origin (the ``System.Remarked`` event's sender: for a call
    dispatched through ``Multisig.as_multi`` that is the multisig account). ``transfers`` are the
    transfers of the innermost ``batch_all`` holding the remark, in call order.
    """

    block_number: int
    block_hash: str
    extrinsic_index: int
    batch_index: int
    signer: str
    transfers: tuple[Transfer, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "signer", normalize_address(self.signer))
        object.__setattr__(self, "transfers", tuple(self.transfers))


@dataclass(frozen=True)
class Outcome(_Json):
    """The result of applying one remark: ok, or the reason it was rejected.

    ``entity``/``entity_id`` name what the call created (e.g. "proposal", 3), if anything.
    """

    ok: bool
    call: str | None
    reason: str | None = None
    entity: str | None = None
    entity_id: int | None = None


@dataclass(frozen=True)
class Payout(_Json):
    """Value owed out of a pool: the pool's signatories execute it as ``batch_all([transfer,
    remark(settle_payout(id))])`` and the state marks it paid when that remark is applied.

    ``reason``: task_reward, task_refund, unstake, migrate (pool change), round_reward,
    round_refund (a failed round's budget, or a StartRound proposal's that did not pass), or
    refund (a transfer into a pool that no accepted call claimed: a rejected funded call).
    ``status``: pending, paid, or void (a migration re-derived after a loss in its pool).
    """

    id: int
    model_id: int
    pool: str
    dest: str
    amount: int
    asset_id: int | None
    reason: str
    created_block: int
    status: str = "pending"
    paid_block: int | None = None


@dataclass(frozen=True)
class ProtocolParams(_Json):
    """Protocol-wide parameters, changed only by SetProtocolParam proposals."""

    unstake_lock_blocks: int = 20
    quorum_permill: int = 200_000
    threshold_permill: int = 500_000
    min_voting_blocks: int = 10
    max_voting_blocks: int = 100_000
    task_review_blocks: int = 20
    round_submit_blocks: int = 20
    round_aggregate_blocks: int = 20
    # turnout that changes who holds the money or the rules (validators, protocol parameters,
    # retirement) must reach: a small minority cannot capture a pool by a quiet vote
    critical_quorum_permill: int = 500_000
    # drt: blocks an accepted update's deposit stays held after its round's verdict
    deposit_wait_blocks: int = 10
    # prediction markets: blocks the owner has to reveal the test set after the last round
    reveal_blocks: int = 20


@dataclass(frozen=True)
class ModelInfo(_Json):
    id: int
    name: str
    owner: str
    status: str  # proposed, approved, training, retired
    pool: str
    global_cid: str
    round: int
    strategy: str
    validators: tuple[str, ...]
    total_stake: int
    description: str
    architecture_cid: str
    weights_cid: str
    metric: str
    licence: str
    jurisdictions: tuple[str, ...]
    reward_policy: dict[str, Any]
    stake_asset: int | None
    eligibility: dict[str, Any]
    pool_threshold: int
    created_block: int
    created_extrinsic: int
    # the strategy's settings in effect by short name (None: chosen each round), and a
    # stateful strategy's server state beside global_cid
    strategy_params: dict[str, Any] = field(default_factory=dict)
    state_cid: str | None = None
    # when a round counts as an improvement: {"tolerance" (metric units), "unimproved"}
    improvement: dict[str, Any] = field(default_factory=dict)
    # the DP budget spent: {"delta", "epsilon" (the largest), "workers": {account: epsilon}}
    privacy: dict[str, Any] | None = None
    deposit: int = 0  # what each update deposits under the drt policy


@dataclass(frozen=True)
class StakeInfo(_Json):
    """``status`` active (``locked_until`` None) or unbonding (paid out at ``locked_until``)."""

    account: str
    model_id: int
    amount: int
    asset: int | None
    locked_until: int | None
    status: str = "active"


@dataclass(frozen=True)
class ReputationInfo(_Json):
    """A worker's record on one model, derived from the chain alone (so every indexer derives
    the same): its updates a quorum accepted and rejected, the sum of its accepted updates'
    contribution scores (ppm of a round: 10^6 is one whole round's share), and the tokens it
    was paid and slashed there (in the smallest unit of the model's stake asset)."""

    account: str
    model_id: int
    accepted: int
    rejected: int
    score: int
    rewarded: int
    slashed: int


@dataclass(frozen=True)
class ProposalInfo(_Json):
    """``ayes``/``nays`` are stake weights: live while open, frozen at the tally."""

    id: int
    kind: str
    target: int | str  # a model id or "protocol"
    status: str  # open, passed, rejected, void
    ayes: int
    nays: int
    deadline: int
    proposer: str
    params: dict[str, Any]
    voters: int
    note: str = ""


@dataclass(frozen=True)
class AssignmentInfo(_Json):
    account: str
    status: str  # assigned, submitted, accepted, rejected, expired
    submission_id: int | None


@dataclass(frozen=True)
class TaskInfo(_Json):
    id: int
    model_id: int
    creator: str
    role: str
    reward: int
    max_assignments: int
    budget: int
    escrow: int
    asset: int | None
    validation: str
    status: str  # open, closed
    expires_at: int
    review_until: int
    description: str
    assignments: tuple[AssignmentInfo, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class SubmissionInfo(_Json):
    id: int
    task_id: int
    worker: str
    result_cid: str
    status: str  # pending, accepted, rejected, expired
    reason: str
    block_number: int


@dataclass(frozen=True)
class PoolInfo(_Json):
    """A model's pool and what it owes. ``held`` is what the protocol counts as received there
    minus settled payouts; it equals ``obligations`` at all times (sum over ``balances``, which
    also lists earlier pools still awaiting their migration payout). ``obligations`` is stakes
    + unbonding + task_escrow + pending_payouts + round_escrow + deposits + bounties."""

    model_id: int
    pool: str
    signatories: tuple[str, ...]
    threshold: int
    asset_id: int | None
    stakes: int
    unbonding: int
    task_escrow: int
    pending_payouts: int
    obligations: int
    held: int
    balances: tuple[tuple[str, int], ...]
    round_escrow: int = 0  # budgets of live rounds and of open StartRound proposals
    deposits: int = 0  # drt deposits held (awaiting a verdict, or the wait before a refund)
    bounties: int = 0  # prediction markets' bounties not yet paid or refunded


@dataclass(frozen=True)
class ErrorRecord(_Json):
    """A rejected protocol call (it changed nothing)."""

    block_number: int
    extrinsic_index: int
    account: str
    call: str
    reason: str
    batch_index: int = 0


@dataclass(frozen=True)
class UpdateInfo(_Json):
    """A selected worker's weight update; its status follows the validators' verdict."""

    id: int
    round_id: int
    worker: str
    cid: str
    num_examples: int
    status: str  # submitted, accepted, rejected
    contribution: int | None  # ppm of the round's pot, once accepted
    reason: str  # why it was rejected
    block_number: int
    deposit: int = 0  # drt: what it deposited
    # drt: held, refund_due (owed once the wait is over), refunded, taken ("" without one)
    deposit_status: str = ""


@dataclass(frozen=True)
class MarketInfo(_Json):
    """A prediction market over a plan of rounds (``round start --bounty``).

    ``status``: running (its rounds), revealing (until ``reveal_deadline``, the first block
    refusing a reveal), scoring (validators score the revealed test set until
    ``score_deadline``), paid (by each round's gain), forfeited (to the contributors by their
    scores: no reveal, or no quorum of scores, in time) or refunded (to the owner: nobody
    contributed or gained). ``gains``: round id -> the quorum's gain on the test set (the
    model's metric, in its direction); ``paid``: account -> amount.
    """

    market_id: int
    model_id: int
    owner: str
    bounty: int
    commitment: str
    rounds: tuple[int, ...]
    status: str
    reveal_deadline: int | None
    score_deadline: int | None
    test_cid: str | None
    gains: dict[str, float]
    paid: dict[str, int]
    note: str
    created_block: int
    ended_block: int | None
    scored_by: tuple[str, ...] = ()  # validators whose scores are in


@dataclass(frozen=True)
class AttestationInfo(_Json):
    id: int
    round_id: int
    validator: str
    digest: str  # equal digests = the identical result (see calls.Attest.result_digest)
    aggregate_cid: str
    accuracy: float
    loss: float
    accepted: tuple[tuple[str, int], ...]  # (worker, contribution ppm)
    rejected: tuple[tuple[str, str], ...]  # (worker, reason)
    block_number: int
    state_cid: str | None = None
    table_cid: str | None = None  # its verdict table in storage, for a large round


@dataclass(frozen=True)
class RewardInfo(_Json):
    """A contributor's share of a finalized round's pot, paid by ``payout_id`` (None if 0)."""

    id: int
    round_id: int
    model_id: int
    account: str
    amount: int
    contribution: int
    payout_id: int | None


@dataclass(frozen=True)
class SlashInfo(_Json):
    """Stake taken from a worker whose update the validators rejected."""

    id: int
    round_id: int
    model_id: int
    account: str
    amount: int
    stake_before: int
    slash_permill: int
    reason: str
    block_number: int


@dataclass(frozen=True)
class RoundInfo(_Json):
    """A federated round. The first nine fields are CLI.md's ``round status`` JSON.

    ``status``: open (taking updates), aggregating (validators attesting), finalized (the model
    advanced to ``aggregate_cid``), failed (``note`` says why; the budget was refunded).
    ``metrics`` (once ended by a quorum): accuracy and loss as floats and as ppm integers.
    Deadlines are the first block in which updates / attestations are refused.
    """

    round_id: int
    model_id: int
    status: str
    selected: tuple[str, ...]  # in selection order
    submitted: tuple[str, ...]  # in submission order
    aggregate_cid: str | None
    metrics: dict[str, Any]
    rewards: dict[str, int]
    slashes: dict[str, int]
    number: int | None  # the model's round number this round produced, once finalized
    starter: str  # who funded it (refunds go there)
    proposal_id: int | None  # the StartRound proposal that started it, if any
    base_cid: str  # the global weights the clients train from
    clients: int
    min_clients: int
    eligible: int  # how many workers were eligible at the start
    reward: int  # the budget
    escrow: int  # the budget still held (0 once ended)
    hints: dict[str, Any]  # epochs, batch_size, learning_rate
    dp: dict[str, Any] | None  # clip_norm, noise_multiplier, epsilon (of one update), delta
    seed: str
    start_block: int
    submit_deadline: int
    aggregate_deadline: int
    quorum: int  # k of the model's current validators
    validators: int
    digest: str | None
    note: str
    ended_block: int | None
    updates: tuple[UpdateInfo, ...] = field(default_factory=tuple)
    attestations: tuple[AttestationInfo, ...] = field(default_factory=tuple)
    rounds_left: int = 0  # rounds of its StartRounds plan still to open after it
    next_round_id: int | None = None  # the round its plan opened as it ended, if any
    # a stateful strategy's server state: the one it starts from, and the attested one after
    base_state_cid: str | None = None
    state_cid: str | None = None
    # whether the new model was no worse than the base on the model's metric (None: not
    # judged: no update accepted, or validators that report no base metric)
    improved: bool | None = None
    # secure rounds: worker -> {"own": seed, "dropped": {peer: seed}} (RevealSeeds)
    reveals: dict[str, Any] = field(default_factory=dict)
    market_id: int | None = None  # the prediction market of its plan, if any
