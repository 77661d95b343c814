"""The protocol's calls and their wire format: ``b"dfml" + version + call index + SCALE fields``.

Each call is a frozen dataclass checked on construction; ``encode_call``/``decode_call`` convert
to and from remark bytes, rejecting unknown versions or indices, trailing bytes and oversize.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import blake2b
from typing import ClassVar

from .errors import CodecError
from .scale import (
    Account,
    Bool,
    Bytes32,
    Field,
    Option,
    Reader,
    Struct,
    StructField,
    Text,
    UInt,
    Variant,
    Vec,
)

PREFIX = b"dfml"
VERSION = 1
MAX_REMARK_BYTES = 4096
MAX_VALIDATORS = 16
MAX_ALLOW_LIST = 64
# Clients per round: an attestation lists every submitted update and must fit one remark.
MAX_CLIENTS = 64
MAX_REASON_BYTES = 64  # a rejection reason in an attestation
PERMILL = 1_000_000

# Field types, with the bounds every call shares.
ID = UInt(64)
AMOUNT = UInt(128)
ASSET = Option(UInt(32))
BLOCKS = UInt(32)
PERMILL_FIELD = UInt(32, maximum=PERMILL)
CID = Text(128, r"[A-Za-z0-9]{2,128}", min_bytes=2)
TITLE = Text(64, min_bytes=1)
IDENT = Text(32, r"[a-z0-9][a-z0-9_.:-]{0,31}", min_bytes=1)
LICENCE = Text(64, r"[A-Za-z0-9][A-Za-z0-9_.:+()-]{0,63}", min_bytes=1)
JURISDICTIONS = Vec(Text(16, r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,15}", min_bytes=1), 32, unique=True)
ACCOUNTS = Vec(Account(), MAX_VALIDATORS, unique=True)


class Call(Struct):
    """A protocol call. ``INDEX`` is its byte on the wire, ``NAME`` its name in errors/CLI."""

    INDEX: ClassVar[int]
    NAME: ClassVar[str]


class Enum(Field):
    """A one-byte enum carried as its lower-case name in Python."""

    def __init__(self, *names: str):
        self.names = names

    def check(self, value: object, name: str) -> str:
        if value not in self.names:
            raise CodecError(f"{name}: {value!r} is not one of {', '.join(self.names)}")
        return value  # type: ignore[return-value]

    def encode(self, value: str) -> bytes:
        return bytes([self.names.index(value)])

    def decode(self, r: Reader) -> str:
        b = r.take(1)[0]
        if b >= len(self.names):
            raise CodecError(f"unknown enum value {b}")
        return self.names[b]


ROLES = ("data_annotator", "model_contributor", "model_engineer")
VALIDATION = ("auto", "manual")
REWARD_KINDS = ("proportional", "equal")
# Protocol parameters that governance can change, in their wire order (append only).
PARAM_NAMES = (
    "unstake_lock_blocks",
    "quorum_permill",
    "threshold_permill",
    "min_voting_blocks",
    "max_voting_blocks",
    "task_review_blocks",
    "round_submit_blocks",
    "round_aggregate_blocks",
    "critical_quorum_permill",
)


@dataclass(frozen=True)
class RewardPolicy(Struct):
    """How a model rewards contributions (used by rounds): kind, per-round reward, slash rate."""

    kind: str = "proportional"
    round_reward: int = 0
    slash_permill: int = 0
    SCHEMA = (
        ("kind", Enum(*REWARD_KINDS)),
        ("round_reward", AMOUNT),
        ("slash_permill", PERMILL_FIELD),
    )


# Eligible workers of a model: anyone, an allow-list, or a minimum stake on the model.
@dataclass(frozen=True)
class Anyone(Struct):
    INDEX = 0
    NAME = "anyone"


@dataclass(frozen=True)
class AllowList(Struct):
    accounts: tuple[str, ...] = ()
    INDEX = 1
    NAME = "allow_list"
    SCHEMA = (("accounts", Vec(Account(), MAX_ALLOW_LIST, unique=True)),)


@dataclass(frozen=True)
class MinStake(Struct):
    amount: int = 0
    INDEX = 2
    NAME = "min_stake"
    SCHEMA = (("amount", AMOUNT),)


ELIGIBILITY = Variant(Anyone, AllowList, MinStake, what="eligibility")


# Rounds. Real-valued hints are fixed-point millionths (ppm), so state stays integer-only.
@dataclass(frozen=True)
class DpParams(Struct):
    """Differential-privacy parameters recorded for a round: clip norm and noise multiplier."""

    clip_norm_ppm: int = 0
    noise_multiplier_ppm: int = 0
    SCHEMA = (("clip_norm_ppm", UInt(64)), ("noise_multiplier_ppm", UInt(64)))


@dataclass(frozen=True)
class RoundSpec(Struct):
    """What a round asks for: its clients, deadlines, training hints, DP, and reward budget.

    ``submit_blocks``/``aggregate_blocks`` 0 mean the protocol defaults (round_submit_blocks,
    round_aggregate_blocks). ``reward`` is moved into the pool in the same batch.
    """

    clients: int = 1
    min_clients: int = 1
    submit_blocks: int = 0
    aggregate_blocks: int = 0
    epochs: int = 1
    batch_size: int = 32
    learning_rate_ppm: int = 10_000
    dp: DpParams | None = None
    reward: int = 0
    SCHEMA = (
        ("clients", UInt(32, maximum=MAX_CLIENTS)),
        ("min_clients", UInt(32, maximum=MAX_CLIENTS)),
        ("submit_blocks", BLOCKS),
        ("aggregate_blocks", BLOCKS),
        ("epochs", UInt(32, maximum=10_000)),
        ("batch_size", UInt(32)),
        ("learning_rate_ppm", UInt(64)),
        ("dp", Option(StructField(DpParams))),
        ("reward", AMOUNT),
    )


# Proposal actions: the kind and its typed parameters.
class Action(Struct):
    INDEX: ClassVar[int]
    NAME: ClassVar[str]
    PROTOCOL: ClassVar[bool] = False  # True: targets the protocol, not a model


@dataclass(frozen=True)
class ApproveModel(Action):
    INDEX = 0
    NAME = "ApproveModel"


@dataclass(frozen=True)
class RetireModel(Action):
    INDEX = 1
    NAME = "RetireModel"


@dataclass(frozen=True)
class SetRewardPolicy(Action):
    policy: RewardPolicy = RewardPolicy()
    INDEX = 2
    NAME = "SetRewardPolicy"
    SCHEMA = (("policy", StructField(RewardPolicy)),)


@dataclass(frozen=True)
class SetStrategy(Action):
    strategy: str = "fedavg"
    INDEX = 3
    NAME = "SetStrategy"
    SCHEMA = (("strategy", IDENT),)


@dataclass(frozen=True)
class AddValidator(Action):
    account: str = ""
    INDEX = 4
    NAME = "AddValidator"
    SCHEMA = (("account", Account()),)


@dataclass(frozen=True)
class RemoveValidator(Action):
    account: str = ""
    INDEX = 5
    NAME = "RemoveValidator"
    SCHEMA = (("account", Account()),)


@dataclass(frozen=True)
class SetEligibleWorkers(Action):
    eligibility: Struct = Anyone()
    INDEX = 6
    NAME = "SetEligibleWorkers"
    SCHEMA = (("eligibility", ELIGIBILITY),)


@dataclass(frozen=True)
class SetLicence(Action):
    licence: str = ""
    INDEX = 7
    NAME = "SetLicence"
    SCHEMA = (("licence", LICENCE),)


@dataclass(frozen=True)
class SetJurisdictions(Action):
    jurisdictions: tuple[str, ...] = ()
    INDEX = 8
    NAME = "SetJurisdictions"
    SCHEMA = (("jurisdictions", JURISDICTIONS),)


@dataclass(frozen=True)
class SetProtocolParam(Action):
    name: str = ""
    value: int = 0
    INDEX = 9
    NAME = "SetProtocolParam"
    PROTOCOL = True
    SCHEMA = (("name", Enum(*PARAM_NAMES)), ("value", UInt(32)))


@dataclass(frozen=True)
class StartRoundProposal(Action):
    """Proposal kind StartRound: governance starts a round; the proposer funds ``spec.reward``
    in the proposal's batch (refunded if the proposal does not pass or cannot start)."""

    spec: RoundSpec = RoundSpec()
    INDEX = 10
    NAME = "StartRound"
    SCHEMA = (("spec", StructField(RoundSpec)),)


ACTIONS = (
    ApproveModel,
    RetireModel,
    SetRewardPolicy,
    SetStrategy,
    AddValidator,
    RemoveValidator,
    SetEligibleWorkers,
    SetLicence,
    SetJurisdictions,
    SetProtocolParam,
    StartRoundProposal,
)
ACTION = Variant(*ACTIONS, what="proposal kind")


# The calls. Indices 32.. are the round calls (Round, Update, Attestation; Reward and Slash
# are what a finalized round derives).
@dataclass(frozen=True)
class RegisterModel(Call):
    name: str
    architecture_cid: str
    weights_cid: str
    description: str = ""
    metric: str = "accuracy"
    licence: str = "proprietary"
    jurisdictions: tuple[str, ...] = ()
    strategy: str = "fedavg"
    reward_policy: RewardPolicy = RewardPolicy()
    stake_asset: int | None = None
    validators: tuple[str, ...] = ()
    INDEX = 0
    NAME = "register_model"
    SCHEMA = (
        ("name", TITLE),
        ("architecture_cid", CID),
        ("weights_cid", CID),
        ("description", Text(1024)),
        ("metric", IDENT),
        ("licence", LICENCE),
        ("jurisdictions", JURISDICTIONS),
        ("strategy", IDENT),
        ("reward_policy", StructField(RewardPolicy)),
        ("stake_asset", ASSET),
        ("validators", ACCOUNTS),
    )


@dataclass(frozen=True)
class StartTraining(Call):
    model_id: int
    INDEX = 1
    NAME = "start_training"
    SCHEMA = (("model_id", ID),)


@dataclass(frozen=True)
class Stake(Call):
    model_id: int
    amount: int
    asset_id: int | None = None
    INDEX = 2
    NAME = "stake"
    SCHEMA = (("model_id", ID), ("amount", AMOUNT), ("asset_id", ASSET))


@dataclass(frozen=True)
class Unstake(Call):
    model_id: int
    amount: int
    INDEX = 3
    NAME = "unstake"
    SCHEMA = (("model_id", ID), ("amount", AMOUNT))


@dataclass(frozen=True)
class CreateTask(Call):
    model_id: int
    role: str
    reward: int
    max_assignments: int
    duration_blocks: int
    validation: str = "manual"
    description: str = ""
    INDEX = 4
    NAME = "create_task"
    SCHEMA = (
        ("model_id", ID),
        ("role", Enum(*ROLES)),
        ("reward", AMOUNT),
        ("max_assignments", UInt(32, maximum=1024)),
        ("duration_blocks", BLOCKS),
        ("validation", Enum(*VALIDATION)),
        ("description", Text(1024)),
    )


@dataclass(frozen=True)
class AssignTask(Call):
    task_id: int
    INDEX = 5
    NAME = "assign_task"
    SCHEMA = (("task_id", ID),)


@dataclass(frozen=True)
class SubmitResult(Call):
    task_id: int
    result_cid: str
    INDEX = 6
    NAME = "submit_result"
    SCHEMA = (("task_id", ID), ("result_cid", CID))


@dataclass(frozen=True)
class AcceptSubmission(Call):
    submission_id: int
    INDEX = 7
    NAME = "accept_submission"
    SCHEMA = (("submission_id", ID),)


@dataclass(frozen=True)
class RejectSubmission(Call):
    submission_id: int
    reason: str = ""
    INDEX = 8
    NAME = "reject_submission"
    SCHEMA = (("submission_id", ID), ("reason", Text(256)))


@dataclass(frozen=True)
class Propose(Call):
    target: int | None  # a model id, or None for the protocol itself
    action: Action
    voting_blocks: int
    INDEX = 9
    NAME = "propose"
    SCHEMA = (("target", Option(ID)), ("action", ACTION), ("voting_blocks", BLOCKS))


@dataclass(frozen=True)
class Vote(Call):
    proposal_id: int
    aye: bool
    INDEX = 10
    NAME = "vote"
    SCHEMA = (("proposal_id", ID), ("aye", Bool()))


@dataclass(frozen=True)
class SettlePayout(Call):
    payout_id: int
    INDEX = 11
    NAME = "settle_payout"
    SCHEMA = (("payout_id", ID),)


@dataclass(frozen=True)
class StartRound(Call):
    """The model's owner starts a federated round (batch with a transfer of ``spec.reward``)."""

    model_id: int
    spec: RoundSpec = RoundSpec()
    INDEX = 32
    NAME = "start_round"
    SCHEMA = (("model_id", ID), ("spec", StructField(RoundSpec)))


MAX_PLAN = 1000  # rounds one StartRounds call may schedule


@dataclass(frozen=True)
class StartRounds(Call):
    """The owner schedules ``rounds`` federated rounds with one spec, run back to back: each
    next round opens in the block that ends the one before, with no call and no block in
    between (batch with a transfer of ``rounds * spec.reward``). If a next round cannot open
    (the model stopped training, too few eligible workers), the rest of the budget is refunded.
    """

    model_id: int
    spec: RoundSpec = RoundSpec()
    rounds: int = 2
    INDEX = 36
    NAME = "start_rounds"
    SCHEMA = (
        ("model_id", ID),
        ("spec", StructField(RoundSpec)),
        ("rounds", UInt(32, maximum=MAX_PLAN)),
    )


@dataclass(frozen=True)
class SubmitUpdate(Call):
    """A selected worker's weight update: its CID and how many local examples produced it."""

    round_id: int
    cid: str
    num_examples: int
    INDEX = 33
    NAME = "submit_update"
    SCHEMA = (("round_id", ID), ("cid", CID), ("num_examples", UInt(64)))


@dataclass(frozen=True)
class Contribution(Struct):
    """An accepted update (named by its worker) and its contribution score in ppm."""

    account: str
    score: int
    SCHEMA = (("account", Account()), ("score", PERMILL_FIELD))


@dataclass(frozen=True)
class Rejection(Struct):
    """A rejected update (named by its worker) and why: its worker is slashed."""

    account: str
    reason: str
    SCHEMA = (("account", Account()), ("reason", Text(MAX_REASON_BYTES, min_bytes=1)))


@dataclass(frozen=True)
class Attest(Call):
    """A validator's verdict on a round: the aggregate, its metrics and every update judged.

    ``accuracy_ppm`` and ``loss_ppm`` are the new global model's metrics on the validator's
    held-out data, times 10^6. Scores of ``accepted`` sum to 10^6 (when any is accepted).
    """

    round_id: int
    aggregate_cid: str
    accuracy_ppm: int
    loss_ppm: int
    accepted: tuple[Contribution, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    INDEX = 34
    NAME = "attest"
    SCHEMA = (
        ("round_id", ID),
        ("aggregate_cid", CID),
        ("accuracy_ppm", PERMILL_FIELD),
        ("loss_ppm", UInt(64)),
        ("accepted", Vec(StructField(Contribution), MAX_CLIENTS, unique=True)),
        ("rejected", Vec(StructField(Rejection), MAX_CLIENTS, unique=True)),
    )

    def result_digest(self) -> str:
        """The digest of the attested result, independent of list order: validators reach
        quorum when k of them attest the same digest."""
        from .accounts import account_id

        canonical = Attest(
            self.round_id,
            self.aggregate_cid,
            self.accuracy_ppm,
            self.loss_ppm,
            tuple(sorted(self.accepted, key=lambda c: account_id(c.account))),
            tuple(sorted(self.rejected, key=lambda r: account_id(r.account))),
        )
        return "0x" + blake2b(canonical.encode(), digest_size=32).hexdigest()


@dataclass(frozen=True)
class AnnounceKey(Call):
    """The signer's X25519 public key, with which round peers derive the pairwise masks of
    secure aggregation; a later announcement replaces the earlier."""

    public_key: str
    INDEX = 35
    NAME = "announce_key"
    SCHEMA = (("public_key", Bytes32()),)


CALLS: tuple[type[Call], ...] = (
    RegisterModel,
    StartTraining,
    Stake,
    Unstake,
    CreateTask,
    AssignTask,
    SubmitResult,
    AcceptSubmission,
    RejectSubmission,
    Propose,
    Vote,
    SettlePayout,
    StartRound,
    SubmitUpdate,
    Attest,
    AnnounceKey,
    StartRounds,
)
CALL = Variant(*CALLS, what="call")


def is_protocol_remark(remark: bytes) -> bool:
    """True when the remark carries the protocol prefix (the indexer's filter)."""
    return bytes(remark[: len(PREFIX)]) == PREFIX


def encode_call(call: Call) -> bytes:
    """The remark bytes of ``call``; raises CodecError if it would exceed MAX_REMARK_BYTES."""
    CALL.check(call, "call")
    out = PREFIX + bytes([VERSION]) + CALL.encode(call)
    if len(out) > MAX_REMARK_BYTES:
        raise CodecError(f"call encodes to {len(out)} bytes, more than {MAX_REMARK_BYTES}")
    return out


def decode_call(remark: bytes) -> Call:
    """The call carried by remark bytes; raises CodecError with the reason it is invalid."""
    remark = bytes(remark)
    if len(remark) > MAX_REMARK_BYTES:
        raise CodecError(f"remark of {len(remark)} bytes exceeds {MAX_REMARK_BYTES}")
    if not is_protocol_remark(remark):
        raise CodecError("not a protocol remark (missing prefix)")
    if len(remark) == len(PREFIX):
        raise CodecError("missing protocol version")
    version = remark[len(PREFIX)]
    if version != VERSION:
        raise CodecError(f"unknown protocol version {version}")
    r = Reader(remark[len(PREFIX) + 1 :])
    call = CALL.decode(r)
    r.done()
    return call  # type: ignore[return-value]
