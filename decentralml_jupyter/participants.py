"""Taking part from a notebook: a worker (or validator) running inside this process, in the
background, on data of the kernel (a DataFrame, arrays, a tf.data.Dataset) or a file.

`Session.join_worker(model, data, target=...)` starts one and returns its `Participant`:
its status (rounds it was selected for, updates sent, rewards and slashes) reads from the
session's protocol state, and `leave()` stops it and takes its stake back (unstakes). The
agent is a daemon thread of this process, so a kernel restart leaves nothing running.
Nothing of the data leaves the process; only weight updates do.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import DfmlError, UsageError

if TYPE_CHECKING:
    from .agents.base import Agent
    from .session import Session

DEFAULT_STAKE = 10 * 10**12  # a worker's stake when the model asks no minimum

_RUNNING: list[Participant] = []  # every participant this process started, running or not
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ParticipantStatus:
    """Where a participant stands, as the protocol's state says."""

    role: str
    model_id: int
    address: str
    running: bool
    stake: int
    selected: int  # rounds that selected it (a worker) / it attested (a validator)
    submitted: int  # updates it sent (a worker)
    last_round: int | None
    rewards: int
    slashes: int
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Participant:
    """A worker or validator of ``model_id`` running in this process (see the module)."""

    def __init__(self, session: Session, role: str, model_id: int, agent: Agent):
        self.session, self.role, self.model_id, self.agent = session, role, model_id, agent
        self.error: str | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"dfml-{role}-{model_id}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            self.agent.run()
        except Exception as exc:  # noqa: BLE001 - shown in its status, not lost in a thread
            self.error = f"{type(exc).__name__}: {exc}"
            logging.getLogger("dfml.participant").exception("%s stopped", self.role)

    @property
    def address(self) -> str:
        return self.agent.address

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def status(self) -> ParticipantStatus:
        state = self.session.state()
        me = self.address
        rounds = state.rounds(self.model_id)
        if self.role == "worker":
            picked = [r for r in rounds if me in r.selected]
            sent = [r for r in rounds if me in r.submitted]
        else:
            picked = [r for r in rounds if any(a.validator == me for a in r.attestations)]
            sent = []
        stake = sum(
            s.amount
            for s in state.stakes(model_id=self.model_id, account=me)
            if s.status == "active"
        )
        return ParticipantStatus(
            role=self.role,
            model_id=self.model_id,
            address=me,
            running=self.running,
            stake=stake,
            selected=len(picked),
            submitted=len(sent),
            last_round=max((r.round_id for r in picked), default=None),
            rewards=sum(r.rewards.get(me, 0) for r in rounds),
            slashes=sum(r.slashes.get(me, 0) for r in rounds),
            error=self.error,
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop its agent (a step under way finishes first)."""
        self.agent.stop()
        self._thread.join(timeout)

    def leave(self, unstake: bool = True) -> ParticipantStatus:
        """Stop it and, for a worker, unstake what it staked on the model (it comes back
        after the protocol's lock period)."""
        self.stop()
        if unstake and self.role == "worker":
            staked = sum(
                s.amount for s in self.session.stakes(model_id=self.model_id, account=self.address)
            )
            if staked > 0:
                self.session.unstake(self.model_id, staked)
        return self.status()

    def _repr_mimebundle_(self, **kwargs: Any):
        from .jupyter.widgets import ParticipantWidget

        return ParticipantWidget(self)._repr_mimebundle_(**kwargs)


def start(
    session: Session,
    role: str,
    model_id: int,
    data: Any,
    *,
    target: str | None = None,
    stake: int | None = None,
) -> Participant:
    """A worker (or validator) of ``model_id`` on ``data``, checked against the model's data
    contract before anything is staked: a mismatch raises DataMismatch and starts nothing."""
    from . import fl
    from .protocol.accounts import normalize_address

    if role not in ("worker", "validator"):
        raise UsageError(f"{role!r}: join as a worker or a validator")
    model = session.model(model_id)
    me = normalize_address(session.address)
    for p in running():
        if (p.role, p.model_id, normalize_address(p.address)) == (role, model_id, me):
            raise UsageError(
                f"{session.address} already runs a {role} of model {model_id} here",
                hint=f"see it with: %dfml {role} status; stop it with: %dfml {role} leave",
            )
    contract = fl.spec_contract(session.spec(model.architecture_cid))
    fl.load_data(data, target=target, contract=contract)  # refuses data that does not fit
    if role == "validator" and me not in {normalize_address(v) for v in model.validators}:
        raise UsageError(
            f"{session.address} is not a validator of model {model_id}",
            hint="an AddValidator proposal makes it one; until then it could not attest",
        )
    common = dict(poll=1.0, from_block=session.from_block)
    if role == "worker":
        from .agents.worker import Worker

        amount = stake if stake is not None else _minimum_stake(model) or DEFAULT_STAKE
        agent: Agent = Worker(
            session.url,
            session.storage,
            session._key,
            data=data,
            target=target,
            models=[model_id],
            stake=amount,
            **common,
        )
    else:
        from .agents.validator import Validator

        agent = Validator(
            session.url, session.storage, session._key, data=data, target=target, **common
        )
    try:
        joined = Participant(session, role, model_id, agent)
    except DfmlError:
        agent.stop()
        raise
    with _LOCK:
        _RUNNING.append(joined)
    return joined


def running(role: str | None = None, model_id: int | None = None) -> list[Participant]:
    """The participants this process started that still run (of a role, of a model)."""
    with _LOCK:
        found = list(_RUNNING)
    return [
        p
        for p in found
        if p.running
        and (role is None or p.role == role)
        and (model_id is None or p.model_id == model_id)
    ]


def _minimum_stake(model) -> int:
    rule = model.eligibility or {}
    return int(rule.get("amount", 0)) if rule.get("type") == "min_stake" else 0


__all__ = ["Participant", "ParticipantStatus", "running", "start"]
