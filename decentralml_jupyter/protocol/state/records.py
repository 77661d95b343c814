"""The state's internal records and the small helpers every part of the state machine uses.

Records are mutable dataclasses with JSON-native fields only, so a snapshot is
``dataclasses.asdict`` of each; queries turn them into the frozen values of ``values.py``.
Also here: the rejection a handler raises (``_Reject``/``_require``), the asset keys of the
books (``_akey``/``_asset``) and the custody minimum ``MIN_POOL_SIGNATORIES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .. import calls as C
from ..accounts import pool_address
from ..scale import Reader

# fewer validators than this would make a model's pool one person's account: no funds go in
MIN_POOL_SIGNATORIES = 2
_NATIVE = -1  # the asset key of the native token in the books


class _Reject(Exception):
    """A call breaks a rule: it is rejected with ``reason`` and changes nothing."""

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


@lru_cache(maxsize=1024)
def _pool(owner: str, validators: tuple[str, ...]) -> str:
    return pool_address(owner, validators)


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
    # the strategy's parameters by short name, as checked (absent ones: their defaults)
    strategy_params: dict[str, Any] = field(default_factory=dict)
    state_cid: str | None = None  # a stateful strategy's server state beside global_cid
    # ImprovementRule.to_json() without "type"; None: the default rule
    improvement: dict[str, Any] | None = None
    deposit: int = 0  # what each update deposits under the drt policy

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
    # {"accuracy_ppm", "loss_ppm"} once finalized, and "metric_ppm" (the model's own metric)
    metrics: dict[str, int] | None
    digest: str | None
    number: int | None  # the model's round number it produced, once finalized
    note: str
    ended_block: int | None
    created_block: int
    created_extrinsic: int  # -1 when started by a proposal in a tick
    follow: int = 0  # rounds of a StartRounds plan still to open after this one
    reserve: int = 0  # their reward budget, held in the pool meanwhile
    next_round_id: int | None = None  # the round its plan opened as it ended
    base_state_cid: str | None = None  # the server state beside base_cid (stateful strategies)
    state_cid: str | None = None  # the server state the quorum attested, once finalized
    improved: bool | None = None  # whether it improved the model's metric (None: not judged)
    # secure rounds: worker -> {"own": its own mask seed, "dropped": {peer: pairwise seed}}
    reveals: dict[str, Any] = field(default_factory=dict)
    market_id: int | None = None  # the prediction market of the plan it belongs to
    # drt: the block from which its accepted updates' held deposits are refunded
    deposits_due: int | None = None


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
    deposit: int = 0  # drt: what it deposited with the submission
    # drt: held (until refunded or taken), refund_due (owed after the wait), refunded, taken
    deposit_status: str = ""


@dataclass
class _Market:
    """A prediction market over a plan of rounds (a StartRounds with MarketTerms)."""

    id: int
    model_id: int
    owner: str
    bounty: int  # held in the pool until paid or refunded
    commitment: str
    rounds: list[int]  # the plan's rounds, in order
    # running (its rounds), revealing (awaiting the test set), scoring (awaiting the
    # validators' quorum), paid, forfeited (to contributors), refunded (to the owner)
    status: str
    created_block: int
    reveal_deadline: int | None = None  # first block in which a reveal is refused
    score_deadline: int | None = None  # first block in which a market attestation is refused
    test_cid: str | None = None
    salt: str | None = None
    attestations: list[dict[str, Any]] = field(default_factory=list)  # {validator, digest, scores}
    # round id -> the quorum's gain on the test set (ppm, in the metric's direction)
    gains: dict[str, int] = field(default_factory=dict)
    paid: list[list[Any]] = field(default_factory=list)  # [account, amount, payout id]
    note: str = ""
    ended_block: int | None = None


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
    metric_ppm: int | None = None  # the model's own metric (an AttestMetric's)
    state_cid: str | None = None  # the strategy's server state after the round
    base_metric_ppm: int | None = None  # the model's metric of the round's base model
    table_cid: str | None = None  # the verdict's table in storage (large rounds)


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
