"""Property test: thousands of random, mutated and adversarial calls keep the books and replay.

Invariants: a rejected call changes nothing, and what its transfers put into a pool is owed
back to their senders as ``refund`` payouts; counted transfers minus settled payouts equal each
model's obligations; the books never count more in a pool than the transfers fed put there; no
stake is negative; at most one live round per model and none past its deadlines; a finalized
round pays out exactly its budget plus its slashes; replays and mid-way snapshots reach the
same hash. (Value taken out of a pool beside the protocol's payouts, a loss, is the subject of
test_protocol_value_safety.py; these sequences never move it.)
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_sim import ACCOUNTS, CID_A, CID_W, Sim, replay

from decentralml_jupyter.protocol import (
    AddValidator,
    AllowList,
    Anyone,
    ApproveModel,
    MinStake,
    ProtocolParams,
    RemoveValidator,
    RetireModel,
    RewardPolicy,
    SetEligibleWorkers,
    SetProtocolParam,
    SetStrategy,
    StartRoundProposal,
    State,
    Transfer,
    encode_call,
    encoders,
)
from decentralml_jupyter.protocol import calls as C
from decentralml_jupyter.protocol.calls import (
    UNIMPROVED,
    ConfigureStrategy,
    ImprovementRule,
    MinReputation,
    SetImprovementRule,
    StrategyParam,
)
from decentralml_jupyter.protocol.state import PARAM_BOUNDS

TEST_CID = "QmTestSet55555555555555555555555555555555555555"
SALT = "0x" + "ab" * 16
COMMITMENT = C.market_commitment(TEST_CID, SALT)
# short locks and votes, so that a few dozen steps see many tallies and payouts
PARAMS = ProtocolParams(
    unstake_lock_blocks=2, task_review_blocks=2, quorum_permill=0, min_voting_blocks=1,
    deposit_wait_blocks=2, reveal_blocks=3,
)  # fmt: skip
WHO = tuple(ACCOUNTS.values())
KINDS = (
    "propose",
    "stake",
    "stake",
    "unstake",
    "task",
    "assign",
    "submit",
    "decide",
    "propose",
    "vote",
    "vote",
    "settle",
    "settle",
    "mutate",
    "tick",
    "tick",
    "start",
    "register",
    "round",
    "round",
    "update",
    "update",
    "update",
    "attest",
    "attest",
    "attest",
    "reveal",
    "market",
    "market",
)
MODES = ("exact", "exact", "exact", "none", "amount", "dest", "asset", "source", "extra")
LOSSY = ("amount", "dest", "asset")  # from a pool, these would take value out beside a payout


def transfers(draw, mode: str, source: str, dest: str, amount: int, asset):
    exact = Transfer(source, dest, amount, asset)
    if mode == "none":
        return ()
    if mode == "amount":
        return (Transfer(source, dest, amount + 1, asset),)
    if mode == "dest":
        return (Transfer(source, draw(st.sampled_from(WHO)), amount, asset),)
    if mode == "asset":
        return (Transfer(source, dest, amount, 9 if asset is None else None),)
    if mode == "source":
        return (Transfer(draw(st.sampled_from(WHO)), dest, amount, asset),)
    if mode == "extra":  # someone's unrelated transfer into the same account first
        return (Transfer(draw(st.sampled_from(WHO)), dest, 1, asset), exact)
    return (exact,)


def random_spec(draw, reward_max: int = 60):
    clients = draw(st.integers(1, 4))
    return encoders.round_spec(
        clients,
        draw(st.integers(1, clients + 1)),  # sometimes more than clients: rejected
        submit_blocks=draw(st.integers(0, 3)),
        aggregate_blocks=draw(st.integers(0, 3)),
        reward=draw(st.integers(0, reward_max)),
    )


def random_action(draw, n_models: int):
    kind = draw(st.integers(0, 7))
    target = max(1, draw(st.integers(n_models - 2, n_models + 1)))
    if kind == 0:
        return target, ApproveModel()
    if kind == 1:
        return target, RetireModel()
    if kind == 2:
        return target, AddValidator(draw(st.sampled_from(WHO)))
    if kind == 3:
        return target, RemoveValidator(draw(st.sampled_from(WHO)))
    if kind == 4:
        choice = draw(st.integers(0, 3))
        if choice == 0:
            return target, SetStrategy(
                draw(st.sampled_from(("fedavg", "krum", "bogus", "fedavg:secure")))
            )
        if choice == 1:  # with parameters, some out of range or unknown: refused
            name, value = draw(
                st.sampled_from((("eta", "0.05"), ("eta", "-1"), ("momentum", "1"), ("f", "2")))
            )
            return target, ConfigureStrategy("fedavgm", (StrategyParam(name, value),))
        rule = ImprovementRule(draw(st.integers(0, 300_000)), draw(st.sampled_from(UNIMPROVED)))
        return target, SetImprovementRule(rule)
    if kind == 5:
        elig = draw(
            st.sampled_from(
                (
                    Anyone(),
                    AllowList(WHO[:3]),
                    MinStake(draw(st.integers(0, 50))),
                    MinReputation(draw(st.integers(0, 1_500_000))),
                )
            )
        )
        return target, SetEligibleWorkers(elig)
    if kind == 6:
        return target, StartRoundProposal(random_spec(draw))
    name = draw(st.sampled_from(("unstake_lock_blocks", "task_review_blocks", "quorum_permill")))
    lo, _ = PARAM_BOUNDS[name]  # at and just below its lower bound: some are refused
    return None, SetProtocolParam(name, draw(st.integers(lo - 1, lo + 3)))


def pick(draw, ids: list[int]) -> int:
    """Mostly an existing id, sometimes the next (unknown) one."""
    if ids and draw(st.integers(0, 5)):
        return draw(st.sampled_from(ids))
    return max(ids, default=0) + 1


def attempt(sim: Sim, ledger: dict[int, int], who: str, remark: bytes, ts=(), count=None):
    """One call: a rejection changes nothing but owes back what its transfers put into pools;
    a success moves ``count`` in the books. Refunds count in the books of the model that owes
    them (in its stake asset: other assets are not in its PoolInfo)."""
    ts = tuple(ts)
    before = sim.state.state_hash()
    n_payouts = len(sim.state.payouts())
    probe = State.from_bytes(sim.state.to_bytes()) if ts else None
    out = sim.call(who, remark, ts)
    into = [t for t in ts if t.source != t.dest and t.amount and sim.state.pool_signers(t.dest)]
    refunds = [p for p in sim.state.payouts()[n_payouts:] if p.reason == "refund"]
    owed = [(p.pool, p.dest, p.amount, p.asset_id) for p in refunds]
    fed = [(t.dest, t.source, t.amount, t.asset_id) for t in into]
    if not out.ok:
        assert sim.state.errors()[-1].reason == out.reason
        assert owed == fed  # every transfer into a pool is owed back
        if probe is not None:  # the call alone changes nothing
            _, ctx, raw = sim.log[-1]
            assert not probe.apply(ctx, raw).ok and probe.state_hash() == before, out
        else:
            assert sim.state.state_hash() == before, out
    else:
        assert len(owed) in (len(fed), len(fed) - 1)  # at most one backs the call
        assert all(x in fed for x in owed)
        if count is not None:
            ledger[count[0]] = ledger.get(count[0], 0) + count[1]
    for p in refunds:
        if p.asset_id == sim.state.model(p.model_id).stake_asset:
            ledger[p.model_id] = ledger.get(p.model_id, 0) + p.amount
    return out


def stakers(state: State, target) -> list[str]:
    return [x.account for x in state.stakes(model_id=target) if x.status == "active"]


def step(draw, sim: Sim, ledger: dict[int, int]) -> None:
    s = sim.state
    models = s.models()
    who = draw(st.sampled_from(WHO))
    kind = draw(st.sampled_from(KINDS))
    model_id = pick(draw, [x.id for x in models])
    m = s.model(model_id)
    pool = m.pool if m else draw(st.sampled_from(WHO))
    asset = m.stake_asset if m else None
    mode = draw(st.sampled_from(MODES))

    def go(remark: bytes, ts=(), count=None, signer: str | None = None):
        return attempt(sim, ledger, signer or who, remark, ts, count)

    if kind == "register":
        vals = draw(st.lists(st.sampled_from(WHO), max_size=3, unique=True))
        byo = draw(st.sampled_from((None, None, 7)))
        go(encoders.register_model("m", CID_A, CID_W, stake_asset=byo, validators=vals))
    elif kind == "stake":
        amount = draw(st.integers(0, 1000))
        go(
            encoders.stake(model_id, amount, asset),
            transfers(draw, mode, who, pool, amount, asset),
            (model_id, amount),
        )
    elif kind == "unstake":
        mine = [x.amount for x in s.stakes(model_id=model_id) if x.status == "active"]
        amount = draw(st.sampled_from([*mine, 1, 10**6]))
        who = draw(st.sampled_from([x.account for x in s.stakes(model_id=model_id)] or WHO))
        go(encoders.unstake(model_id, amount))
    elif kind == "task":
        reward, n = draw(st.integers(0, 50)), draw(st.integers(1, 3))
        validation = draw(st.sampled_from(("auto", "manual")))
        call = encoders.create_task(
            model_id, "data_annotator", reward, n, draw(st.integers(1, 6)), validation=validation
        )
        out = go(call, transfers(draw, mode, who, pool, reward * n, asset), (model_id, reward * n))
        for worker in draw(st.lists(st.sampled_from(WHO), max_size=3)) if out.ok else ():
            if go(encoders.assign_task(out.entity_id), signer=worker).ok and draw(st.booleans()):
                sub = go(encoders.submit_result(out.entity_id, CID_W), signer=worker)
                if sub.ok and draw(st.booleans()):
                    decide = draw(
                        st.sampled_from((encoders.accept_submission, encoders.reject_submission))
                    )
                    go(decide(sub.entity_id))  # by the task's creator
    elif kind == "assign":
        go(encoders.assign_task(pick(draw, [t.id for t in s.tasks() if t.status == "open"])))
    elif kind == "submit":
        open_slots = [
            (t.id, a.account) for t in s.tasks() for a in t.assignments if a.status == "assigned"
        ]
        tid = pick(draw, [t.id for t in s.tasks()])
        if open_slots and draw(st.integers(0, 3)):
            tid, who = draw(st.sampled_from(open_slots))
        go(encoders.submit_result(tid, CID_W))
    elif kind == "decide":
        pending = [x for x in s.submissions() if x.status == "pending"]
        sid = pick(draw, [x.id for x in pending])
        sub = next((x for x in pending if x.id == sid), None)
        if sub is not None and draw(st.integers(0, 3)):
            task = s.task(sub.task_id)
            who = draw(st.sampled_from((task.creator, *s.model(task.model_id).validators, who)))
        if draw(st.booleans()):
            go(encoders.accept_submission(sid))
        else:
            go(encoders.reject_submission(sid, "no"))
    elif kind == "propose":
        target, action = random_action(draw, len(models))
        ts, count = (), None
        if isinstance(action, StartRoundProposal) and action.spec.reward:
            t = s.model(target)
            dest = t.pool if t else pool
            amount = action.spec.reward
            ts = transfers(draw, mode, who, dest, amount, t.stake_asset if t else None)
            count = (target, amount)
        out = go(
            encoders.propose(target, action, draw(st.sampled_from((1, 2, 3, 4, 0)))), ts, count
        )
        if out.ok and draw(st.integers(0, 3)):  # most proposals get their stakers' votes
            for voter in stakers(s, target):
                go(encoders.vote(out.entity_id, draw(st.integers(0, 4)) > 0), signer=voter)
    elif kind == "vote":
        pid = pick(draw, [p.id for p in s.proposals(open_only=True)])
        p = s.proposal(pid)
        if p is not None and draw(st.integers(0, 3)):
            target = None if p.target == "protocol" else p.target
            who = draw(st.sampled_from(stakers(s, target) or WHO))
        go(encoders.vote(pid, draw(st.integers(0, 3)) > 0))
    elif kind == "settle":
        pending = s.pending_payouts()
        if not pending:
            sim.tick()
            return
        p = draw(st.sampled_from(pending))
        who = p.pool if draw(st.integers(0, 4)) else who
        booked = p.reason != "migrate" and p.asset_id == s.model(p.model_id).stake_asset
        count = (p.model_id, -p.amount) if booked else None
        if who == p.pool and (mode in LOSSY or p not in s.pending_payouts(ready_only=True)):
            # a pool's signatories move nothing but a payout it can pay (what leaves a pool
            # otherwise is a loss: test_protocol_value_safety.py)
            mode = "none"
        go(
            encoders.settle_payout(p.id),
            transfers(draw, mode, who, p.dest, p.amount, p.asset_id),  # batches move the signer's
            count,
        )
    elif kind == "round":
        who = WHO[0] if draw(st.integers(0, 4)) else who  # WHO[0] owns the seeded models
        training = [x for x in models if x.status == "training"]
        if training and draw(st.integers(0, 4)):
            m = draw(st.sampled_from(training))
            model_id, pool, asset = m.id, m.pool, m.stake_asset
            mode = "exact" if draw(st.integers(0, 3)) else mode
        spec = random_spec(draw)
        plan = draw(st.sampled_from((1, 1, 2, 3)))  # a single round, or a StartRounds plan
        # a prediction market's bounty (refused on models of other policies, or of 0)
        bounty = draw(st.sampled_from((0, 0, 0, 40, 40)))
        budget = spec.reward * plan + bounty
        ts = transfers(draw, mode, who, pool, budget, asset) if budget else ()
        if bounty or (plan == 1 and draw(st.booleans())):
            commitment = draw(st.sampled_from((COMMITMENT, COMMITMENT, "0x" + "00" * 32)))
            call = encoders.start_rounds(model_id, spec, plan, bounty, commitment)
        elif plan == 1:
            call = encoders.start_round(model_id, spec)
        else:
            call = encoders.start_rounds(model_id, spec, plan)
        out = go(call, ts, (model_id, budget))
        if out.ok and draw(st.integers(0, 3)):
            drive_round(draw, sim, go, out.entity_id)
    elif kind == "update":
        live = [r for r in s.rounds() if r.status == "open"]
        if live and draw(st.integers(0, 4)):
            drive_round(draw, sim, go, draw(st.sampled_from(live)).round_id)
        else:  # a wrong, unknown or closed round
            rid = pick(draw, [r.round_id for r in s.rounds()])
            go(encoders.submit_update(rid, CID_W, draw(st.integers(0, 500))))
    elif kind == "attest":
        live = [r for r in s.rounds() if r.status == "aggregating"]
        if live:
            drive_round(draw, sim, go, draw(st.sampled_from(live)).round_id)
        else:
            go(
                encode_call(
                    encoders.attest(
                        pick(draw, []), CID_A, accuracy=1, loss=0, contributions={who: 1}
                    )
                )
            )
    elif kind == "reveal":  # secure rounds' seeds: from anyone, for any round, any peers
        rid = pick(draw, [r.round_id for r in s.rounds()])
        r = s.round(rid)
        peers = sorted(set(r.selected) - set(r.submitted)) if r is not None else []
        if peers and draw(st.integers(0, 1)):
            peers = peers[1:]  # not exactly the dropped: refused
        seed = bytes(32)
        go(encoders.reveal_seeds(rid, seed, dict.fromkeys(peers, seed)))
    elif kind == "mutate":
        base = draw(
            st.sampled_from(
                (
                    encoders.stake(model_id, draw(st.integers(0, 2**70)), asset),
                    encoders.submit_update(model_id, CID_W, 3),
                    encode_call(
                        encoders.attest(model_id, CID_A, accuracy=1, loss=1, contributions={who: 1})
                    ),
                    encode_call(
                        encoders.attest(
                            model_id, CID_A, accuracy=1, loss=1, contributions={who: 1}, metric=2.5
                        )
                    ),
                )
            )
        )
        cut = draw(st.integers(0, len(base)))
        junk = draw(st.binary(max_size=4))
        go(base[:cut] + junk + base[cut + len(junk) :])
    elif kind == "market":  # reveals (right or wrong, by anyone) and validators' scores
        mk = draw(st.sampled_from(s.markets() or [None]))
        target = mk.model_id if mk is not None else model_id
        if draw(st.booleans()):
            signer = mk.owner if mk is not None and draw(st.integers(0, 3)) else who
            salt = SALT if draw(st.integers(0, 3)) else "0x" + "cd" * 16
            go(encoders.reveal_test_set(target, TEST_CID, salt), signer=signer)
        elif mk is not None:
            rounds = [x for x in mk.rounds if s.round(x).rewards]
            if draw(st.integers(0, 4)) == 0:
                rounds = rounds[1:] or [mk.rounds[0]]  # not exactly its rewarded rounds
            vals = s.model(mk.model_id).validators
            for v in draw(st.lists(st.sampled_from((*vals, who)), max_size=3)):
                scores = {x: (0.5, draw(st.sampled_from((0.4, 0.6, 0.7)))) for x in rounds}
                go(encoders.attest_market(mk.market_id, TEST_CID, scores), signer=v)
    elif kind == "start":
        go(encoders.start_training(model_id))
    else:
        sim.tick(draw(st.integers(1, 3)))


def drive_round(draw, sim: Sim, go, rid: int) -> None:
    """Push a round on: some of its clients (or strangers) submit, then validators (or
    strangers) attest, mostly one shared verdict so that quorums form, sometimes another."""
    r = sim.state.round(rid)
    if r.status == "open":
        m = sim.state.model(r.model_id)
        # drt: the model's deposit (sometimes none, sometimes another), paid as drawn
        want = m.deposit if m.reward_policy["kind"] == "drt" else 0
        if draw(st.integers(0, 2)) == 0:
            # a host: some workers delegate to it (or revoke), then it sends their updates
            # (and strangers', sometimes with value attached) in one submit_updates
            host = draw(st.sampled_from([w for w in WHO if w not in m.validators] or WHO))
            for w in draw(st.lists(st.sampled_from((*r.selected, *r.selected, *WHO)), max_size=5)):
                to = draw(st.sampled_from((host, host, host, None)))
                go(encoders.delegate_updates(to), signer=w)
            pool_of = (*r.selected, *r.selected, *r.selected, *WHO)
            named = draw(st.lists(st.sampled_from(pool_of), min_size=1, max_size=6))
            items = [(w, CID_W, draw(st.integers(0, 500))) for w in named]
            ts = transfers(draw, draw(st.sampled_from(MODES)), host, m.pool, 5, m.stake_asset)
            for remark in encoders.submit_updates(rid, items):
                go(remark, ts if draw(st.booleans()) else (), (r.model_id, 0), signer=host)
        for w in draw(st.lists(st.sampled_from((*r.selected, *WHO)), max_size=5)):
            deposit = want if draw(st.integers(0, 4)) else draw(st.sampled_from((0, 1, 5)))
            mode = "exact" if draw(st.integers(0, 3)) else draw(st.sampled_from(MODES))
            ts = transfers(draw, mode, w, m.pool, deposit, m.stake_asset) if deposit else ()
            call = encoders.submit_update(rid, CID_W, draw(st.integers(0, 500)), deposit)
            go(call, ts, (r.model_id, deposit), signer=w)
        r = sim.state.round(rid)
    if r.status != "aggregating":
        return
    shared = draw(st.integers(0, 3))
    validators = sim.state.model(r.model_id).validators
    for v in draw(st.lists(st.sampled_from((*validators, *validators, WHO[4])), max_size=4)):
        verdict = shared if draw(st.integers(0, 4)) else draw(st.integers(0, 3))
        workers = list(r.submitted)
        rejected = {w: "poisoned" for w in workers[: verdict % 3]}
        accepted = {w: 1 + verdict + i for i, w in enumerate(workers[verdict % 3 :])}
        if accepted and verdict == 3:  # a bad sum, built by hand
            scores = tuple(C.Contribution(w, 1) for w in accepted)
            call = C.Attest(rid, CID_A, 1, 1, scores, ())
        else:
            cid = CID_A if accepted else r.base_cid
            # odd verdicts carry the model's own metric (an AttestMetric: the same handler);
            # reports beside the verdict differ from validator to validator (metrics, the
            # base's metric: sometimes worse than the new model, so some rounds improve and
            # some do not), and some verdicts carry a server state, part of the exact result
            judged = dict(
                accuracy=draw(st.sampled_from((0.4, 0.5, 0.6))),
                loss=0.1,
                contributions=accepted,
                rejected=rejected,
                metric=float(verdict) if verdict % 2 else None,
                base_metric=draw(st.sampled_from((None, 0.3, 0.5, 0.7))),
                state_cid=CID_W if verdict == 2 else None,
            )
            if draw(st.integers(0, 3)) == 0:  # the same verdict as a table, in one batch
                before = sim.state.state_hash()
                sent = encoders.verdict(rid, cid, inline_max=0, **judged)
                outs = sim.batch(v, sent.remarks())
                if not outs[-1].ok:  # refused: nothing changed but the error log
                    assert sim.state.state_hash() == before, outs[-1]
                continue
            call = encoders.attest(rid, cid, **judged)
        go(encode_call(call), signer=v)


def seed(sim: Sim, ledger: dict[int, int]) -> None:
    """Models with validators WHO[3:5] (native, left proposed), WHO[1:3] and WHO[3:5] again
    (staked in asset 7: one pool shared by two models in two assets), each staked on; the last
    two are in training, so rounds can run on them. (A model takes funds only with at least
    two validators.)"""
    policies = (
        RewardPolicy(),
        RewardPolicy("reputation", 0, 200_000),
        RewardPolicy("equal", 5, 1_000_000),
        RewardPolicy("drt", 0, 100_000),
        RewardPolicy("prediction-market", 0, 0),
    )
    pools = ((WHO[3:5], None), (WHO[1:3], None), (WHO[3:5], 7), (WHO[2:4], None), (WHO[1:3], 7))
    for (vals, byo), policy in zip(pools, policies, strict=True):
        deposit = 5 if policy.kind == "drt" else 0
        assert sim.call(
            WHO[0],
            encoders.register_model(
                "m", CID_A, CID_W, stake_asset=byo, validators=vals, reward_policy=policy,
                deposit=deposit,
            ),
        ).ok  # fmt: skip
    for model in sim.state.models():
        for who in WHO[:5]:
            t = Transfer(who, model.pool, 100, model.stake_asset)
            assert sim.call(who, encoders.stake(model.id, 100, model.stake_asset), (t,)).ok
            ledger[model.id] = ledger.get(model.id, 0) + 100
    for mid in (2, 3, 4, 5):
        pid = sim.call(WHO[0], encoders.propose(mid, ApproveModel(), 1)).entity_id
        assert sim.call(WHO[0], encoders.vote(pid, True)).ok
    sim.tick(2)
    for mid in (2, 3, 4, 5):
        assert sim.call(WHO[0], encoders.start_training(mid)).ok
    sim.tick()


def fed_balances(log: list[tuple]) -> dict[tuple[str, int | None], int]:
    """Net value every transfer fed so far moved into each (account, asset): a protocol
    remark executes on chain whether the protocol accepts it or not, and so do its transfers."""
    net: dict[tuple[str, int | None], int] = {}
    for entry in log:
        if entry[0] == "apply":
            for t in entry[1].transfers:
                net[(t.dest, t.asset_id)] = net.get((t.dest, t.asset_id), 0) + t.amount
                net[(t.source, t.asset_id)] = net.get((t.source, t.asset_id), 0) - t.amount
    return net


def check_invariants(state: State, ledger: dict[int, int], log: list[tuple] = ()) -> None:
    assert state.losses() == []
    net = fed_balances(log)
    for (pool, asset), amount in state.holdings().items():
        assert state.pool_signers(pool) is not None
        assert 0 < amount <= net.get((pool, asset), 0), (pool, asset, amount)
    for s in state.stakes():
        assert s.amount > 0, s
    for pool in state.pools():
        assert pool.held == pool.obligations == ledger.get(pool.model_id, 0), pool
        assert all(v > 0 for _, v in pool.balances), pool
        assert min(pool.stakes, pool.unbonding, pool.task_escrow, pool.pending_payouts) >= 0
    for t in state.tasks():
        assert 0 <= t.escrow <= t.budget
    for p in state.pending_payouts():
        assert p.amount > 0
    live: set[int] = set()
    for r in state.rounds():
        if r.status in ("open", "aggregating"):
            assert r.model_id not in live, r  # one live round per model
            live.add(r.model_id)
            deadline = r.submit_deadline if r.status == "open" else r.aggregate_deadline
            assert state.last_block + 1 < deadline, r  # nothing outlives its deadlines
            assert r.escrow == r.reward
        else:
            assert r.escrow == 0
        if r.status == "finalized" and r.improved is not False:
            taken = sum(u.deposit for u in r.updates if u.deposit_status == "taken")
            assert sum(r.rewards.values()) == r.reward + sum(r.slashes.values()) + taken, r
        if r.improved is False:  # no improvement: nobody paid or slashed, the budget back
            assert r.rewards == {} and r.slashes == {}, r
            refunds = [
                p for p in state.payouts()
                if p.reason == "round_refund" and p.created_block == r.ended_block
                and p.dest == r.starter and p.model_id == r.model_id
            ]  # fmt: skip
            assert r.reward == 0 or any(p.amount == r.reward for p in refunds), r
        assert all(v >= 0 for v in (*r.rewards.values(), *r.slashes.values()))
        if r.next_round_id is not None:  # a plan's next round: opened by it, as it ended
            nxt = state.round(r.next_round_id)
            assert r.ended_block is not None and r.rounds_left == 0, r
            assert nxt.round_id > r.round_id and nxt.model_id == r.model_id, (r, nxt)
            assert (nxt.starter, nxt.start_block, nxt.proposal_id) == (
                r.starter,
                r.ended_block,
                None,
            ), (r, nxt)
    for mk in state.markets():  # a settled market paid exactly its bounty, once
        if mk.status in ("paid", "forfeited", "refunded"):
            assert sum(mk.paid.values()) == mk.bounty, mk
            if mk.status != "refunded":
                assert mk.owner not in mk.paid, mk
        else:
            assert mk.paid == {}, mk
    for r in state.rounds():  # a deposit is held until a verdict, and then goes once
        for u in r.updates:
            if r.status in ("open", "aggregating") and u.deposit:
                assert u.deposit_status == "held", (r, u)
            elif u.deposit:  # ended: taken, refunded, or owed back after the wait
                assert u.deposit_status in ("refunded", "taken", "refund_due"), (r, u)
    nexts = [r.next_round_id for r in state.rounds() if r.next_round_id is not None]
    assert len(nexts) == len(set(nexts))  # no round is the next of two


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_random_calls_keep_books_and_replay_deterministically(data) -> None:
    sim = Sim(State(PARAMS))
    ledger: dict[int, int] = {}
    seed(sim, ledger)
    n_steps = data.draw(st.integers(40, 120))
    snap_at = data.draw(st.integers(0, n_steps))
    snapshot = None
    for i in range(n_steps):
        if i == snap_at:
            snapshot = (sim.state.to_bytes(), len(sim.log))
        step(data.draw, sim, ledger)
        check_invariants(sim.state, ledger, sim.log)
    final = sim.state.state_hash()
    assert replay(sim.log, State(PARAMS)).state_hash() == final
    if snapshot is not None:
        raw, at = snapshot
        assert replay(sim.log[at:], State.from_bytes(raw)).state_hash() == final
