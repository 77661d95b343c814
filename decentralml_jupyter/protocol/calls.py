"""The protocol's calls and their wire format: ``b"dfml" + version + call index + SCALE fields``.

Each call is declared once, here: a frozen dataclass (``@struct``) whose fields each name their
wire type (with its bounds), default and help text (``wire(...)``); the order of the fields is
their order on the wire, and ``SCHEMA`` is derived from them. A call also declares what must
travel with it: ``target_model()`` (the model it names) and ``funds()`` (the value its signer
must transfer into that model's pool in the same atomic batch). Calls are checked on
construction; ``encode_call``/``decode_call`` convert to and from remark bytes, rejecting
unknown versions or indices, trailing bytes and oversize.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import ClassVar

from .errors import CodecError
from .scale import (
    Account,
    Blob,
    Bool,
    Bytes32,
    Field,
    Option,
    Reader,
    Struct,
    StructField,
    Text,
    Trailing,
    UInt,
    Variant,
    Vec,
    encode_compact,
    struct,
    wire,
)

PREFIX = b"dfml"
VERSION = 1
MAX_REMARK_BYTES = 4096
MAX_VALIDATORS = 16
MAX_ALLOW_LIST = 64
# Clients per round. An attestation lists at most MAX_INLINE judged updates inline (one
# remark); a larger verdict goes in a table (VerdictTable) sent in TablePart remarks before it.
MAX_CLIENTS = 4096
MAX_INLINE = 64
MAX_TABLE_PART_BYTES = 4000  # one TablePart's bytes: the part fits one remark
MAX_TABLE_PARTS = 128  # a table of 4096 rejections with 64-byte reasons takes ~100
MAX_REASON_BYTES = 64  # a rejection reason in an attestation
PERMILL = 1_000_000
# Bounds of single fields, for clients (CLI arguments) that check before encoding.
MAX_NAME_BYTES = 64  # a model's name
MAX_DESCRIPTION_BYTES = 1024  # a model's or a task's description
MAX_DECISION_BYTES = 256  # the reason given when rejecting a task submission
MAX_ASSIGNMENTS = 1024  # workers one task may take
MAX_EPOCHS = 10_000  # local epochs a round may ask for
MAX_PLAN = 1000  # rounds one StartRounds call may schedule

# Field types, with the bounds every call shares.
ID = UInt(64)
AMOUNT = UInt(128)
ASSET = Option(UInt(32))
BLOCKS = UInt(32)
PERMILL_FIELD = UInt(32, maximum=PERMILL)
CID = Text(128, r"[A-Za-z0-9]{2,128}", min_bytes=2)
TITLE = Text(MAX_NAME_BYTES, min_bytes=1)
DESCRIPTION = Text(MAX_DESCRIPTION_BYTES)
IDENT = Text(32, r"[a-z0-9][a-z0-9_.:-]{0,31}", min_bytes=1)
LICENCE = Text(64, r"[A-Za-z0-9][A-Za-z0-9_.:+()-]{0,63}", min_bytes=1)
JURISDICTIONS = Vec(Text(16, r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,15}", min_bytes=1), 32, unique=True)
ACCOUNTS = Vec(Account(), MAX_VALIDATORS, unique=True)
MAX_STRATEGY_PARAMS = 8
NUMBER = Text(24, r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]{1,3})?", min_bytes=1)


class Call(Struct):
    """A protocol call. ``INDEX`` is its byte on the wire, ``NAME`` its name in errors/CLI.

    What travels with it, for clients (``ProtocolClient.send``) to build its batch from:

    - ``target_model()``: the model the call names by id (None: none, or the protocol).
    - ``funds()``: the value the signer must transfer into that model's pool, in the model's
      stake asset, in the same atomic batch (0: none).
    - ``pays_pool()``: whether that transfer goes with this call (by default when funds() > 0;
      always for calls the protocol takes only with value, even an invalid amount of 0).
    - ``FUNDED``: calls of this kind move value into their model's pool, so a client looks
      the model up before sending even when this one moves nothing (an unknown model is
      refused there, not on chain for a fee).
    - ``ASSET_FIELD``: the field naming the asset of the funds, if the call names one: None
      there means the model's stake asset, any other asset is refused.
    """

    INDEX: ClassVar[int]
    NAME: ClassVar[str]
    FUNDED: ClassVar[bool] = False
    ASSET_FIELD: ClassVar[str | None] = None

    def target_model(self) -> int | None:
        return None

    def funds(self) -> int:
        return 0

    def pays_pool(self) -> bool:
        return self.funds() > 0


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
# proportional: by contribution score; equal: the same to each accepted update; reputation: by
# contribution score weighted by the worker's reputation on the model before the round (its
# accepted updates' scores summed), which at most doubles a share; drt (Deposit, Refund and
# Take): proportional, and every update carries the model's deposit, refunded
# deposit_wait_blocks after an accepted verdict and shared among the round's accepted
# contributors when rejected; prediction-market: proportional, and a plan of rounds may carry
# a bounty paid after it by each round's improvement on a test set the owner committed to
REWARD_KINDS = ("proportional", "equal", "reputation", "drt", "prediction-market")
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
    "deposit_wait_blocks",
    "reveal_blocks",
)


# What a model registered from the CLI or a Session slashes a rejected update's worker by
# default: 10% of its stake on the model (the wire itself has no default: a policy states it).
DEFAULT_SLASH_PPM = 100_000


@struct
class RewardPolicy(Struct):
    """How a model rewards contributions (used by rounds): kind, per-round reward, slash rate."""

    kind: str = wire(
        Enum(*REWARD_KINDS),
        "proportional",
        help="split of a round's reward: " + ", ".join(REWARD_KINDS),
    )
    round_reward: int = wire(AMOUNT, 0, help="minimum budget of a round")
    slash_permill: int = wire(
        PERMILL_FIELD, 0, help="share of a worker's stake slashed for a rejected update (ppm)"
    )


UNIMPROVED = ("adopt", "reject")


@struct
class ImprovementRule(Struct):
    """When a round's new model counts as an improvement, and what a round that is not one
    does. The model's metric of the new model and of the round's base model, both on the
    validators' held-out data, are compared in the metric's direction (higher accuracy, lower
    loss or mae): a gain of at least ``-tolerance_ppm`` (in millionths of the metric's unit;
    0: not worse) is an improvement, and only then are contributors rewarded and rejected
    updates slashed. Otherwise the round pays nobody, slashes nobody and its budget goes back
    to its starter; ``unimproved`` says whether its model is adopted anyway (``adopt``) or not
    (``reject``: the round fails and the model stays where it was)."""

    tolerance_ppm: int = wire(UInt(64), 0, help="worsening still counted as no loss (ppm)")
    unimproved: str = wire(
        Enum(*UNIMPROVED), "adopt", help="a round without improvement: adopt or reject its model"
    )


DEFAULT_IMPROVEMENT = ImprovementRule()


# Eligible workers of a model: anyone, an allow-list, a minimum stake on the model, or a
# minimum reputation there (see State.reputation).
@struct
class Anyone(Struct):
    INDEX = 0
    NAME = "anyone"


@struct
class AllowList(Struct):
    accounts: tuple[str, ...] = wire(
        Vec(Account(), MAX_ALLOW_LIST, unique=True), (), help="the accounts that may work"
    )
    INDEX = 1
    NAME = "allow_list"


@struct
class MinStake(Struct):
    amount: int = wire(AMOUNT, 0, help="the least active stake on the model a worker needs")
    INDEX = 2
    NAME = "min_stake"


@struct
class MinReputation(Struct):
    score: int = wire(
        UInt(64),
        0,
        help="the least reputation on the model a worker needs: its accepted updates' "
        "contribution scores summed (ppm; 10^6 is one whole round's share)",
    )
    INDEX = 3
    NAME = "min_reputation"


ELIGIBILITY = Variant(Anyone, AllowList, MinStake, MinReputation, what="eligibility")


# Rounds. Real-valued hints are fixed-point millionths (ppm), so state stays integer-only.
@struct
class DpParams(Struct):
    """Differential-privacy parameters recorded for a round: clip norm and noise multiplier."""

    clip_norm_ppm: int = wire(UInt(64), 0, help="clip updates to this L2 norm (ppm)")
    noise_multiplier_ppm: int = wire(UInt(64), 0, help="DP noise scale (ppm)")


@struct
class RoundSpec(Struct):
    """What a round asks for: its clients, deadlines, training hints, DP, and reward budget.

    ``submit_blocks``/``aggregate_blocks`` 0 mean the protocol defaults (round_submit_blocks,
    round_aggregate_blocks). ``reward`` is moved into the pool in the same batch.
    """

    clients: int = wire(UInt(32, maximum=MAX_CLIENTS), 1, help="workers to select")
    min_clients: int = wire(
        UInt(32, maximum=MAX_CLIENTS), 1, help="fewest eligible workers the round needs"
    )
    submit_blocks: int = wire(BLOCKS, 0, help="blocks to submit updates (0: protocol's)")
    aggregate_blocks: int = wire(BLOCKS, 0, help="blocks to attest (0: protocol's)")
    epochs: int = wire(UInt(32, maximum=MAX_EPOCHS), 1, help="local epochs per update")
    batch_size: int = wire(UInt(32), 32, help="local batch size")
    learning_rate_ppm: int = wire(UInt(64), 10_000, help="learning rate (ppm)")
    dp: DpParams | None = wire(Option(StructField(DpParams)), None, help="DP parameters")
    reward: int = wire(AMOUNT, 0, help="budget paid to contributors (per round)")


@struct
class StrategyParam(Struct):
    """One setting of a model's strategy by its short name (``mu``, ``f``, ``keep``, ``beta``,
    ``eta``, ``beta_1``, ``beta_2``, ``tau``, ``momentum``) and its value as a decimal number;
    which names a strategy takes and their ranges are ``fl.strategies.check_params``'."""

    name: str = wire(Text(16, r"[a-z][a-z0-9_]{0,15}", min_bytes=1), help="the parameter")
    value: str = wire(NUMBER, help="its value, a decimal number")


STRATEGY_PARAMS = Vec(StructField(StrategyParam), MAX_STRATEGY_PARAMS, unique=True)


# Proposal actions: the kind and its typed parameters.
class Action(Struct):
    INDEX: ClassVar[int]
    NAME: ClassVar[str]
    PROTOCOL: ClassVar[bool] = False  # True: targets the protocol, not a model

    def funds(self) -> int:
        """The value the proposer moves into the target model's pool with the proposal."""
        return 0


@struct
class ApproveModel(Action):
    INDEX = 0
    NAME = "ApproveModel"


@struct
class RetireModel(Action):
    INDEX = 1
    NAME = "RetireModel"


@struct
class SetRewardPolicy(Action):
    policy: RewardPolicy = wire(StructField(RewardPolicy), RewardPolicy(), help="the new policy")
    INDEX = 2
    NAME = "SetRewardPolicy"


@struct
class SetStrategy(Action):
    strategy: str = wire(IDENT, "fedavg", help="aggregation strategy (e.g. fedavg:secure)")
    INDEX = 3
    NAME = "SetStrategy"


@struct
class AddValidator(Action):
    account: str = wire(Account(), "", help="the validator to add")
    INDEX = 4
    NAME = "AddValidator"


@struct
class RemoveValidator(Action):
    account: str = wire(Account(), "", help="the validator to remove")
    INDEX = 5
    NAME = "RemoveValidator"


@struct
class SetEligibleWorkers(Action):
    eligibility: Struct = wire(
        ELIGIBILITY, Anyone(), help="anyone, an allow-list, a minimum stake or reputation"
    )
    INDEX = 6
    NAME = "SetEligibleWorkers"


@struct
class SetLicence(Action):
    licence: str = wire(LICENCE, "", help="the model's licence")
    INDEX = 7
    NAME = "SetLicence"


@struct
class SetJurisdictions(Action):
    jurisdictions: tuple[str, ...] = wire(JURISDICTIONS, (), help="where the model may be used")
    INDEX = 8
    NAME = "SetJurisdictions"


@struct
class SetProtocolParam(Action):
    name: str = wire(Enum(*PARAM_NAMES), "", help="the parameter: " + ", ".join(PARAM_NAMES))
    value: int = wire(UInt(32), 0, help="its new value")
    INDEX = 9
    NAME = "SetProtocolParam"
    PROTOCOL = True


@struct
class StartRoundProposal(Action):
    """Proposal kind StartRound: governance starts a round; the proposer funds ``spec.reward``
    in the proposal's batch (refunded if the proposal does not pass or cannot start)."""

    spec: RoundSpec = wire(StructField(RoundSpec), RoundSpec(), help="the round")
    INDEX = 10
    NAME = "StartRound"

    def funds(self) -> int:
        return self.spec.reward


@struct
class ConfigureStrategy(Action):
    """SetStrategy with the strategy's parameters (absent ones take their defaults)."""

    strategy: str = wire(IDENT, "fedavg", help="aggregation strategy (e.g. fedadam:secure)")
    params: tuple[StrategyParam, ...] = wire(STRATEGY_PARAMS, (), help="its parameters")
    INDEX = 11
    NAME = "ConfigureStrategy"


@struct
class SetImprovementRule(Action):
    """Change when a round of the model counts as an improvement (see ImprovementRule)."""

    rule: ImprovementRule = wire(
        StructField(ImprovementRule), DEFAULT_IMPROVEMENT, help="the new rule"
    )
    INDEX = 12
    NAME = "SetImprovementRule"


@struct
class SetDeposit(Action):
    """Change what each update to the model deposits under the ``drt`` policy."""

    deposit: int = wire(AMOUNT, 0, help="the deposit every update carries (stake asset)")
    INDEX = 13
    NAME = "SetDeposit"


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
    ConfigureStrategy,
    SetImprovementRule,
    SetDeposit,
)
ACTION = Variant(*ACTIONS, what="proposal kind")


# The calls. Indices 32.. are the round calls (Round, Update, Attestation; Reward and Slash
# are what a finalized round derives).
@struct
class RegisterModel(Call):
    name: str = wire(TITLE, help="the model's name")
    architecture_cid: str = wire(CID, help="CID of the architecture spec")
    weights_cid: str = wire(CID, help="CID of the initial weights")
    description: str = wire(DESCRIPTION, "", help="what the model is for")
    metric: str = wire(IDENT, "accuracy", help="the metric validators report")
    licence: str = wire(LICENCE, "proprietary", help="the model's licence")
    jurisdictions: tuple[str, ...] = wire(JURISDICTIONS, (), help="where it may be used")
    strategy: str = wire(IDENT, "fedavg", help="aggregation strategy")
    reward_policy: RewardPolicy = wire(
        StructField(RewardPolicy), RewardPolicy(), help="how rounds reward and slash"
    )
    stake_asset: int | None = wire(
        ASSET, None, help="Assets id stakes and budgets are paid in (None: native)"
    )
    validators: tuple[str, ...] = wire(ACCOUNTS, (), help="the initial validators")
    strategy_params: tuple[StrategyParam, ...] = wire(
        Trailing(STRATEGY_PARAMS, ()), (), help="the strategy's parameters (none: defaults)"
    )
    improvement: ImprovementRule | None = wire(
        Trailing(Option(StructField(ImprovementRule)), None),
        None,
        help="when a round improves the model (None: the default rule, tolerance 0, adopt)",
    )
    deposit: int = wire(
        Trailing(AMOUNT, 0), 0, help="what each update deposits under the drt policy"
    )
    INDEX = 0
    NAME = "register_model"


@struct
class StartTraining(Call):
    model_id: int = wire(ID, help="the model")
    INDEX = 1
    NAME = "start_training"

    def target_model(self) -> int | None:
        return self.model_id


@struct
class Stake(Call):
    """Batch with a transfer of exactly ``amount`` (the model's stake asset) to its pool."""

    model_id: int = wire(ID, help="the model")
    amount: int = wire(AMOUNT, help="the amount to stake")
    asset_id: int | None = wire(ASSET, None, help="the model's stake asset (None: native)")
    INDEX = 2
    NAME = "stake"
    FUNDED = True
    ASSET_FIELD = "asset_id"

    def target_model(self) -> int | None:
        return self.model_id

    def funds(self) -> int:
        return self.amount

    def pays_pool(self) -> bool:
        return True


@struct
class Unstake(Call):
    model_id: int = wire(ID, help="the model")
    amount: int = wire(AMOUNT, help="the amount to release")
    INDEX = 3
    NAME = "unstake"

    def target_model(self) -> int | None:
        return self.model_id


@struct
class CreateTask(Call):
    """Batch with a transfer of ``reward * max_assignments`` (the budget) to the pool."""

    model_id: int = wire(ID, help="the model")
    role: str = wire(Enum(*ROLES), help="who does it: " + ", ".join(ROLES))
    reward: int = wire(AMOUNT, help="paid per accepted result")
    max_assignments: int = wire(UInt(32, maximum=MAX_ASSIGNMENTS), help="workers that may take it")
    duration_blocks: int = wire(BLOCKS, help="blocks until it expires")
    validation: str = wire(
        Enum(*VALIDATION),
        "manual",
        help="who decides: manual (the creator) or auto (also validators)",
    )
    description: str = wire(DESCRIPTION, "", help="what to do")
    INDEX = 4
    NAME = "create_task"
    FUNDED = True

    def target_model(self) -> int | None:
        return self.model_id

    def funds(self) -> int:
        return self.reward * self.max_assignments

    def pays_pool(self) -> bool:
        return True


@struct
class AssignTask(Call):
    task_id: int = wire(ID, help="the task")
    INDEX = 5
    NAME = "assign_task"


@struct
class SubmitResult(Call):
    task_id: int = wire(ID, help="the task")
    result_cid: str = wire(CID, help="the result's CID")
    INDEX = 6
    NAME = "submit_result"


@struct
class AcceptSubmission(Call):
    submission_id: int = wire(ID, help="the submission (pays its reward)")
    INDEX = 7
    NAME = "accept_submission"


@struct
class RejectSubmission(Call):
    submission_id: int = wire(ID, help="the submission")
    reason: str = wire(Text(MAX_DECISION_BYTES), "", help="why")
    INDEX = 8
    NAME = "reject_submission"


@struct
class Propose(Call):
    """A StartRound proposal carries its round's reward (held until the tally) to the pool."""

    target: int | None = wire(Option(ID), help="a model id, or None for the protocol itself")
    action: Action = wire(ACTION, help="the proposal kind and its parameters")
    voting_blocks: int = wire(BLOCKS, help="voting period in blocks")
    INDEX = 9
    NAME = "propose"

    def target_model(self) -> int | None:
        return self.target

    def funds(self) -> int:
        return self.action.funds()


@struct
class Vote(Call):
    proposal_id: int = wire(ID, help="the proposal")
    aye: bool = wire(Bool(), help="aye (True) or nay (False)")
    INDEX = 10
    NAME = "vote"


@struct
class SettlePayout(Call):
    payout_id: int = wire(ID, help="the payout the pool executes with this remark")
    INDEX = 11
    NAME = "settle_payout"


@struct
class StartRound(Call):
    """The model's owner starts a federated round (batch with a transfer of ``spec.reward``)."""

    model_id: int = wire(ID, help="the model")
    spec: RoundSpec = wire(StructField(RoundSpec), RoundSpec(), help="the round")
    INDEX = 32
    NAME = "start_round"
    FUNDED = True

    def target_model(self) -> int | None:
        return self.model_id

    def funds(self) -> int:
        return self.spec.reward


@struct
class MarketTerms(Struct):
    """A prediction market over a plan of rounds: the bounty the owner puts up and its
    commitment to a hidden test set, ``market_commitment(cid, salt)``."""

    bounty: int = wire(AMOUNT, help="paid after the plan by each round's improvement")
    commitment: str = wire(Bytes32(), help="blake2b-256 of the test set's CID and a salt")


COMMIT_TAG = b"dfml/test-set"
MAX_SALT_BYTES = 64


def market_commitment(cid: str, salt: str) -> str:
    """The commitment to a test set: blake2b-256 of a tag, its CID and a salt (0x-hex)."""
    raw = bytes.fromhex(salt.removeprefix("0x"))
    return "0x" + blake2b(COMMIT_TAG + cid.encode() + raw, digest_size=32).hexdigest()


@struct
class StartRounds(Call):
    """The owner schedules ``rounds`` federated rounds with one spec, run back to back: each
    next round opens in the block that ends the one before, with no call and no block in
    between (batch with a transfer of ``rounds * spec.reward``). If a next round cannot open
    (the model stopped training, too few eligible workers), the rest of the budget is refunded.
    """

    model_id: int = wire(ID, help="the model")
    spec: RoundSpec = wire(StructField(RoundSpec), RoundSpec(), help="each round")
    rounds: int = wire(
        UInt(32, maximum=MAX_PLAN), 2, help=f"rounds to run back to back (1..{MAX_PLAN})"
    )
    market: MarketTerms | None = wire(
        Trailing(Option(StructField(MarketTerms)), None),
        None,
        help="a prediction market's bounty and test-set commitment (prediction-market models)",
    )
    INDEX = 36
    NAME = "start_rounds"
    FUNDED = True

    def target_model(self) -> int | None:
        return self.model_id

    def funds(self) -> int:
        bounty = 0 if self.market is None else self.market.bounty
        return self.spec.reward * self.rounds + bounty


@struct
class SubmitUpdate(Call):
    """A selected worker's weight update: its CID and how many local examples produced it."""

    round_id: int = wire(ID, help="the round")
    cid: str = wire(CID, help="the update's CID")
    num_examples: int = wire(UInt(64), help="local examples behind it")
    deposit: int = wire(
        Trailing(AMOUNT, 0), 0, help="the model's deposit under drt (a transfer in the batch)"
    )
    INDEX = 33
    NAME = "submit_update"


# Updates one SubmitUpdates carries: 40 entries of ~100 bytes (an account, a CID of up to 60
# characters, a count) keep it within a remark
MAX_DELEGATED = 40


@struct
class DelegatedUpdate(Struct):
    """One worker's update in a host's SubmitUpdates."""

    account: str = wire(Account(), help="the worker whose update it is")
    cid: str = wire(CID, help="the update's CID")
    num_examples: int = wire(UInt(64), help="local examples behind it")


@struct
class SubmitUpdates(Call):
    """A host's updates for workers that delegated their updates to it (DelegateUpdates),
    or its own: one remark for up to MAX_DELEGATED updates of one round instead of a
    (proxied) submit_update each. Each entry is taken or refused on its own, by the rules of
    submit_update; a model under drt takes none (each update carries its worker's deposit)."""

    round_id: int = wire(ID, help="the round")
    updates: tuple[DelegatedUpdate, ...] = wire(
        Vec(StructField(DelegatedUpdate), MAX_DELEGATED, unique=True),
        help="the updates, each naming its worker",
    )
    INDEX = 42
    NAME = "submit_updates"


@struct
class DelegateUpdates(Call):
    """The signer lets ``host`` submit its updates (SubmitUpdates) until it names another
    host or none. The host can send any update under the worker's name (and so have it
    slashed) but is never paid for it: rewards go to the worker."""

    host: str | None = wire(
        Option(Account()), None, help="who may submit the signer's updates (none: revoke)"
    )
    INDEX = 43
    NAME = "delegate_updates"


@struct
class Contribution(Struct):
    """An accepted update (named by its worker) and its contribution score in ppm."""

    account: str = wire(Account(), help="the worker")
    score: int = wire(PERMILL_FIELD, help="its share of the round (ppm)")


@struct
class Rejection(Struct):
    """A rejected update (named by its worker) and why: its worker is slashed."""

    account: str = wire(Account(), help="the worker")
    reason: str = wire(Text(MAX_REASON_BYTES, min_bytes=1), help="why its update was rejected")


@struct
class _Verdict(Call):
    """What every attestation holds: a validator's verdict on a round, the aggregate, its
    metrics and every update judged."""

    round_id: int = wire(ID, help="the round")
    aggregate_cid: str = wire(CID, help="the new global model's CID")
    accuracy_ppm: int = wire(PERMILL_FIELD, help="its accuracy (ppm)")
    loss_ppm: int = wire(UInt(64), help="its loss (ppm)")
    accepted: tuple[Contribution, ...] = wire(
        Vec(StructField(Contribution), MAX_INLINE, unique=True), (), help="accepted updates"
    )
    rejected: tuple[Rejection, ...] = wire(
        Vec(StructField(Rejection), MAX_INLINE, unique=True), (), help="rejected updates"
    )

    def judged(self, table: VerdictTable | None = None):
        """(accepted, rejected): the call's own lists, or its table's when it has one."""
        if table is not None:
            return table.accepted, table.rejected
        return self.accepted, self.rejected

    def result_digest(self, table: VerdictTable | None = None) -> str:
        """The digest of what the quorum must agree on exactly: the round, the aggregate's
        CID, which updates were accepted, which rejected and why, and the server state's CID,
        independent of list order. Validators reach quorum when k of them attest the same
        digest. Everything computed by evaluating a model (metrics, contribution scores, the
        base model's metric) is reported beside it and not compared bit for bit, because
        machines differ in the last bits of a float: the quorum's reports are combined by
        their median (see the state's rounds)."""
        from .accounts import account_id

        listed, refused = self.judged(table)
        accepted = sorted(account_id(c.account) for c in listed)
        rejected = sorted(refused, key=lambda r: account_id(r.account))
        exact = (
            b"dfml-verdict/2"
            + ID.encode(self.round_id)
            + CID.encode(self.aggregate_cid)
            + encode_compact(len(accepted))
            + b"".join(accepted)
            + Vec(StructField(Rejection), MAX_CLIENTS).encode(tuple(rejected))
            + Option(CID).encode(self.state_cid)  # type: ignore[attr-defined]
        )
        return "0x" + blake2b(exact, digest_size=32).hexdigest()

    def metric_value(self) -> int | None:
        """The model's own metric (ppm), for models whose metric is neither accuracy nor
        loss (see AttestMetric)."""
        return None


@struct
class VerdictTable(Struct):
    """Every update a validator judged in a round too large to list inline: its canonical
    SCALE bytes (both lists sorted by account) are sent in ``TablePart`` remarks before the
    attestation, in the same batch, and stored in storage; the attestation names them by
    ``TableRef``."""

    accepted: tuple[Contribution, ...] = wire(
        Vec(StructField(Contribution), MAX_CLIENTS, unique=True), (), help="accepted updates"
    )
    rejected: tuple[Rejection, ...] = wire(
        Vec(StructField(Rejection), MAX_CLIENTS, unique=True), (), help="rejected updates"
    )


@struct
class TableRef(Struct):
    """An attestation's table: its CID in storage and the blake2b-256 of its bytes."""

    cid: str = wire(CID, help="the table's CID in storage")
    digest: str = wire(Bytes32(), help="blake2b-256 of the table's bytes")


@struct
class TablePart(Call):
    """A part of a validator's verdict table (``VerdictTable`` bytes, in order), sent in the
    same batch as, and before, the attestation that names the table. Parts live only until the
    end of their extrinsic: an attestation takes its signer's parts sent before it there."""

    round_id: int = wire(ID, help="the round")
    data: str = wire(Blob(MAX_TABLE_PART_BYTES, min_bytes=1), help="the part's bytes (0x-hex)")
    INDEX = 39
    NAME = "table_part"


STATE_CID = Trailing(Option(CID), None)
STATE_HELP = "CID of the strategy's server state after the round (stateful strategies)"
BASE_METRIC = Trailing(Option(UInt(64)), None)
BASE_HELP = "the model's metric of the round's base model on the same data (ppm)"
TABLE = Trailing(Option(StructField(TableRef)), None)
TABLE_HELP = "the verdict's table, sent in table_part remarks before it (large rounds)"


@struct
class Attest(_Verdict):
    """A validator's verdict on a round: the aggregate, its metrics and every update judged.

    ``accuracy_ppm`` and ``loss_ppm`` are the new global model's metrics on the validator's
    held-out data, times 10^6. Scores of ``accepted`` sum to 10^6 (when any is accepted).
    ``state_cid``: the server state a stateful strategy (FedAdam, FedYogi, FedAvgM) carries
    into the next round, stored beside the aggregate and agreed on with it.
    """

    state_cid: str | None = wire(STATE_CID, None, help=STATE_HELP)
    base_metric_ppm: int | None = wire(BASE_METRIC, None, help=BASE_HELP)
    table: TableRef | None = wire(TABLE, None, help=TABLE_HELP)
    INDEX = 34
    NAME = "attest"


@struct
class AttestMetric(_Verdict):
    """An attestation that also carries the model's own metric (its Keras name is the
    model's ``metric``: mae, auc, ...) on the validator's held-out data, times 10^6; for
    models whose metric is neither accuracy nor the loss. Like every metric, it is reported
    beside the digest and combined by the quorum's median."""

    metric_ppm: int = wire(UInt(64), 0, help="the model's own metric (ppm)")
    state_cid: str | None = wire(STATE_CID, None, help=STATE_HELP)
    base_metric_ppm: int | None = wire(BASE_METRIC, None, help=BASE_HELP)
    table: TableRef | None = wire(TABLE, None, help=TABLE_HELP)
    INDEX = 37
    NAME = "attest_metric"

    def metric_value(self) -> int | None:
        return self.metric_ppm


@struct
class AnnounceKey(Call):
    """The signer's X25519 public key, with which round peers derive the pairwise masks of
    secure aggregation; a later announcement replaces the earlier."""

    public_key: str = wire(Bytes32(), help="X25519 public key (32 bytes, 0x-hex)")
    INDEX = 35
    NAME = "announce_key"


MAX_REVEALED = 56  # dropped peers one reveal may name: 56 seeds keep it within a remark


@struct
class PeerSeed(Struct):
    """The pairwise mask seed a worker shared with a peer that dropped out of the round."""

    peer: str = wire(Account(), help="the dropped peer")
    seed: str = wire(Bytes32(), help="their pairwise seed (32 bytes, 0x-hex)")


@struct
class RevealSeeds(Call):
    """A worker whose masked update is in a secure round reveals, once the round stopped
    taking updates, what validators need to read the sum: its own mask seed, and its seed
    shared with each selected worker that did not submit (their masks would not cancel). A
    dropped worker's own seed is never revealed, so an update it may have left in storage
    stays hidden."""

    round_id: int = wire(ID, help="the round")
    own_seed: str = wire(Bytes32(), help="the worker's own mask seed for the round")
    dropped: tuple[PeerSeed, ...] = wire(
        Vec(StructField(PeerSeed), MAX_REVEALED, unique=True), (), help="seeds with dropped"
    )
    INDEX = 38
    NAME = "reveal_seeds"


@struct
class RevealTestSet(Call):
    """The owner reveals a prediction market's test set after the plan's last round: its CID
    and the salt of the commitment (the test set must be in storage under that CID)."""

    model_id: int = wire(ID, help="the model whose market awaits its reveal")
    test_cid: str = wire(CID, help="the test set's CID")
    salt: str = wire(Blob(MAX_SALT_BYTES, min_bytes=16), help="the commitment's salt (0x-hex)")
    INDEX = 40
    NAME = "reveal_test_set"

    def target_model(self) -> int | None:
        return self.model_id


@struct
class RoundScore(Struct):
    """A round's model and its base model scored on a revealed test set (the model's
    metric, ppm)."""

    round_id: int = wire(ID, help="the round")
    base_ppm: int = wire(UInt(64), help="the metric of the round's base model")
    new_ppm: int = wire(UInt(64), help="the metric of the model the round produced")


MAX_MARKET_ROUNDS = 128  # rounds one market attestation scores (one remark)


@struct
class AttestMarket(Call):
    """A validator's scores of a prediction market's rounds on its revealed test set: every
    rewarded round of the plan, in id order. k validators agreeing on the rounds and the test
    set settle the bounty by the median of their scores."""

    market_id: int = wire(ID, help="the market")
    test_cid: str = wire(CID, help="the revealed test set it scored on")
    scores: tuple[RoundScore, ...] = wire(
        Vec(StructField(RoundScore), MAX_MARKET_ROUNDS, unique=True), (), help="per round"
    )
    INDEX = 41
    NAME = "attest_market"

    def result_digest(self) -> str:
        """What k validators must agree on exactly: the market, the test set, the rounds."""
        exact = (
            b"dfml-market/1"
            + ID.encode(self.market_id)
            + CID.encode(self.test_cid)
            + b"".join(ID.encode(s.round_id) for s in self.scores)
        )
        return "0x" + blake2b(exact, digest_size=32).hexdigest()


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
    AttestMetric,
    RevealSeeds,
    TablePart,
    RevealTestSet,
    AttestMarket,
    SubmitUpdates,
    DelegateUpdates,
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
