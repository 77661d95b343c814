"""``MarketHandlers``: prediction markets (reward policy ``prediction-market``).

The owner starts a plan of rounds (``StartRounds`` with ``MarketTerms``) with a bounty and a
commitment to a hidden test set: ``calls.market_commitment(cid, salt)``. The rounds run and
reward as ``proportional`` does. When the plan's last round ends the market awaits the test
set for ``reveal_blocks``; the owner reveals its CID and salt (``RevealTestSet``), checked
against the commitment. The model's validators then score every rewarded round of the plan on
it (``AttestMarket``: the round's base model and the model it produced), and k agreeing
settle the bounty: each round weighs by its gain on the test set (the lower median of the
reports, in the metric's direction; a loss weighs 0), each contributor within a round by its
contribution score there. An owner who does not reveal in time, or a test set no quorum
scores in time (unreadable, not in storage, not fitting the model), forfeits the bounty to
the plan's contributors by their scores alone; only when nobody contributed, or no round
gained on the test set, does it go back to the owner.
"""

from __future__ import annotations

from typing import Any

from .. import calls as C
from ..accounts import account_id, pool_threshold
from ..values import CallContext
from .records import _Market, _require
from .rounds import RoundHandlers, _lower_median


class MarketHandlers(RoundHandlers):
    """Reveals, market attestations and the markets' deadlines."""

    def _open_market(self, model_id: int) -> _Market | None:
        """The model's market that has not settled yet (a model runs one plan at a time)."""
        live = [
            mk
            for mk in self._markets.values()
            if mk.model_id == model_id and mk.status in ("running", "revealing", "scoring")
        ]
        return max(live, key=lambda mk: mk.id) if live else None

    def _scored_rounds(self, mk: _Market) -> list[int]:
        """The market's rounds that rewarded contributors, in id order: the ones scored."""
        rewarded = {x.round_id for x in self._rewards.values() if x.round_id in mk.rounds}
        return sorted(rid for rid in mk.rounds if rid in rewarded)

    def _reveal_test_set(self, ctx: CallContext, c: C.RevealTestSet) -> None:
        m = self._model(c.model_id)
        live = [
            mk
            for _, mk in sorted(self._markets.items())
            if mk.model_id == m.id and mk.status in ("running", "revealing", "scoring")
        ]
        _require(bool(live), f"model {m.id} has no prediction market awaiting its test set")
        # the model's markets awaiting a reveal (a new plan may run beside an older market)
        # whose commitment these open: at most one, salts being random
        opened = C.market_commitment(c.test_cid, c.salt)
        matching = [x for x in live if x.commitment == opened]  # a reused commitment: several
        mk = next((x for x in matching if x.status == "revealing"), None)
        mk = mk or next(iter(matching), None)
        if mk is None:
            waiting = [x.id for x in live if x.status == "revealing"]
            _require(
                not waiting,
                f"the test set's CID and salt do not match the commitment of market "
                f"{', '.join(map(str, waiting))}",
            )
            _require(False, f"market {live[-1].id} is {live[-1].status}: nothing to reveal")
        assert mk is not None
        _require(ctx.signer == mk.owner, f"only {mk.owner} can reveal market {mk.id}'s test set")
        _require(
            mk.status == "revealing",
            f"market {mk.id} is {mk.status}: reveal the test set after its last round ends",
        )
        mk.test_cid, mk.salt = c.test_cid, c.salt
        if not self._scored_rounds(mk):
            self._pay_market(mk, {}, ctx.block_number, "refunded", "no round rewarded anyone")
            return None
        mk.status = "scoring"
        mk.score_deadline = ctx.block_number + 1 + self._params["round_aggregate_blocks"]
        return None

    def _attest_market(self, ctx: CallContext, c: C.AttestMarket) -> tuple[str, int]:
        mk = self._markets.get(c.market_id)
        _require(mk is not None, f"unknown market {c.market_id}")
        assert mk is not None
        m = self._models[mk.model_id]
        _require(ctx.signer in m.validators, f"{ctx.signer} is not a validator of model {m.id}")
        _require(mk.status == "scoring", f"market {mk.id} takes no scores: it is {mk.status}")
        _require(
            all(a["validator"] != ctx.signer for a in mk.attestations),
            f"{ctx.signer} already scored market {mk.id}",
        )
        _require(c.test_cid == mk.test_cid, f"market {mk.id}'s test set is {mk.test_cid}")
        want = self._scored_rounds(mk)
        got = [s.round_id for s in c.scores]
        _require(got == want, f"market {mk.id} scores exactly its rewarded rounds {want}")
        mk.attestations.append(
            {
                "validator": ctx.signer,
                "digest": c.result_digest(),
                "scores": [[s.round_id, s.base_ppm, s.new_ppm] for s in c.scores],
                "block_number": ctx.block_number,
            }
        )
        self._market_quorum(mk, ctx.block_number)
        return ("market", mk.id)

    def _market_quorum(self, mk: _Market, block: int) -> None:
        """Settle ``mk`` if k of its model's current validators sent the same scores' digest:
        after each market attestation, and after a change of validators."""
        m = self._models[mk.model_id]
        if mk.status != "scoring" or len(m.validators) < 2:
            return
        by_digest: dict[str, list[dict[str, Any]]] = {}
        for a in mk.attestations:
            if a["validator"] in m.validators:
                by_digest.setdefault(a["digest"], []).append(a)
        k = pool_threshold(len(m.validators))
        agreeing = next((v for v in by_digest.values() if len(v) >= k), None)
        if agreeing is not None:
            self._settle_market(mk, agreeing, block)

    def _recheck_quorums(self, model_id: int, block: int, block_hash: str) -> None:
        """A change of a model's validators may complete a quorum from what was sent."""
        for r in sorted(self._rounds.values(), key=lambda r: r.id):
            if r.model_id == model_id and r.status == "aggregating":
                self._settle_if_quorum(r, block, -1, block_hash)
        for mk in sorted(self._markets.values(), key=lambda mk: mk.id):
            if mk.model_id == model_id and mk.status == "scoring":
                self._market_quorum(mk, block)

    def _settle_market(self, mk: _Market, agreeing: list[dict[str, Any]], block: int) -> None:
        """Pay the bounty by each round's gain on the test set (the quorum's lower medians)."""
        from ...fl.contract import LOWER_IS_BETTER

        lower = self._models[mk.model_id].metric.lower() in LOWER_IS_BETTER
        weights: dict[int, int] = {}
        for i, rid in enumerate(self._scored_rounds(mk)):
            base = _lower_median([a["scores"][i][1] for a in agreeing])
            new = _lower_median([a["scores"][i][2] for a in agreeing])
            gain = base - new if lower else new - base
            mk.gains[str(rid)] = gain
            weights[rid] = max(gain, 0)
        self._pay_market(mk, weights, block, "paid", "paid by each round's gain on the test set")

    def _pay_market(
        self, mk: _Market, weights: dict[int, int], block: int, status: str, note: str
    ) -> None:
        """Pay the bounty to the contributors of the rounds in ``weights``: round weight x
        contribution score, exactly (the remainder to the largest share, first in account
        order); back to the owner when nobody weighs anything."""
        per: dict[str, int] = {}
        for x in sorted(self._rewards.values(), key=lambda x: x.id):
            w = weights.get(x.round_id, 0)
            if w > 0 and x.contribution > 0:
                per[x.account] = per.get(x.account, 0) + w * x.contribution
        mk.status, mk.note, mk.ended_block = status, note, block
        total = sum(per.values())
        if total == 0:
            mk.status = "refunded"
            if status != "refunded":
                mk.note = f"{note}: nobody gained, the bounty goes back to the owner"
            pid = self._new_payout(mk.model_id, mk.owner, mk.bounty, "market_refund", block)
            mk.paid = [[mk.owner, mk.bounty, pid]]
            return
        accounts = sorted(per, key=account_id)
        shares = {a: mk.bounty * per[a] // total for a in accounts}
        top = max(accounts, key=lambda a: (per[a], -accounts.index(a)))
        shares[top] += mk.bounty - sum(shares.values())
        mk.paid = []
        for a in accounts:
            pid = self._new_payout(mk.model_id, a, shares[a], "market_reward", block)
            mk.paid.append([a, shares[a], pid])

    def _advance_markets(self, block: int) -> None:
        """Deadlines: a market not revealed, or not scored, in time forfeits its bounty to
        the plan's contributors by their contribution scores."""
        for mk in sorted(self._markets.values(), key=lambda mk: mk.id):
            if mk.status == "revealing" and block + 1 >= (mk.reveal_deadline or 0):
                why = f"the owner did not reveal the test set by block {mk.reveal_deadline}"
            elif mk.status == "scoring" and block + 1 >= (mk.score_deadline or 0):
                why = f"no quorum of validators scored the test set by block {mk.score_deadline}"
            else:
                continue
            rounds = dict.fromkeys(self._scored_rounds(mk), 1)
            self._pay_market(mk, rounds, block, "forfeited", f"{why}: forfeited to contributors")
