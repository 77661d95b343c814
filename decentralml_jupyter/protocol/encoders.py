"""Remark bytes for each protocol call, for clients (the CLI wraps them in ``batch_all``).

Calls that move value (stake, create_task, settle_payout) count only if the batch also holds
the matching transfer; ``required_transfer`` says which one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from . import calls as C
from .errors import CodecError
from .values import Payout


def register_model(
    name: str,
    architecture_cid: str,
    weights_cid: str,
    *,
    description: str = "",
    metric: str = "accuracy",
    licence: str = "proprietary",
    jurisdictions: Sequence[str] = (),
    strategy: str = "fedavg",
    reward_policy: C.RewardPolicy | None = None,
    stake_asset: int | None = None,
    validators: Sequence[str] = (),
) -> bytes:
    return C.encode_call(
        C.RegisterModel(
            name=name,
            architecture_cid=architecture_cid,
            weights_cid=weights_cid,
            description=description,
            metric=metric,
            licence=licence,
            jurisdictions=tuple(jurisdictions),
            strategy=strategy,
            reward_policy=reward_policy or C.RewardPolicy(),
            stake_asset=stake_asset,
            validators=tuple(validators),
        )
    )


def start_training(model_id: int) -> bytes:
    return C.encode_call(C.StartTraining(model_id))


def stake(model_id: int, amount: int, asset_id: int | None = None) -> bytes:
    """Batch with a transfer of exactly ``amount`` from the signer to the model's pool."""
    return C.encode_call(C.Stake(model_id, amount, asset_id))


def unstake(model_id: int, amount: int) -> bytes:
    return C.encode_call(C.Unstake(model_id, amount))


def create_task(
    model_id: int,
    role: str,
    reward: int,
    max_assignments: int,
    duration_blocks: int,
    *,
    validation: str = "manual",
    description: str = "",
) -> bytes:
    """Batch with a transfer of ``reward * max_assignments`` to the model's pool."""
    return C.encode_call(
        C.CreateTask(
            model_id, role, reward, max_assignments, duration_blocks, validation, description
        )
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


def payout_calls(payout: Payout) -> list[tuple[str, str, dict[str, object]]]:
    """The canonical calls executing a payout, as (pallet, function, params).

    The pool dispatches ``Utility.batch_all`` of these (through ``Multisig.as_multi`` when the
    pool is a multisig), so every validator approves the same call hash.
    """
    if payout.asset_id is None:
        transfer = (
            "Balances",
            "transfer_keep_alive",
            {"dest": payout.dest, "value": payout.amount},
        )
    else:
        transfer = (
            "Assets",
            "transfer_keep_alive",
            {"id": payout.asset_id, "target": payout.dest, "amount": payout.amount},
        )
    remark = ("System", "remark_with_event", {"remark": "0x" + settle_payout(payout.id).hex()})
    return [transfer, remark]


def action_from_params(kind: str, params: Mapping[str, str] | None = None) -> C.Action:
    """A proposal action from the CLI's ``KIND --param K=V ...`` strings.

    Lists are comma-separated. SetEligibleWorkers takes ``allow=ADDR,ADDR`` or
    ``min_stake=N`` or nothing (anyone); SetRewardPolicy takes ``kind``, ``round_reward``,
    ``slash_permill``.
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
    elif cls is C.SetStrategy:
        action = cls(take("strategy"))
    elif cls in (C.AddValidator, C.RemoveValidator):
        action = cls(take("account"))
    elif cls is C.SetEligibleWorkers:
        if "allow" in p:
            action = cls(C.AllowList(listed(take("allow"))))
        elif "min_stake" in p:
            action = cls(C.MinStake(number("min_stake")))
        else:
            action = cls(C.Anyone())
    elif cls is C.SetLicence:
        action = cls(take("licence"))
    elif cls is C.SetJurisdictions:
        action = cls(listed(take("jurisdictions")))
    elif cls is C.SetProtocolParam:
        action = cls(take("name"), number("value"))
    else:
        action = cls()
    if p:
        raise CodecError(f"{cls.NAME} does not take --param {', '.join(sorted(p))}")
    return action
