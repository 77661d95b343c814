"""``GovernanceHandlers``: proposals, stake-weighted votes, the tally at a proposal's deadline
and executing what passed (model status, policy, validators, eligibility, a protocol
parameter within ``PARAM_BOUNDS``, or a proposal-funded round).
"""

from __future__ import annotations

from .. import calls as C
from ..accounts import account_id
from ..values import CallContext
from .markets import MarketHandlers
from .models import _deposit_problem, _rule_json, _strategy_params
from .records import MIN_POOL_SIGNATORIES, _Model, _Proposal, _Reject, _require

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
    "deposit_wait_blocks": (1, 100_800),
    "reveal_blocks": (1, 100_800),
}
# proposals that change who holds pooled funds or the rules need the critical quorum
_CRITICAL = (C.AddValidator, C.RemoveValidator, C.SetProtocolParam, C.RetireModel)


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


class GovernanceHandlers(MarketHandlers):
    """Proposal and vote calls, tallies and their execution."""

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
        if isinstance(a, C.StartRoundProposal):  # under any policy: a round without a market
            return self._spec_problem(m, a.spec)
        if isinstance(a, C.SetRewardPolicy):
            return _deposit_problem(a.policy.kind, m.deposit)
        if isinstance(a, C.SetDeposit) and m.reward_policy["kind"] == "drt":
            return _deposit_problem("drt", a.deposit)
        if isinstance(a, C.SetStrategy | C.ConfigureStrategy):
            params = a.params if isinstance(a, C.ConfigureStrategy) else ()
            try:
                _strategy_params(a.strategy, params)
            except _Reject as e:
                return e.reason
        return None

    def _tally_due(self, block: int, block_hash: str) -> None:
        """Tally every open proposal whose deadline is ``block`` or earlier, in id order."""
        for p in sorted(self._proposals.values(), key=lambda p: p.id):
            if p.status == "open" and p.deadline <= block:
                self._tally(p, block, block_hash)

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
        """Apply a passed proposal's change; what makes it no longer applicable, or None."""
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
        elif isinstance(a, C.SetStrategy | C.ConfigureStrategy):
            params = a.params if isinstance(a, C.ConfigureStrategy) else ()
            m.strategy_params = _strategy_params(a.strategy, params)
            m.strategy = a.strategy
            m.state_cid = None  # a new strategy (or new settings) starts its state afresh
        elif isinstance(a, C.SetImprovementRule):
            m.improvement = _rule_json(a.rule)
        elif isinstance(a, C.SetDeposit):
            m.deposit = a.deposit
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
            self._recheck_quorums(m.id, block, block_hash)
        return None
