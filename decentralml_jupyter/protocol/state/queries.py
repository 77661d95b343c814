"""``Queries``: the read side. Every public look-up of the state, each returning the frozen
values of ``values.py`` (``models()``, ``rounds()``, ``payouts()``, ``errors()``, ...); the
tables are never handed out.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Collection
from typing import Any

from .. import calls as C
from ..accounts import account_id, pool_threshold
from ..values import (
    AssignmentInfo,
    AttestationInfo,
    ErrorRecord,
    MarketInfo,
    ModelInfo,
    Payout,
    PoolInfo,
    ProposalInfo,
    ProtocolParams,
    ReputationInfo,
    RewardInfo,
    RoundInfo,
    SlashInfo,
    StakeInfo,
    SubmissionInfo,
    TaskInfo,
    UpdateInfo,
)
from .core import StateCore
from .records import _akey, _Model, _Proposal, _Round, _Task


class Queries(StateCore):
    """Read-only queries building ``values.py`` objects."""

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

    def delegates(self, accounts: Any = None) -> dict[str, str]:
        """The host each worker delegated its updates to (all, or those of ``accounts``)."""
        if accounts is None:
            return dict(sorted(self._delegates.items()))
        return {a: self._delegates[a] for a in accounts if a in self._delegates}

    def public_keys(self, accounts: Any = None) -> dict[str, str]:
        """Announced X25519 public keys (for secure aggregation), by account."""
        if accounts is None:
            return dict(sorted(self._keys.items()))
        return {a: self._keys[a] for a in accounts if a in self._keys}

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
            strategy_params=_effective_params(m),
            state_cid=m.state_cid,
            improvement=_improvement_rule(m),
            privacy=self._privacy(m),
            deposit=m.deposit,
        )

    def _privacy(self, m: _Model) -> dict[str, Any] | None:
        """The model's differential-privacy budget spent: for each worker that sent updates
        in DP rounds, the epsilon (at the reported delta) of all of them composed, and the
        model's epsilon, the largest (the guarantee every contributor has). None: no DP
        round had an update; an epsilon of None: a round without noise, no guarantee."""
        spent: dict[str, dict[int, int]] = {}
        for r in self._rounds.values():
            dp = r.spec["dp"]
            if r.model_id != m.id or dp is None:
                continue
            for u in self._round_updates(r.id):
                mine = spent.setdefault(u.worker, {})
                z = dp["noise_multiplier_ppm"]
                mine[z] = mine.get(z, 0) + 1
        if not spent:
            return None
        workers = {w: _epsilon(tuple(sorted(zs.items()))) for w, zs in sorted(spent.items())}
        finite = [e for e in workers.values() if e is not None]
        unbounded = len(finite) < len(workers)
        return {
            "delta": _delta(),
            "epsilon": None if unbounded else max(finite),
            "workers": workers,
        }

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

    def reputation(
        self, model_id: int | None = None, account: str | None = None
    ) -> list[ReputationInfo]:
        """Every worker's record per model (see ReputationInfo), by model then account id."""
        rec: dict[tuple[int, str], list[int]] = {}

        def row(model: int, who: str) -> list[int]:
            return rec.setdefault((model, who), [0, 0, 0, 0, 0])

        for u in self._updates.values():
            if u.status == "accepted":
                r = row(self._rounds[u.round_id].model_id, u.worker)
                r[0] += 1
                r[2] += u.contribution or 0
            elif u.status == "rejected":
                row(self._rounds[u.round_id].model_id, u.worker)[1] += 1
        for w in self._rewards.values():
            row(w.model_id, w.account)[3] += w.amount
        for x in self._slashes.values():
            row(x.model_id, x.account)[4] += x.amount
        order = sorted(rec, key=lambda k: (k[0], account_id(k[1])))
        return [
            ReputationInfo(who, model, *rec[(model, who)])
            for model, who in order
            if (model_id is None or model == model_id) and (account is None or who == account)
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
        deposits = sum(
            u.deposit
            for u in self._updates.values()
            if u.deposit_status in ("held", "refund_due")
            and self._rounds[u.round_id].model_id == m.id
        )
        bounties = sum(
            mk.bounty
            for mk in self._markets.values()
            if mk.model_id == m.id and mk.status in ("running", "revealing", "scoring")
        )
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
            obligations=stakes + unbonding + escrow + pending + round_escrow + deposits + bounties,
            held=sum(v for _, v in balances),
            balances=balances,
            round_escrow=round_escrow,
            deposits=deposits,
            bounties=bounties,
        )

    def rounds(
        self, model_id: int | None = None, status: Collection[str] | None = None
    ) -> list[RoundInfo]:
        """Every round (of one model when given; of those statuses when given: agents ask
        for the live ones only, which stays cheap however long the history), in id order."""
        return [
            self._round_info(r)
            for _, r in sorted(self._rounds.items())
            if (model_id is None or r.model_id == model_id)
            and (status is None or r.status in status)
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
                u.deposit,
                u.deposit_status,
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
                a.state_cid,
                a.table_cid,
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
            name = self._models[r.model_id].metric
            if "metric_ppm" in r.metrics and name not in ("accuracy", "loss"):
                # the model's own metric, by its Keras name (never in place of those two)
                metrics[name] = r.metrics["metric_ppm"] / C.PERMILL
            if "base_metric_ppm" in r.metrics:
                # the same metric of the model the round started from (the improvement rule)
                metrics[f"base_{name}"] = r.metrics["base_metric_ppm"] / C.PERMILL
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
                # what one update of the round spends of its worker's privacy budget
                "epsilon": _epsilon(((dp["noise_multiplier_ppm"], 1),)),
                "delta": _delta(),
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
            next_round_id=r.next_round_id,
            base_state_cid=r.base_state_cid,
            state_cid=r.state_cid,
            improved=r.improved,
            reveals=json.loads(json.dumps(r.reveals)),
            market_id=r.market_id,
        )

    def markets(self, model_id: int | None = None) -> list[MarketInfo]:
        """Prediction markets, in id order (of one model, or all)."""
        return [
            self._market_info(mk)
            for _, mk in sorted(self._markets.items())
            if model_id is None or mk.model_id == model_id
        ]

    def market(self, market_id: int) -> MarketInfo | None:
        mk = self._markets.get(market_id)
        return None if mk is None else self._market_info(mk)

    def open_market(self, model_id: int) -> MarketInfo | None:
        """The model's market that has not settled yet (running, revealing or scoring)."""
        mk = self._open_market(model_id)  # type: ignore[attr-defined]
        return None if mk is None else self._market_info(mk)

    def _market_info(self, mk) -> MarketInfo:
        return MarketInfo(
            market_id=mk.id,
            model_id=mk.model_id,
            owner=mk.owner,
            bounty=mk.bounty,
            commitment=mk.commitment,
            rounds=tuple(mk.rounds),
            status=mk.status,
            reveal_deadline=mk.reveal_deadline,
            score_deadline=mk.score_deadline,
            test_cid=mk.test_cid,
            gains={rid: g / C.PERMILL for rid, g in mk.gains.items()},
            paid={a: amount for a, amount, _ in mk.paid},
            note=mk.note,
            created_block=mk.created_block,
            ended_block=mk.ended_block,
            scored_by=tuple(a["validator"] for a in mk.attestations),
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


def _effective_params(m: _Model) -> dict[str, Any]:
    """The settings of a model's strategy in effect: its recorded ones over the defaults."""
    from ...fl.strategies import strategy_for

    return strategy_for(m.strategy, m.strategy_params).params()


def _improvement_rule(m: _Model) -> dict[str, Any]:
    """The model's improvement rule in effect, its tolerance in the metric's unit."""
    from .rounds import _DEFAULT_RULE

    rule = m.improvement or _DEFAULT_RULE
    return {"tolerance": rule["tolerance_ppm"] / C.PERMILL, "unimproved": rule["unimproved"]}


def _delta() -> float:
    from ...fl.privacy import DEFAULT_DELTA

    return DEFAULT_DELTA


@functools.lru_cache(maxsize=4096)
def _epsilon(releases: tuple[tuple[int, int], ...]) -> float | None:
    """Epsilon of updates released with these (noise multiplier ppm, count) pairs, rounded
    to 4 decimals; None when one had no noise (no guarantee)."""
    from ...fl.privacy import dp_epsilon

    zs = [z / C.PERMILL for z, k in releases for _ in range(k)]
    eps = dp_epsilon(zs)
    return None if math.isinf(eps) else round(eps, 4)
