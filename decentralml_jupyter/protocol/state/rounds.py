"""``RoundHandlers``: federated rounds. Starting one (or a ``StartRounds`` plan of several,
each next round opened as the last ends and linked by ``next_round_id``), worker selection,
update submission, validators' attestations and the k-of-n quorum that finalizes a round
(rewards and slashes), deadlines that fail a round, and announced secure-aggregation keys.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

from .. import calls as C
from ..accounts import account_id, pool_threshold
from ..errors import CodecError
from ..scale import Reader
from ..values import CallContext
from .models import ModelHandlers, _rule_json
from .records import (
    _Attestation,
    _Market,
    _Model,
    _Reject,
    _require,
    _Reward,
    _Round,
    _Slash,
    _Update,
)

_SEED_TAG = b"dfml/round-selection"


def _spec_from_json(spec: dict[str, Any]) -> C.RoundSpec:
    """The RoundSpec a round recorded (deadlines as it resolved them), for a plan's next."""
    fields = {k: v for k, v in spec.items() if k != "dp"}
    dp = spec.get("dp")
    return C.RoundSpec(**fields, dp=None if dp is None else C.DpParams(**dp))


class RoundHandlers(ModelHandlers):
    """Round calls, plans and round deadlines."""

    def _spec_problem(self, m: _Model, spec: C.RoundSpec) -> str | None:
        """Why a round with ``spec`` can never start on ``m`` as it is now, or None."""
        if m.status != "training":
            return f"model {m.id} is {m.status}, not training"
        if not 1 <= spec.min_clients <= spec.clients:
            return f"need 1 <= min_clients ({spec.min_clients}) <= clients ({spec.clients})"
        if spec.epochs < 1 or spec.batch_size < 1:
            return "epochs and batch_size must be at least 1"
        floor = m.reward_policy["round_reward"]
        if spec.reward < floor:
            return f"model {m.id}'s policy asks a reward of at least {floor}, not {spec.reward}"
        return None

    def _open_round(
        self,
        m: _Model,
        starter: str,
        spec: C.RoundSpec,
        block: int,
        extrinsic: int,
        block_hash: str,
        proposal_id: int | None = None,
    ) -> int:
        """Check, then create a round funded with ``spec.reward`` (the caller credits it)."""
        problem = self._spec_problem(m, spec)
        _require(problem is None, str(problem))
        live = self._live_round(m.id)
        _require(live is None, f"model {m.id} already has round {live.id if live else 0} open")
        # whoever funds a round does not work in it: it would pay itself, and a round whose
        # every other update fails (its own hints) would hand it their slashes and deposits
        workers = [a for a in self._round_workers(m) if a != starter]
        _require(
            len(workers) >= spec.min_clients,
            f"model {m.id} has {len(workers)} eligible workers besides the round's starter, the "
            f"round needs {spec.min_clients}",
        )
        rid = self._take_id("round")
        try:
            hash_bytes = bytes.fromhex(block_hash.removeprefix("0x"))
        except ValueError:
            hash_bytes = block_hash.encode()
        seed = blake2b(
            _SEED_TAG + hash_bytes + m.id.to_bytes(8, "little") + rid.to_bytes(8, "little"),
            digest_size=32,
        ).digest()
        # A keyed-hash ranking is a uniform shuffle that any client can recompute.
        ranked = sorted(
            workers, key=lambda a: (blake2b(seed + account_id(a), digest_size=32).digest(), a)
        )
        submit = spec.submit_blocks or self._params["round_submit_blocks"]
        aggregate = spec.aggregate_blocks or self._params["round_aggregate_blocks"]
        # a round started in a tick takes calls from the next block on
        first = block if extrinsic >= 0 else block + 1
        spec_json = spec.to_json()
        del spec_json["type"]
        if spec_json["dp"] is not None:
            del spec_json["dp"]["type"]
        spec_json["submit_blocks"], spec_json["aggregate_blocks"] = submit, aggregate
        self._rounds[rid] = _Round(
            id=rid,
            model_id=m.id,
            starter=starter,
            proposal_id=proposal_id,
            spec=spec_json,
            base_cid=m.global_cid,
            base_state_cid=m.state_cid,
            seed="0x" + seed.hex(),
            eligible=len(workers),
            selected=ranked[: spec.clients],
            start_block=block,
            submit_deadline=first + submit,
            aggregate_deadline=first + submit + aggregate,
            status="open",
            escrow=spec.reward,
            aggregate_cid=None,
            metrics=None,
            digest=None,
            number=None,
            note="",
            ended_block=None,
            created_block=block,
            created_extrinsic=extrinsic,
        )
        return rid

    def _start_round(self, ctx: CallContext, c: C.StartRound) -> tuple[str, int]:
        return self._start_owned(ctx, c.model_id, c.spec, 1, "a round")

    def _start_rounds(self, ctx: CallContext, c: C.StartRounds) -> tuple[str, int]:
        _require(c.rounds >= 1, "a plan needs at least 1 round")
        return self._start_owned(ctx, c.model_id, c.spec, c.rounds, "rounds", c.market)

    def _start_owned(
        self,
        ctx: CallContext,
        model_id: int,
        spec: C.RoundSpec,
        rounds: int,
        what: str,
        market: C.MarketTerms | None = None,
    ) -> tuple[str, int]:
        """The owner opens a round now and schedules ``rounds - 1`` more after it; the whole
        budget (``rounds * spec.reward``, and a market's bounty) comes with a transfer in the
        same batch."""
        m = self._model(model_id)
        _require(ctx.signer == m.owner, f"only the owner of model {m.id} can start {what}")
        problem = self._spec_problem(m, spec)
        _require(problem is None, str(problem))
        if market is not None:
            _require(
                m.reward_policy["kind"] == "prediction-market",
                f"model {m.id}'s reward policy is {m.reward_policy['kind']}, not "
                "prediction-market: it takes no bounty",
            )
            _require(market.bounty > 0, "a prediction market needs a bounty above 0")
            _require(
                rounds <= C.MAX_MARKET_ROUNDS,
                f"a prediction market spans at most {C.MAX_MARKET_ROUNDS} rounds (what one "
                f"market attestation scores), not {rounds}",
            )
            _require(
                market.commitment != "0x" + "00" * 32, "the all-zero commitment commits to nothing"
            )
        budget = spec.reward * rounds + (0 if market is None else market.bounty)
        key = None
        if budget:
            self._custodial(m)
            key = self._find_transfer(ctx, ctx.signer, m.pool, budget, m.stake_asset)
        rid = self._open_round(
            m, ctx.signer, spec, ctx.block_number, ctx.extrinsic_index, ctx.block_hash
        )
        r = self._rounds[rid]
        r.follow, r.reserve = rounds - 1, spec.reward * (rounds - 1)
        if market is not None:
            mid = self._take_id("market")
            self._markets[mid] = _Market(
                mid, m.id, ctx.signer, market.bounty, market.commitment, [rid], "running",
                ctx.block_number,
            )  # fmt: skip
            r.market_id = mid
        if key is not None:
            self._consumed.add(key)
            self._credit(m.id, m.pool, budget)
        return ("round", rid)

    def _continue_plan(self, r: _Round, block: int, extrinsic: int, block_hash: str) -> None:
        """A plan's next round opens as ``r`` ends, in the same block, and ``r`` records it
        as its ``next_round_id``; or, when it cannot open, the rest of the plan's budget goes
        back to its starter."""
        if r.follow <= 0:
            self._plan_ended(r, block)
            return
        follow, reserve, r.follow, r.reserve = r.follow, r.reserve, 0, 0
        m = self._models[r.model_id]
        spec = _spec_from_json(r.spec)
        try:
            rid = self._open_round(m, r.starter, spec, block, extrinsic, block_hash)
        except _Reject as e:
            r.note = (r.note + "; " if r.note else "") + f"plan stopped: {e.reason}"
            self._new_payout(m.id, r.starter, reserve, "round_refund", block)
            self._plan_ended(r, block)
            return
        r.next_round_id = rid
        nxt = self._rounds[rid]
        nxt.follow, nxt.reserve = follow - 1, reserve - spec.reward
        if r.market_id is not None:
            nxt.market_id = r.market_id
            self._markets[r.market_id].rounds.append(rid)

    def _plan_ended(self, r: _Round, block: int) -> None:
        """The last round of a plan ended: its market, if any, awaits the test set."""
        mk = None if r.market_id is None else self._markets[r.market_id]
        if mk is None or mk.status != "running":
            return
        mk.status = "revealing"
        mk.reveal_deadline = block + 1 + self._params["reveal_blocks"]

    def _announce_key(self, ctx: CallContext, c: C.AnnounceKey) -> None:
        _require(c.public_key != "0x" + "00" * 32, "the all-zero key would make every mask public")
        self._keys[ctx.signer] = c.public_key
        return None

    def _reveal_seeds(self, ctx: CallContext, c: C.RevealSeeds) -> None:
        r = self._rounds.get(c.round_id)
        _require(r is not None, f"unknown round {c.round_id}")
        assert r is not None
        m = self._models[r.model_id]
        _require(m.strategy.endswith(":secure"), f"model {m.id}'s rounds are not secure")
        _require(
            r.status == "aggregating" and ctx.block_number < r.aggregate_deadline,
            f"round {r.id} takes no reveals: it is {r.status}",
        )
        submitted = {u.worker for u in self._round_updates(r.id)}
        _require(ctx.signer in submitted, f"{ctx.signer} has no update in round {r.id}")
        _require(ctx.signer not in r.reveals, f"{ctx.signer} already revealed for round {r.id}")
        dropped = set(r.selected) - submitted
        named = [x.peer for x in c.dropped]
        _require(
            set(named) == dropped,
            f"a reveal must name exactly the {len(dropped)} selected workers without an update",
        )
        r.reveals[ctx.signer] = {
            "own": c.own_seed,
            "dropped": {x.peer: x.seed for x in sorted(c.dropped, key=lambda x: x.peer)},
        }
        return None

    def _takes_updates(self, round_id: int) -> tuple[_Round, _Model]:
        r = self._rounds.get(round_id)
        _require(r is not None, f"unknown round {round_id}")
        assert r is not None
        return r, self._models[r.model_id]

    def _check_open(self, ctx: CallContext, r: _Round) -> None:
        _require(
            r.status == "open" and ctx.block_number < r.submit_deadline,
            f"round {r.id} takes no updates: it is {r.status} (submit deadline block "
            f"{r.submit_deadline})",
        )

    def _check_worker(self, ctx: CallContext, r: _Round, m: _Model, worker: str) -> None:
        """Why ``worker``'s update may not enter round ``r`` now (raises _Reject), else None."""
        self._check_open(ctx, r)
        _require(worker in r.selected, f"{worker} was not selected for round {r.id}")
        _require(
            worker not in m.validators,
            f"{worker} became a validator of model {m.id}: it judges updates, it sends none",
        )
        _require(
            all(u.worker != worker for u in self._round_updates(r.id)),
            f"{worker} already submitted an update to round {r.id}",
        )

    def _record_update(
        self, ctx: CallContext, r: _Round, worker: str, cid: str, n: int, deposit: int
    ) -> int:
        uid = self._take_id("update")
        self._add_update(
            _Update(
                uid,
                r.id,
                worker,
                cid,
                n,
                "submitted",
                None,
                "",
                ctx.block_number,
                ctx.extrinsic_index,
                deposit,
                "held" if deposit else "",
            )
        )
        if len(self._round_updates(r.id)) == len(r.selected):
            r.status = "aggregating"  # every client is in: validators need not wait
        return uid

    def _submit_update(self, ctx: CallContext, c: C.SubmitUpdate) -> tuple[str, int]:
        r, m = self._takes_updates(c.round_id)
        self._check_worker(ctx, r, m, ctx.signer)
        want = m.deposit if m.reward_policy["kind"] == "drt" else 0
        _require(
            c.deposit == want,
            f"model {m.id} asks a deposit of {want} with each update, not {c.deposit}",
        )
        key = None
        if want:
            self._custodial(m)
            key = self._find_transfer(ctx, ctx.signer, m.pool, want, m.stake_asset)
        uid = self._record_update(ctx, r, ctx.signer, c.cid, c.num_examples, want)
        if key is not None:
            self._consumed.add(key)
            self._credit(m.id, m.pool, want)
        return ("update", uid)

    def _submit_updates(self, ctx: CallContext, c: C.SubmitUpdates) -> None:
        """A host's updates: the call is refused as a whole only for what concerns all of
        them; each entry is then taken or refused (logged under its worker) by itself."""
        r, m = self._takes_updates(c.round_id)
        self._check_open(ctx, r)
        _require(
            m.reward_policy["kind"] != "drt",
            f"model {m.id} takes a deposit with each update (drt): each worker sends its "
            "own submit_update with its deposit's transfer",
        )
        _require(
            ctx.signer not in m.validators,
            f"{ctx.signer} is a validator of model {m.id}: it judges updates, it carries none",
        )
        _require(bool(c.updates), "submit_updates names no update")
        for e in c.updates:
            try:
                _require(
                    e.account == ctx.signer or self._delegates.get(e.account) == ctx.signer,
                    f"{e.account} has not delegated its updates to {ctx.signer}",
                )
                self._check_worker(ctx, r, m, e.account)
            except _Reject as err:
                self._errors.append(
                    {
                        "block_number": ctx.block_number,
                        "extrinsic_index": ctx.extrinsic_index,
                        "batch_index": ctx.batch_index,
                        "account": e.account,
                        "call": "submit_update",
                        "reason": err.reason,
                    }
                )
                continue
            self._record_update(ctx, r, e.account, e.cid, e.num_examples, 0)
        return None

    def _delegate_updates(self, ctx: CallContext, c: C.DelegateUpdates) -> None:
        if c.host is None:
            _require(
                ctx.signer in self._delegates,
                f"{ctx.signer} has delegated its updates to no one",
            )
            del self._delegates[ctx.signer]
            return None
        _require(c.host != ctx.signer, "an account submits its own updates without delegating")
        self._delegates[ctx.signer] = c.host
        return None

    def _attest(self, ctx: CallContext, c: C.Attest) -> tuple[str, int]:
        r = self._rounds.get(c.round_id)
        _require(r is not None, f"unknown round {c.round_id}")
        assert r is not None
        _require(
            r.status == "aggregating" and ctx.block_number < r.aggregate_deadline,
            f"round {r.id} takes no attestations: it is {r.status} (aggregate deadline block "
            f"{r.aggregate_deadline})",
        )
        m = self._models[r.model_id]
        _require(ctx.signer in m.validators, f"{ctx.signer} is not a validator of model {m.id}")
        submitted = {u.worker for u in self._round_updates(r.id)}
        _require(
            ctx.signer not in submitted,
            f"{ctx.signer} has an update in round {r.id}: it cannot judge it",
        )
        mine = [a for a in self._attestations.values() if a.round_id == r.id]
        # once each: a replaceable verdict would let a validator follow the others' digests
        _require(
            all(a.validator != ctx.signer for a in mine),
            f"{ctx.signer} already attested round {r.id}",
        )
        table = self._verdict_table(ctx, c)
        listed, refused = c.judged(table)
        judged = [x.account for x in listed] + [x.account for x in refused]
        _require(len(set(judged)) == len(judged), "an update is both accepted and rejected")
        _require(
            set(judged) == submitted,
            f"an attestation must judge exactly the {len(submitted)} updates of round {r.id}",
        )
        if listed:
            total = sum(x.score for x in listed)
            _require(total == C.PERMILL, f"contribution scores sum to {total}, not {C.PERMILL}")
        else:
            _require(
                c.aggregate_cid == r.base_cid,
                "with no accepted update the aggregate must be the round's base model "
                f"{r.base_cid}",
            )
        aid = self._take_id("attestation")
        att = _Attestation(
            aid,
            r.id,
            ctx.signer,
            c.result_digest(table),
            c.aggregate_cid,
            c.accuracy_ppm,
            c.loss_ppm,
            [[x.account, x.score] for x in listed],
            [[x.account, x.reason] for x in refused],
            ctx.block_number,
            ctx.extrinsic_index,
            c.metric_value(),
            c.state_cid,
            c.base_metric_ppm,
            None if c.table is None else c.table.cid,
        )
        self._attestations[aid] = att
        self._settle_if_quorum(r, ctx.block_number, ctx.extrinsic_index, ctx.block_hash)
        return ("attestation", aid)

    def _settle_if_quorum(self, r: _Round, block: int, extrinsic: int, block_hash: str) -> None:
        """Finalize ``r`` if k of the model's current validators attested one digest (k the
        pool threshold, the validators' updates excluded): after each attestation, and after
        a change of validators, which can make a quorum of attestations already sent."""
        m = self._models[r.model_id]
        if r.status != "aggregating" or len(m.validators) < 2:
            return
        submitted = {u.worker for u in self._round_updates(r.id)}
        by_digest: dict[str, list[_Attestation]] = {}
        for a in sorted(self._attestations.values(), key=lambda a: a.id):
            if a.round_id == r.id and a.validator in m.validators and a.validator not in submitted:
                by_digest.setdefault(a.digest, []).append(a)
        k = pool_threshold(len(m.validators))
        agreeing = next((v for v in by_digest.values() if len(v) >= k), None)
        if agreeing is not None:
            self._finalize(r, m, _combined(agreeing), block)
            self._continue_plan(r, block, extrinsic, block_hash)

    def _table_part(self, ctx: CallContext, c: C.TablePart) -> None:
        """Hold a part of the signer's verdict table until its attestation, later in the
        same extrinsic, takes it (parts are dropped when the extrinsic ends)."""
        r = self._rounds.get(c.round_id)
        _require(r is not None, f"unknown round {c.round_id}")
        assert r is not None
        m = self._models[r.model_id]
        _require(ctx.signer in m.validators, f"{ctx.signer} is not a validator of model {m.id}")
        parts = self._table_parts.setdefault(ctx.signer, [])
        _require(len(parts) < C.MAX_TABLE_PARTS, f"a table has at most {C.MAX_TABLE_PARTS} parts")
        _require(
            all(rid == c.round_id for rid, _ in parts),
            "a table's parts must all name the same round",
        )
        parts.append((c.round_id, bytes.fromhex(c.data[2:])))

    def _verdict_table(self, ctx: CallContext, c: C.Attest) -> C.VerdictTable | None:
        """The table an attestation names, assembled from the signer's parts before it in
        the same extrinsic and checked against its digest and CID; None for an inline one."""
        parts = self._table_parts.pop(ctx.signer, [])
        if c.table is None:
            _require(not parts, "table parts without an attestation naming their table")
            return None
        from ...storage.unixfs import compute_cid

        _require(
            not c.accepted and not c.rejected,
            "an attestation with a table lists no update inline",
        )
        _require(parts, "the table's parts must come before the attestation in its batch")
        _require(
            all(rid == c.round_id for rid, _ in parts),
            f"the table's parts name another round than {c.round_id}",
        )
        data = b"".join(part for _, part in parts)
        digest = "0x" + blake2b(data, digest_size=32).hexdigest()
        _require(digest == c.table.digest, "the table's parts do not match its digest")
        _require(compute_cid(data) == c.table.cid, "the table's parts do not match its CID")
        try:
            reader = Reader(data)
            table = C.VerdictTable.decode_fields(reader)
            reader.done()
        except CodecError as e:
            raise _Reject(f"malformed table: {e}") from None
        assert isinstance(table, C.VerdictTable)
        for name, rows in (("accepted", table.accepted), ("rejected", table.rejected)):
            ids = [account_id(x.account) for x in rows]
            _require(ids == sorted(ids), f"the table's {name} updates are not sorted by account")
        return table

    def _finalize(self, r: _Round, m: _Model, att: _Attestation, block: int) -> None:
        """Apply a quorum's verdict (its reports combined): slash rejected updates, reward
        accepted ones, advance; a round that does not improve the model's metric pays and
        slashes nobody and gives its budget back, its model adopted or not by the model's
        improvement rule."""
        updates = {u.worker: u for u in self._round_updates(r.id)}
        improved, why = _improvement(m, att)
        r.improved = improved if att.accepted else None
        if att.accepted and not improved:
            self._unimproved(r, m, att, updates, block, why)
            return
        # when every update fails, the round itself was bad (e.g. hostile hints): nobody is
        # slashed, and the starter cannot profit from a round nobody could pass
        permill = m.reward_policy["slash_permill"] if att.accepted else 0
        slashed = 0
        if not att.accepted:  # nobody to share a rejected deposit with: each goes back
            self._refund_deposits(r, block)
        for account, reason in sorted(att.rejected, key=lambda x: account_id(x[0])):
            if not att.accepted:
                updates[account].status, updates[account].reason = "rejected", reason
                continue
            stake = self._stakes.get((account, m.id), 0)
            amount = stake * permill // C.PERMILL
            if amount:
                if stake == amount:
                    del self._stakes[(account, m.id)]
                else:
                    self._stakes[(account, m.id)] = stake - amount
            slashed += amount
            sid = self._take_id("slash")
            self._slashes[sid] = _Slash(
                sid, r.id, m.id, account, amount, stake, permill, reason, block
            )
            updates[account].status, updates[account].reason = "rejected", reason
        # slashed stake and rejected deposits join the pot, so honest contributors gain what
        # poisoners lose
        taken = self._take_deposits(r, m, att, block) if att.accepted else 0
        pot, r.escrow = r.escrow + slashed + taken, 0
        self._record_verdict(r, att, block)
        if not att.accepted:
            r.status, r.note = "failed", "validators rejected every update"
            self._new_payout(m.id, r.starter, pot, "round_refund", block)
            return
        accepted = sorted(att.accepted, key=lambda x: account_id(x[0]))
        shares = self._shares(m, pot, accepted)
        for (account, score), amount in zip(accepted, shares, strict=True):
            updates[account].status, updates[account].contribution = "accepted", score
            payout = self._new_payout(m.id, account, amount, "round_reward", block)
            rid = self._take_id("reward")
            self._rewards[rid] = _Reward(rid, r.id, m.id, account, amount, score, payout)
        self._adopt(r, m, att)

    def _shares(self, m: _Model, pot: int, accepted: list[list[Any]]) -> list[int]:
        """``pot`` split among ``accepted`` ([account, score] in account-id order) by the
        model's reward policy, exactly: the rounding remainder goes to the largest
        contributor (first in account order)."""
        kind = m.reward_policy["kind"]
        if kind == "equal":
            shares = [pot // len(accepted)] * len(accepted)
        elif kind == "reputation":
            # score x (1 + reputation before this round, capped at one whole round's share)
            before = self._reputation_scores(m.id)
            weights = [s * (C.PERMILL + min(before.get(a, 0), C.PERMILL)) for a, s in accepted]
            total = sum(weights)
            shares = [pot * w // total for w in weights] if total else [0] * len(accepted)
        else:  # proportional, drt and prediction-market: by contribution score
            shares = [pot * score // C.PERMILL for _, score in accepted]
        top = max(range(len(accepted)), key=lambda i: (accepted[i][1], -i))
        shares[top] += pot - sum(shares)
        return shares

    def _take_deposits(self, r: _Round, m: _Model, att: _Attestation, block: int) -> int:
        """Under a quorum's verdict with accepted updates: the rejected updates' deposits are
        taken (returned, for the round's accepted contributors), the accepted ones' refunded
        once ``deposit_wait_blocks`` have passed."""
        rejected = {account for account, _ in att.rejected}
        taken = 0
        for u in self._round_updates(r.id):
            if u.deposit_status != "held":
                continue
            if u.worker in rejected:
                u.deposit_status = "taken"
                taken += u.deposit
            else:
                u.deposit_status = "refund_due"
                r.deposits_due = block + self._params["deposit_wait_blocks"]
        return taken

    def _refund_deposits(self, r: _Round, block: int) -> None:
        """Owe every deposit of ``r`` still held or due back to its worker."""
        for u in sorted(self._round_updates(r.id), key=lambda u: account_id(u.worker)):
            if u.deposit_status in ("held", "refund_due"):
                u.deposit_status = "refunded"
                self._new_payout(r.model_id, u.worker, u.deposit, "deposit_refund", block)
        r.deposits_due = None

    def _adopt(self, r: _Round, m: _Model, att: _Attestation) -> None:
        """The quorum's model (and server state) becomes the model's next round."""
        m.global_cid = att.aggregate_cid
        m.state_cid = att.state_cid
        m.round += 1
        r.number = m.round
        r.status = "finalized"

    def _record_verdict(self, r: _Round, att: _Attestation, block: int) -> None:
        r.aggregate_cid = att.aggregate_cid
        r.state_cid = att.state_cid
        r.metrics = {"accuracy_ppm": att.accuracy_ppm, "loss_ppm": att.loss_ppm}
        if att.metric_ppm is not None:
            r.metrics["metric_ppm"] = att.metric_ppm
        if att.base_metric_ppm is not None:
            r.metrics["base_metric_ppm"] = att.base_metric_ppm
        r.digest = att.digest
        r.ended_block = block

    def _unimproved(self, r: _Round, m: _Model, att: _Attestation, updates, block, why):
        """A round whose model is no better than its base: nobody is paid or slashed (a
        slash would only enrich the starter), the budget goes back; the model advances only
        if its rule adopts such rounds."""
        self._record_verdict(r, att, block)
        accepted = {account for account, _ in att.accepted}
        for account, u in updates.items():
            u.status = "accepted" if account in accepted else "rejected"
            if account not in accepted:
                u.reason = dict(att.rejected)[account]
        pot, r.escrow = r.escrow, 0
        self._new_payout(m.id, r.starter, pot, "round_refund", block)
        # rejected deposits never go to the starter: the accepted contributors share them
        taken = self._take_deposits(r, m, att, block)
        if taken:
            listed = sorted(att.accepted, key=lambda x: account_id(x[0]))
            for (account, _), amount in zip(listed, self._shares(m, taken, listed), strict=True):
                self._new_payout(m.id, account, amount, "deposit_share", block)
        rule = m.improvement or _DEFAULT_RULE
        if rule["unimproved"] == "reject":
            r.status, r.note = "failed", f"{why}: not adopted, budget refunded"
            return
        self._adopt(r, m, att)
        r.note = f"{why}: adopted without rewards, budget refunded"

    def _fail_round(self, r: _Round, block: int, note: str) -> None:
        r.status, r.note, r.ended_block = "failed", note, block
        refund, r.escrow = r.escrow, 0
        self._new_payout(r.model_id, r.starter, refund, "round_refund", block)
        self._refund_deposits(r, block)

    def _advance_rounds(self, block: int, block_hash: str) -> None:
        """Apply the deadlines of every round that exists at the start of the tick, in id
        order (a plan's round opened meanwhile is first checked in the next tick)."""
        for r in sorted(self._rounds.values(), key=lambda r: r.id):
            self._round_deadlines(r, block, block_hash)
            if r.deposits_due is not None and block >= r.deposits_due:
                self._refund_deposits(r, block)

    def _round_deadlines(self, r: _Round, b: int, block_hash: str = "") -> None:
        """Deadlines are the first block in which a call is refused, so a round moves on at
        the end of the block before: no round outlives its deadlines."""
        if r.status == "open" and b + 1 >= r.submit_deadline:
            n = len(self._round_updates(r.id))
            if n >= r.spec["min_clients"]:
                r.status = "aggregating"
            else:
                self._fail_round(
                    r, b, f"{n} updates by the deadline, {r.spec['min_clients']} needed"
                )
                self._continue_plan(r, b, -1, block_hash)
        elif r.status == "aggregating" and b + 1 >= r.aggregate_deadline:
            self._fail_round(r, b, "no quorum of validators attested one result in time")
            self._continue_plan(r, b, -1, block_hash)


_DEFAULT_RULE = _rule_json(C.DEFAULT_IMPROVEMENT)


def _lower_median(values: list[int]) -> int:
    """The lower median: an integer every indexer computes alike, and one of the values."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def _optional_median(values: list[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return _lower_median(present) if present else None


def _normalized(scores: dict[str, int]) -> list[list[Any]]:
    """Scores rescaled to sum to exactly PERMILL (largest remainders first, ties by account
    id); all zero: equal shares the same way. In account-id order."""
    accounts = sorted(scores, key=account_id)
    total = sum(scores.values())
    weights = {a: scores[a] for a in accounts} if total > 0 else dict.fromkeys(accounts, 1)
    total = sum(weights.values())
    shares = {a: weights[a] * C.PERMILL // total for a in accounts}
    left = C.PERMILL - sum(shares.values())
    by_remainder = sorted(
        accounts, key=lambda a: (-(weights[a] * C.PERMILL % total), account_id(a))
    )
    for a in by_remainder[:left]:
        shares[a] += 1
    return [[a, shares[a]] for a in accounts]


def _combined(agreeing: list[_Attestation]) -> _Attestation:
    """One verdict from the k attestations that agree on the exact result (the digest):
    that result, with each reported number (metrics, the base model's metric, each accepted
    update's score) the lower median of the reports, the scores then rescaled to PERMILL. A
    validator whose last float bits differ still agrees; a minority cannot move a median
    outside what the others reported."""
    first = agreeing[0]
    if len(agreeing) == 1:
        return first
    accepted = sorted(account for account, _ in first.accepted)
    reported = [dict(a.accepted) for a in agreeing]
    scores = {acc: _lower_median([r[acc] for r in reported]) for acc in accepted}
    return _Attestation(
        first.id,
        first.round_id,
        first.validator,
        first.digest,
        first.aggregate_cid,
        _lower_median([a.accuracy_ppm for a in agreeing]),
        _lower_median([a.loss_ppm for a in agreeing]),
        _normalized(scores) if scores else [],
        [list(x) for x in first.rejected],
        first.block_number,
        first.extrinsic_index,
        _optional_median([a.metric_ppm for a in agreeing]),
        first.state_cid,
        _optional_median([a.base_metric_ppm for a in agreeing]),
    )


def _improvement(m: _Model, att: _Attestation) -> tuple[bool, str]:
    """Whether the quorum's new model is no worse than the round's base by more than the
    model's tolerance, on the model's metric in its direction; and a note saying so. Without
    a reported base metric (validators of before), it counts as improved."""
    from ...fl.contract import LOWER_IS_BETTER

    metric = m.metric
    if metric == "accuracy":
        new: int | None = att.accuracy_ppm
    elif metric == "loss":
        new = att.loss_ppm
    else:
        new = att.metric_ppm
    base = att.base_metric_ppm
    if new is None or base is None:
        return True, ""
    rule = m.improvement or _DEFAULT_RULE
    lower = metric.lower() in LOWER_IS_BETTER
    gain = base - new if lower else new - base
    if gain >= -int(rule["tolerance_ppm"]):
        return True, ""
    return False, (
        f"no improvement: {metric} {base / C.PERMILL:.6g} -> {new / C.PERMILL:.6g} "
        f"(tolerance {int(rule['tolerance_ppm']) / C.PERMILL:g})"
    )
