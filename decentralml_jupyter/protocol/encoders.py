"""Remark bytes for each protocol call, for clients (the CLI wraps them in ``batch_all``).

Each function builds the call object declared in ``calls`` and encodes it. Calls that move
value (stake, create_task, start_round(s), a StartRound proposal, settle_payout) count only if
the batch also holds the matching transfer: the call's ``funds()`` into its model's pool
(``ProtocolClient.send`` attaches it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from hashlib import blake2b
from typing import Any

from . import calls as C
from .errors import CodecError
from .values import Payout


def registration(
    name: str, architecture_cid: str, weights_cid: str, **fields: Any
) -> C.RegisterModel:
    """A ``RegisterModel`` call. ``fields`` are its keyword fields (description, metric,
    licence, jurisdictions, strategy, reward_policy, stake_asset, validators: see the class
    for their defaults); lists may be any sequence, and a ``reward_policy`` of None is the
    default policy."""
    for key in ("jurisdictions", "validators"):
        if key in fields:
            fields[key] = tuple(fields[key])
    if fields.get("reward_policy", ...) is None:
        del fields["reward_policy"]
    if "strategy_params" in fields:
        fields["strategy_params"] = strategy_params(fields["strategy_params"])
    if isinstance(fields.get("improvement"), Mapping):
        fields["improvement"] = improvement_rule(**fields["improvement"])
    return C.RegisterModel(name, architecture_cid, weights_cid, **fields)


def strategy_params(params: Mapping[str, Any] | Any) -> tuple[C.StrategyParam, ...]:
    """A strategy's parameters (a mapping of short name to number or text, or already
    ``StrategyParam``s) as the wire's sorted tuple; numbers are written as decimal text that
    reads back as the same float (``repr``)."""
    if not isinstance(params, Mapping):
        return tuple(params)
    out = []
    for name, value in sorted(params.items()):
        if isinstance(value, bool):
            raise CodecError(f"strategy parameter {name} must be a number, got {value!r}")
        text = repr(value) if isinstance(value, float) else str(value).strip()
        out.append(C.StrategyParam(str(name), text))
    return tuple(out)


def improvement_rule(tolerance: float = 0.0, unimproved: str = "adopt") -> C.ImprovementRule:
    """An ImprovementRule from a tolerance in the metric's own unit (e.g. 0.01 accuracy)."""
    if not tolerance >= 0:
        raise CodecError(f"the improvement tolerance must be >= 0, got {tolerance}")
    return C.ImprovementRule(ppm(tolerance), unimproved)


def register_model(name: str, architecture_cid: str, weights_cid: str, **fields: Any) -> bytes:
    """The remark of :func:`registration` (the same keyword fields)."""
    return C.encode_call(registration(name, architecture_cid, weights_cid, **fields))


def start_training(model_id: int) -> bytes:
    return C.encode_call(C.StartTraining(model_id))


def stake(model_id: int, amount: int, asset_id: int | None = None) -> bytes:
    """Batch with a transfer of exactly ``amount`` from the signer to the model's pool."""
    return C.encode_call(C.Stake(model_id, amount, asset_id))


def unstake(model_id: int, amount: int) -> bytes:
    return C.encode_call(C.Unstake(model_id, amount))


def create_task(
    model_id: int, role: str, reward: int, max_assignments: int, duration_blocks: int, **fields
) -> bytes:
    """Batch with a transfer of ``reward * max_assignments`` to the model's pool. ``fields``:
    ``validation`` and ``description`` (keywords; see ``CreateTask`` for their defaults)."""
    return C.encode_call(
        C.CreateTask(model_id, role, reward, max_assignments, duration_blocks, **fields)
    )


def assign_task(task_id: int) -> bytes:
    return C.encode_call(C.AssignTask(task_id))


def submit_result(task_id: int, result_cid: str) -> bytes:
    return C.encode_call(C.SubmitResult(task_id, result_cid))


def accept_submission(submission_id: int) -> bytes:
    return C.encode_call(C.AcceptSubmission(submission_id))


def reject_submission(submission_id: int, reason: str = "") -> bytes:
    return C.encode_call(C.RejectSubmission(submission_id, reason))


def propose(target: int | None, action: C.Action, voting_blocks: int) -> bytes:
    """``target``: a model id, or None for protocol-level kinds (SetProtocolParam)."""
    return C.encode_call(C.Propose(target, action, voting_blocks))


def vote(proposal_id: int, aye: bool) -> bytes:
    return C.encode_call(C.Vote(proposal_id, aye))


def settle_payout(payout_id: int) -> bytes:
    """The remark the pool dispatches with a payout's transfer (see ``Payout``)."""
    return C.encode_call(C.SettlePayout(payout_id))


def ppm(value: float) -> int:
    """A real number as the protocol's fixed-point integer (millionths), rounded."""
    if value < 0:
        raise CodecError(f"{value} is negative; fixed-point values are unsigned")
    return round(Fraction(value) * C.PERMILL)


def round_spec(
    clients: int,
    min_clients: int | None = None,
    *,
    submit_blocks: int = 0,
    aggregate_blocks: int = 0,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 0.01,
    clip_norm: float | None = None,
    noise_multiplier: float | None = None,
    reward: int = 0,
) -> C.RoundSpec:
    """A round's spec. ``min_clients`` defaults to ``clients``; 0 blocks mean the protocol's
    defaults; DP is recorded when ``clip_norm`` or ``noise_multiplier`` is given."""
    dp = None
    if clip_norm is not None or noise_multiplier is not None:
        dp = C.DpParams(ppm(clip_norm or 0), ppm(noise_multiplier or 0))
    return C.RoundSpec(
        clients=clients,
        min_clients=clients if min_clients is None else min_clients,
        submit_blocks=submit_blocks,
        aggregate_blocks=aggregate_blocks,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate_ppm=ppm(learning_rate),
        dp=dp,
        reward=reward,
    )


def start_round(model_id: int, spec: C.RoundSpec) -> bytes:
    """By the model's owner. Batch with a transfer of ``spec.reward`` (in the model's stake
    asset) from the signer to the model's pool, unless the reward is 0."""
    return C.encode_call(C.StartRound(model_id, spec))


def start_rounds(
    model_id: int,
    spec: C.RoundSpec,
    rounds: int,
    bounty: int = 0,
    commitment: str | None = None,
) -> bytes:
    """By the model's owner: ``rounds`` rounds back to back. Batch with a transfer of
    ``rounds * spec.reward`` (plus a prediction market's ``bounty``) from the signer to the
    model's pool, unless that is 0. A ``commitment`` (``market_commitment(cid, salt)`` of the
    hidden test set) opens a prediction market with the bounty."""
    market = None if commitment is None else C.MarketTerms(bounty, commitment)
    return C.encode_call(C.StartRounds(model_id, spec, rounds, market))


def submit_update(round_id: int, cid: str, num_examples: int, deposit: int = 0) -> bytes:
    """By a selected client of the round, once, before its submit deadline; under the drt
    policy with the model's ``deposit``, batched with a transfer of it to the model's pool."""
    return C.encode_call(C.SubmitUpdate(round_id, cid, num_examples, deposit))


def submit_updates(round_id: int, updates: Sequence[tuple[str, str, int]]) -> list[bytes]:
    """By a host: ``(worker, cid, num_examples)`` updates of one round, in as few remarks as
    fit (each within MAX_DELEGATED entries and MAX_REMARK_BYTES). Each worker is the signer
    or delegated its updates to it (``delegate_updates``)."""
    # a remark's size without its entries: prefix, version, call index, round id, a compact
    # length (at most 2 bytes for MAX_DELEGATED)
    head = len(C.PREFIX) + 3 + len(C.ID.encode(round_id))
    out: list[bytes] = []
    chunk: list[C.DelegatedUpdate] = []
    size = head
    for account, cid, n in updates:
        entry = C.DelegatedUpdate(account, cid, n)
        grow = len(entry.encode())
        if chunk and (len(chunk) == C.MAX_DELEGATED or size + grow > C.MAX_REMARK_BYTES):
            out.append(C.encode_call(C.SubmitUpdates(round_id, tuple(chunk))))
            chunk, size = [], head
        chunk.append(entry)
        size += grow
    if chunk:
        out.append(C.encode_call(C.SubmitUpdates(round_id, tuple(chunk))))
    return out


def delegate_updates(host: str | None) -> bytes:
    """By a worker: let ``host`` submit its updates in ``submit_updates`` (None: revoke)."""
    return C.encode_call(C.DelegateUpdates(host))


def reveal_test_set(model_id: int, test_cid: str, salt: str | bytes) -> bytes:
    """By a prediction market's owner, after its plan's last round: the committed test set."""
    salt = "0x" + salt.hex() if isinstance(salt, bytes) else salt
    return C.encode_call(C.RevealTestSet(model_id, test_cid, salt))


def attest_market(
    market_id: int, test_cid: str, scores: Mapping[int, tuple[float, float]]
) -> bytes:
    """By a validator of the market's model: ``scores`` maps each rewarded round of the plan
    to the model's metric of (its base model, the model it produced) on the test set."""
    rows = tuple(
        C.RoundScore(rid, ppm(base), ppm(new)) for rid, (base, new) in sorted(scores.items())
    )
    return C.encode_call(C.AttestMarket(market_id, test_cid, rows))


def contribution_scores(weights: Mapping[str, float]) -> dict[str, int]:
    """Non-negative weights as ppm scores summing to exactly 10^6 (largest remainders,
    ties to the lower account id), computed exactly so every validator gets the same ints."""
    from .accounts import account_id, normalize_address

    exact = {normalize_address(a): Fraction(w) for a, w in weights.items()}
    if not exact or any(w < 0 for w in exact.values()) or sum(exact.values()) == 0:
        raise CodecError("contribution weights must be non-negative with a positive sum")
    total = sum(exact.values())
    share = {a: w * C.PERMILL / total for a, w in exact.items()}
    scores = {a: int(v) for a, v in share.items()}
    left = C.PERMILL - sum(scores.values())
    order = sorted(share, key=lambda a: (-(share[a] - scores[a]), account_id(a)))
    for a in order[:left]:
        scores[a] += 1
    return scores


def attest(
    round_id: int,
    aggregate_cid: str,
    *,
    accuracy: float,
    loss: float,
    contributions: Mapping[str, float],
    rejected: Mapping[str, str] | None = None,
    metric: float | None = None,
    state_cid: str | None = None,
    base_metric: float | None = None,
) -> C.Attest | C.AttestMetric:
    """A validator's attestation listing every judged update inline (at most
    ``calls.MAX_INLINE``; ``verdict`` sends larger ones as a table). Encode it with
    ``encode_call``; ``.result_digest()`` is what the quorum compares. ``contributions`` maps
    each accepted update's worker to a non-negative weight, normalised by
    ``contribution_scores``; ``rejected`` maps each other submitted update's worker to a short
    reason (that worker is slashed). ``metric``, the model's own metric when it is neither
    accuracy nor the loss, makes it an AttestMetric. ``state_cid``: the stateful strategy's
    server state after the round. ``base_metric``: the model's metric of the round's base
    model on the same data (for the improvement rule)."""
    accepted, refused = _judged(contributions, rejected)
    return _verdict_call(
        round_id, aggregate_cid, accuracy, loss, accepted, refused, metric, state_cid,
        base_metric,
    )  # fmt: skip


def _judged(contributions: Mapping[str, float], rejected: Mapping[str, str] | None):
    """(accepted, rejected) as the wire's lists, sorted by account id."""
    from .accounts import account_id, normalize_address

    scores = contribution_scores(contributions) if contributions else {}
    refused = {normalize_address(a): why for a, why in (rejected or {}).items()}
    return (
        tuple(C.Contribution(a, scores[a]) for a in sorted(scores, key=account_id)),
        tuple(C.Rejection(a, refused[a]) for a in sorted(refused, key=account_id)),
    )


def _verdict_call(
    round_id, aggregate_cid, accuracy, loss, accepted, rejected, metric, state_cid, base_metric,
    table=None,
) -> C.Attest | C.AttestMetric:  # fmt: skip
    fields = (round_id, aggregate_cid, ppm(accuracy), ppm(loss), accepted, rejected)
    base = None if base_metric is None else ppm(max(0.0, base_metric))
    extra = {"state_cid": state_cid, "base_metric_ppm": base, "table": table}
    if metric is None:
        return C.Attest(*fields, **extra)
    return C.AttestMetric(*fields, ppm(max(0.0, metric)), **extra)


@dataclass(frozen=True)
class Verdict:
    """A validator's attestation ready to send: ``call``, and for a round too large to list
    inline, ``table``, the bytes of its ``VerdictTable`` (store them in storage under
    ``call.table.cid`` and send ``remarks()``: the table's parts, then the attestation, in
    one batch)."""

    call: C.Attest | C.AttestMetric
    table: bytes | None = None

    def remarks(self) -> list[bytes]:
        """The remarks to send in one batch, in order."""
        step = C.MAX_TABLE_PART_BYTES
        data = self.table or b""
        parts = [
            C.encode_call(C.TablePart(self.call.round_id, data[i : i + step]))
            for i in range(0, len(data), step)
        ]
        return [*parts, C.encode_call(self.call)]


def verdict(
    round_id: int, aggregate_cid: str, *, inline_max: int = C.MAX_INLINE, **judged: Any
) -> Verdict:
    """``attest(round_id, aggregate_cid, **judged)`` as a ``Verdict``: inline while it judges
    at most ``inline_max`` updates and fits one remark, else with its lists in a table. The
    quorum's digest is the same either way."""
    from ..storage.unixfs import compute_cid

    accepted, refused = _judged(judged.pop("contributions"), judged.pop("rejected", None))
    numbers = (judged.pop("accuracy"), judged.pop("loss"))
    rest = tuple(judged.pop(k, None) for k in ("metric", "state_cid", "base_metric"))
    if judged:
        raise TypeError(f"verdict() got unexpected arguments {sorted(judged)}")
    lists = (accepted, refused)
    if len(accepted) + len(refused) <= min(inline_max, C.MAX_INLINE):
        call = _verdict_call(round_id, aggregate_cid, *numbers, *lists, *rest)
        try:
            C.encode_call(call)
            return Verdict(call)
        except CodecError:
            pass  # long reasons: more than one remark holds, so a table
    table = C.VerdictTable(*lists).encode()
    ref = C.TableRef(compute_cid(table), "0x" + blake2b(table, digest_size=32).hexdigest())
    call = _verdict_call(round_id, aggregate_cid, *numbers, (), (), *rest, table=ref)
    return Verdict(call, table)


def attest_remark(
    round_id: int,
    aggregate_cid: str,
    *,
    accuracy: float,
    loss: float,
    contributions: Mapping[str, float],
    rejected: Mapping[str, str] | None = None,
    metric: float | None = None,
    state_cid: str | None = None,
    base_metric: float | None = None,
) -> bytes:
    """The remark bytes of ``attest(...)``."""
    return C.encode_call(
        attest(
            round_id,
            aggregate_cid,
            accuracy=accuracy,
            loss=loss,
            contributions=contributions,
            rejected=rejected,
            metric=metric,
            state_cid=state_cid,
            base_metric=base_metric,
        )
    )


def reveal_seeds(round_id: int, own_seed: bytes, dropped: Mapping[str, bytes]) -> bytes:
    """A survivor's reveal in a secure round: its own mask seed and its pairwise seed with
    each dropped peer."""
    peers = tuple(C.PeerSeed(peer, seed) for peer, seed in sorted(dropped.items()))
    return C.encode_call(C.RevealSeeds(round_id, own_seed, peers))


def announce_key(public_key: bytes | str) -> bytes:
    """Publish the signer's X25519 public key for secure aggregation's pairwise masks."""
    return C.encode_call(C.AnnounceKey(public_key))


def payout_calls(payout: Payout) -> list[tuple[str, str, dict[str, object]]]:
    """The canonical calls executing a payout, as (pallet, function, params).

    The pool dispatches ``Utility.batch_all`` of these (through ``Multisig.as_multi`` when the
    pool is a multisig), so every validator approves the same call hash. The transfer may
    empty the pool (not ``keep_alive``): the last staker can take everything out.
    """
    if payout.asset_id is None:
        transfer = (
            "Balances",
            "transfer_allow_death",
            {"dest": payout.dest, "value": payout.amount},
        )
    else:
        transfer = (
            "Assets",
            "transfer",
            {"id": payout.asset_id, "target": payout.dest, "amount": payout.amount},
        )
    remark = ("System", "remark_with_event", {"remark": "0x" + settle_payout(payout.id).hex()})
    return [transfer, remark]


def action_from_params(kind: str, params: Mapping[str, str] | None = None) -> C.Action:
    """A proposal action from the CLI's ``KIND --param K=V ...`` strings.

    Lists are comma-separated. SetEligibleWorkers takes ``allow=ADDR,ADDR`` or
    ``min_stake=N`` or nothing (anyone); SetRewardPolicy takes ``kind``, ``round_reward``,
    ``slash_permill``; StartRound takes ``clients`` and optionally the other ``round_spec``
    arguments (``min_clients``, ``reward``, ``learning_rate``, ``clip_norm``, ...).
    """
    p = dict(params or {})
    by_name = {cls.NAME.lower(): cls for cls in C.ACTIONS}
    cls = by_name.get(kind.replace("_", "").replace("-", "").lower())
    if cls is None:
        raise CodecError(f"unknown proposal kind {kind!r}; one of {', '.join(by_name)}")

    def take(key: str) -> str:
        if key not in p:
            raise CodecError(f"{cls.NAME} needs --param {key}=...")
        return p.pop(key)

    def number(key: str, default: int | None = None) -> int:
        if default is not None and key not in p:
            return default
        raw = take(key)
        try:
            return int(raw)
        except ValueError as e:
            raise CodecError(f"--param {key} must be an integer, got {raw!r}") from e

    def listed(raw: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in raw.split(",") if x.strip())

    if cls is C.SetRewardPolicy:
        action: C.Action = cls(
            C.RewardPolicy(
                p.pop("kind", "proportional"), number("round_reward", 0), number("slash_permill", 0)
            )
        )
    elif cls in (C.SetStrategy, C.ConfigureStrategy):
        strategy = take("strategy")
        # the rest are the strategy's parameters: with any, the action that carries them
        params, p = strategy_params(p), {}
        action = (
            C.ConfigureStrategy(strategy, params)
            if params or cls is C.ConfigureStrategy
            else C.SetStrategy(strategy)
        )
    elif cls is C.SetImprovementRule:
        raw = p.pop("tolerance", "0")
        try:
            tolerance = float(raw)
        except ValueError as e:
            raise CodecError(f"--param tolerance must be a number, got {raw!r}") from e
        action = cls(improvement_rule(tolerance, p.pop("unimproved", "adopt")))
    elif cls in (C.AddValidator, C.RemoveValidator):
        action = cls(take("account"))
    elif cls is C.SetEligibleWorkers:
        if "allow" in p:
            action = cls(C.AllowList(listed(take("allow"))))
        elif "min_stake" in p:
            action = cls(C.MinStake(number("min_stake")))
        elif "min_reputation" in p:
            action = cls(C.MinReputation(number("min_reputation")))
        else:
            action = cls(C.Anyone())
    elif cls is C.SetLicence:
        action = cls(take("licence"))
    elif cls is C.SetJurisdictions:
        action = cls(listed(take("jurisdictions")))
    elif cls is C.SetProtocolParam:
        action = cls(take("name"), number("value"))
    elif cls is C.StartRoundProposal:

        def real(key: str) -> float | None:
            if key not in p:
                return None
            raw = p.pop(key)
            try:
                return float(raw)
            except ValueError as e:
                raise CodecError(f"--param {key} must be a number, got {raw!r}") from e

        ints = {
            k: number(k)
            for k in ("min_clients", "submit_blocks", "aggregate_blocks", "epochs", "batch_size")
            if k in p
        }
        lr = real("learning_rate")
        action = cls(
            round_spec(
                number("clients"),
                **ints,  # type: ignore[arg-type]
                learning_rate=0.01 if lr is None else lr,
                clip_norm=real("clip_norm"),
                noise_multiplier=real("noise_multiplier"),
                reward=number("reward", 0),
            )
        )
    else:
        action = cls()
    if p:
        raise CodecError(f"{cls.NAME} does not take --param {', '.join(sorted(p))}")
    return action
