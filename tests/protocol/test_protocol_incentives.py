"""The reward policies from 0xDeCA10B in the state machine: ``drt`` (Deposit, Refund and Take)
and ``prediction-market`` (a bounty, a committed test set revealed after the plan).

Every test checks the books (what each pool holds equals what it owes) after each step, and
that a replay and a snapshot reach the same state.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_sim import CID_A, CID_W, Sim, check_books, ok, pass_proposal, rejected, replay
from test_protocol_rounds import CID_AGG, CID_U, VALIDATORS, start, submit_all, training_model

from decentralml_jupyter.protocol import (
    RewardPolicy,
    SetDeposit,
    SetRewardPolicy,
    State,
    encode_call,
    encoders,
    market_commitment,
)

DEPOSIT = 50
TEST_CID = "QmTestSet55555555555555555555555555555555555555"
SALT = "0x" + "ab" * 16


def drt_model(sim: Sim, deposit: int = DEPOSIT) -> int:
    return training_model(sim, policy=RewardPolicy("drt", 0, 100_000), deposit=deposit)


def submit_with_deposits(sim: Sim, rid: int, deposit: int = DEPOSIT) -> tuple[str, ...]:
    r = sim.state.round(rid)
    pool = sim.state.model(r.model_id).pool
    for i, w in enumerate(r.selected):
        call = encoders.submit_update(rid, CID_U[i], 100, deposit)
        ok(sim, w, call, [sim.pay(w, pool, deposit)])
        check_books(sim.state)
    return r.selected


def verdict(
    sim: Sim, rid: int, accepted: dict, rejected_: dict | None = None, base=None, acc=0.9,
    validators=None,
) -> None:  # fmt: skip
    """The given validators (default: the first k of VALIDATORS, k the model's quorum) attest
    the same verdict."""
    if validators is None:
        n = len(sim.state.model(sim.state.round(rid).model_id).validators)
        validators = VALIDATORS[: n // 2 + 1]
    for v in validators:
        call = encoders.attest(
            rid,
            CID_AGG if accepted else sim.state.round(rid).base_cid,
            accuracy=acc,
            loss=0.2,
            contributions=accepted,
            rejected=rejected_,
            base_metric=base,
        )
        ok(sim, v, encode_call(call))
    check_books(sim.state)


def same_after_replay(sim: Sim) -> None:
    final = sim.state.state_hash()
    assert replay(sim.log).state_hash() == final
    assert State.from_bytes(sim.state.to_bytes()).state_hash() == final


# -- drt ------------------------------------------------------------------------------------


def test_drt_needs_a_deposit_at_registration_and_by_governance(sim: Sim) -> None:
    rejected(
        sim,
        "alice",
        encoders.register_model(
            "m", CID_A, CID_W, validators=VALIDATORS, reward_policy=RewardPolicy("drt", 0, 0)
        ),
        match="drt policy needs a deposit above 0",
    )
    mid = training_model(sim)  # proportional, no deposit
    drt = SetRewardPolicy(RewardPolicy("drt"))
    rejected(sim, "alice", encoders.propose(mid, drt, 10), match="needs a deposit above 0")
    # a deposit of 0 passed meanwhile voids the change when it is tallied
    pid = ok(sim, "alice", encoders.propose(mid, SetDeposit(DEPOSIT), 10)).entity_id
    ok(sim, "alice", encoders.vote(pid, True))
    sim.tick(11)
    pass_proposal(sim, mid, drt)
    rejected(sim, "alice", encoders.propose(mid, SetDeposit(0), 10), match="above 0")
    assert sim.state.model(mid).deposit == DEPOSIT
    pass_proposal(sim, mid, SetRewardPolicy(RewardPolicy("drt")))
    m = sim.state.model(mid)
    assert (m.reward_policy["kind"], m.deposit) == ("drt", DEPOSIT)
    registered = ok(
        sim,
        "alice",
        encoders.register_model(
            "m", CID_A, CID_W, validators=VALIDATORS, reward_policy=RewardPolicy("drt"),
            deposit=7,
        ),
    )  # fmt: skip
    assert sim.state.model(registered.entity_id).deposit == 7
    same_after_replay(sim)


def test_an_update_without_its_deposit_in_the_batch_is_refused_and_owed_back(sim: Sim) -> None:
    mid = drt_model(sim)
    rid = start(sim, mid)
    w = sim.state.round(rid).selected[0]
    pool = sim.state.model(mid).pool
    other = sim.state.round(rid).selected[1]
    # no deposit named: the model asks one
    rejected(sim, w, encoders.submit_update(rid, CID_U[0], 10), match="asks a deposit of 50")
    # less than the deposit, named as the deposit, or paid: refused, the transfer owed back
    rejected(
        sim, w, encoders.submit_update(rid, CID_U[0], 10, 49), [sim.pay(w, pool, 49)],
        match="asks a deposit of 50",
    )  # fmt: skip
    rejected(
        sim, w, encoders.submit_update(rid, CID_U[0], 10, DEPOSIT), [sim.pay(w, pool, 49)],
        match="no unused transfer of 50",
    )  # fmt: skip
    # someone else's transfer does not back it; a self-transfer moves nothing
    rejected(
        sim, w, encoders.submit_update(rid, CID_U[0], 10, DEPOSIT), [sim.pay(other, pool, 50)],
        match="no unused transfer",
    )  # fmt: skip
    rejected(
        sim, w, encoders.submit_update(rid, CID_U[0], 10, DEPOSIT), [sim.pay(pool, pool, 50)],
        match="no unused transfer",
    )  # fmt: skip
    # a deposit named on a model without drt
    plain = training_model(sim)
    prid = start(sim, plain)
    pw = sim.state.round(prid).selected[0]
    rejected(
        sim, pw, encoders.submit_update(prid, CID_U[0], 10, DEPOSIT),
        [sim.pay(pw, sim.state.model(plain).pool, DEPOSIT)], match="asks a deposit of 0",
    )  # fmt: skip
    check_books(sim.state)
    assert sim.state.round(rid).submitted == ()
    same_after_replay(sim)


def test_drt_refunds_accepted_deposits_after_the_wait_and_shares_rejected_ones(
    sim: Sim,
) -> None:
    mid = drt_model(sim)
    rid = start(sim, mid, reward=1000)
    a, b, poisoner = submit_with_deposits(sim, rid)
    u = {x.worker: x for x in sim.state.round(rid).updates}
    assert all((x.deposit, x.deposit_status) == (DEPOSIT, "held") for x in u.values())
    assert sim.state.pool(mid).deposits == 3 * DEPOSIT
    stake_before = sim.state.stakes(model_id=mid, account=poisoner)[0].amount
    verdict(sim, rid, {a: 3, b: 1}, {poisoner: "norm bound exceeded"})
    r = sim.state.round(rid)
    assert r.status == "finalized"
    slash = stake_before // 10
    pot = 1000 + slash + DEPOSIT  # the poisoner's deposit is taken for the contributors
    assert sum(r.rewards.values()) == pot
    assert r.rewards[b] == pot // 4
    status = {x.worker: x.deposit_status for x in r.updates}
    assert status == {a: "refund_due", b: "refund_due", poisoner: "taken"}
    # nothing of the deposits goes to the owner or the validators
    paid_to = {p.dest for p in sim.state.pending_payouts()}
    assert paid_to == {a, b}
    assert sim.state.pool(mid).deposits == 2 * DEPOSIT
    # held for the wait (deposit_wait_blocks, 10 by default), then owed back
    wait = sim.state.params.deposit_wait_blocks
    sim.tick(wait - 1)
    assert not [p for p in sim.state.payouts() if p.reason == "deposit_refund"]
    sim.tick(2)
    refunds = {p.dest: p.amount for p in sim.state.payouts() if p.reason == "deposit_refund"}
    assert refunds == {a: DEPOSIT, b: DEPOSIT}
    assert {x.worker: x.deposit_status for x in sim.state.round(rid).updates}[a] == "refunded"
    check_books(sim.state)
    sim.settle_all()
    pool = sim.state.pool(mid)
    assert pool.deposits == 0 and pool.pending_payouts == 0
    assert pool.held == pool.stakes  # only the stakes are left in the pool
    check_books(sim.state)
    same_after_replay(sim)


def test_an_unimproved_round_shares_taken_deposits_with_contributors_not_the_owner(
    sim: Sim,
) -> None:
    mid = drt_model(sim)
    rid = start(sim, mid, reward=1000)
    a, b, poisoner = submit_with_deposits(sim, rid)
    # the new model is worse than the base: no reward, no slash, the budget back to alice
    verdict(sim, rid, {a: 1, b: 1}, {poisoner: "norm"}, base=0.95, acc=0.5)
    r = sim.state.round(rid)
    assert r.improved is False and r.rewards == {} and r.slashes == {}
    shares = {p.dest: p.amount for p in sim.state.payouts() if p.reason == "deposit_share"}
    assert shares == {a: DEPOSIT // 2, b: DEPOSIT // 2}
    refund = [p for p in sim.state.payouts() if p.reason == "round_refund"]
    assert [(p.dest, p.amount) for p in refund] == [(r.starter, 1000)]
    sim.tick(sim.state.params.deposit_wait_blocks + 1)
    refunds = {p.dest for p in sim.state.payouts() if p.reason == "deposit_refund"}
    assert refunds == {a, b}
    sim.settle_all()
    check_books(sim.state)
    assert sim.state.pool(mid).held == sim.state.pool(mid).stakes
    same_after_replay(sim)


@pytest.mark.parametrize("how", ["deadline", "all rejected"])
def test_deposits_of_a_failed_round_go_back_at_once(sim: Sim, how: str) -> None:
    mid = drt_model(sim)
    rid = start(sim, mid, reward=1000)
    selected = submit_with_deposits(sim, rid)
    if how == "deadline":
        sim.tick(12)  # no quorum before the aggregate deadline
        assert sim.state.round(rid).status == "failed"
    else:
        verdict(sim, rid, {}, dict.fromkeys(selected, "bad"))
    refunds = {p.dest: p.amount for p in sim.state.payouts() if p.reason == "deposit_refund"}
    assert refunds == dict.fromkeys(selected, DEPOSIT)
    check_books(sim.state)
    sim.settle_all()
    assert sim.state.pool(mid).held == sim.state.pool(mid).stakes
    same_after_replay(sim)


def test_a_policy_change_mid_round_keeps_each_updates_deposit(sim: Sim) -> None:
    """Deposits follow the update that made them, not the policy of the day."""
    mid = drt_model(sim)
    rid = start(sim, mid, reward=100, submit_blocks=30, aggregate_blocks=30)
    first = sim.state.round(rid).selected[0]
    pool = sim.state.model(mid).pool
    ok(sim, first, encoders.submit_update(rid, CID_U[0], 1, DEPOSIT), [sim.pay(first, pool, 50)])
    pass_proposal(sim, mid, SetRewardPolicy(RewardPolicy("proportional")))
    second = sim.state.round(rid).selected[1]
    ok(sim, second, encoders.submit_update(rid, CID_U[1], 1))  # no deposit asked now
    sim.tick(31)
    assert sim.state.round(rid).status == "aggregating"
    verdict(sim, rid, {second: 1}, {first: "bad"})
    r = sim.state.round(rid)
    assert sum(r.rewards.values()) == 100 + sum(r.slashes.values()) + DEPOSIT
    sim.settle_all()
    check_books(sim.state)
    same_after_replay(sim)


# -- prediction markets -----------------------------------------------------------------------


def market_model(sim: Sim, metric: str = "accuracy") -> int:
    return training_model(sim, policy=RewardPolicy("prediction-market", 0, 0), metric=metric)


def start_market(
    sim: Sim, mid: int, rounds: int = 2, bounty: int = 600, reward: int = 100, **kw
) -> int:
    spec = encoders.round_spec(3, 2, submit_blocks=5, aggregate_blocks=5)
    spec = spec.__class__(**{**spec.__dict__, "reward": reward})
    commitment = kw.pop("commitment", market_commitment(TEST_CID, SALT))
    pool = sim.state.model(mid).pool
    call = encoders.start_rounds(mid, spec, rounds, bounty, commitment)
    out = ok(sim, "alice", call, [sim.pay("alice", pool, reward * rounds + bounty)])
    check_books(sim.state)
    return out.entity_id


def run_plan(sim: Sim, first: int, scores: list[dict]) -> list[int]:
    """Finalize the plan's rounds with the given contribution weights, one dict per round."""
    rids, rid = [], first
    for weights in scores:
        selected = submit_all(sim, rid)
        accepted = {w: weights.get(i, 0) for i, w in enumerate(selected) if i in weights}
        rejected_ = {w: "bad" for i, w in enumerate(selected) if i not in weights}
        verdict(sim, rid, accepted, rejected_)
        rids.append(rid)
        rid = sim.state.round(rid).next_round_id
    return rids


def attest_market(sim: Sim, who: str, market_id: int, scores: dict, cid: str = TEST_CID):
    return sim.call(who, encoders.attest_market(market_id, cid, scores))


def test_a_prediction_market_pays_its_bounty_by_each_rounds_gain_on_the_revealed_test_set(
    sim: Sim,
) -> None:
    mid = market_model(sim)
    rid = start_market(sim, mid)
    market = sim.state.open_market(mid)
    assert (market.status, market.bounty, market.rounds) == ("running", 600, (rid,))
    assert sim.state.pool(mid).bounties == 600
    # too early: the plan is still running
    rejected(sim, "alice", encoders.reveal_test_set(mid, TEST_CID, SALT), match="after its last")
    r1, r2 = run_plan(sim, rid, [{0: 1, 1: 1}, {0: 3, 1: 1}])
    m = sim.state.market(market.market_id)
    assert m.status == "revealing" and m.rounds == (r1, r2)
    assert sim.state.round(r2).market_id == m.market_id
    # only the owner, only the committed CID and salt
    bob = VALIDATORS[0]
    rejected(sim, bob, encoders.reveal_test_set(mid, TEST_CID, SALT), match="only")
    rejected(
        sim, "alice", encoders.reveal_test_set(mid, TEST_CID, "0x" + "cd" * 16),
        match="do not match",
    )  # fmt: skip
    rejected(sim, "alice", encoders.reveal_test_set(mid, CID_W, SALT), match="do not match")
    ok(sim, "alice", encoders.reveal_test_set(mid, TEST_CID, SALT))
    m = sim.state.market(m.market_id)
    assert (m.status, m.test_cid) == ("scoring", TEST_CID)
    # validators only, the revealed set, exactly the rewarded rounds
    scores = {r1: (0.5, 0.7), r2: (0.7, 0.8)}  # gains 0.2 and 0.1
    rejected(sim, "alice", encoders.attest_market(m.market_id, TEST_CID, scores), match="not a")
    rejected(
        sim, bob, encoders.attest_market(m.market_id, CID_W, scores), match="test set is"
    )  # fmt: skip
    rejected(
        sim, bob, encoders.attest_market(m.market_id, TEST_CID, {r1: (0.5, 0.7)}),
        match="exactly its rewarded rounds",
    )  # fmt: skip
    assert attest_market(sim, bob, m.market_id, scores).ok
    rejected(sim, bob, encoders.attest_market(m.market_id, TEST_CID, scores), match="already")
    assert sim.state.market(m.market_id).status == "scoring"  # 1 of k = 2
    # the second differs in the last digits: the lower median of the reports is taken
    assert attest_market(sim, VALIDATORS[2], m.market_id, {r1: (0.5, 0.71), r2: (0.7, 0.8)}).ok
    m = sim.state.market(m.market_id)
    assert m.status == "paid" and m.gains == {str(r1): 0.2, str(r2): 0.1}
    assert sum(m.paid.values()) == 600
    # round 1 weighs 2, round 2 weighs 1; within a round by contribution score
    w = sim.state.round(r1).selected
    w2 = sim.state.round(r2).selected
    weight = {}
    for rid_, gain in ((r1, 200_000), (r2, 100_000)):
        for acc, score in ((x.worker, x.contribution) for x in sim.state.round(rid_).updates):
            if score:
                weight[acc] = weight.get(acc, 0) + gain * score
    total = sum(weight.values())
    for acc in weight:
        assert abs(m.paid[acc] - 600 * weight[acc] / total) < 2, (acc, m.paid, weight)
    assert set(m.paid) <= set(w) | set(w2)
    assert "alice" not in m.paid and sim.state.pool(mid).bounties == 0
    check_books(sim.state)
    sim.settle_all()
    check_books(sim.state)
    assert sim.state.pool(mid).held == sim.state.pool(mid).stakes
    same_after_replay(sim)


def test_a_market_whose_owner_does_not_reveal_forfeits_the_bounty_to_contributors(
    sim: Sim,
) -> None:
    mid = market_model(sim)
    rid = start_market(sim, mid, rounds=1, bounty=500)
    (r1,) = run_plan(sim, rid, [{0: 3, 1: 1}])
    m = sim.state.open_market(mid)
    assert m.status == "revealing"
    sim.tick(m.reveal_deadline - sim.state.last_block)
    m = sim.state.market(m.market_id)
    assert m.status == "forfeited" and "did not reveal" in m.note
    rewards = sim.state.round(r1).rewards
    top = max(rewards, key=rewards.get)
    assert sum(m.paid.values()) == 500 and m.paid[top] == 375
    rejected(sim, "alice", encoders.reveal_test_set(mid, TEST_CID, SALT), match="no prediction")
    sim.settle_all()
    check_books(sim.state)
    same_after_replay(sim)


def test_a_revealed_set_no_quorum_scores_in_time_forfeits_too(sim: Sim) -> None:
    mid = market_model(sim)
    rid = start_market(sim, mid, rounds=1)
    run_plan(sim, rid, [{0: 1, 1: 1}])
    ok(sim, "alice", encoders.reveal_test_set(mid, TEST_CID, SALT))
    m = sim.state.open_market(mid)
    assert attest_market(sim, VALIDATORS[0], m.market_id, {rid: (0.5, 0.4)}).ok
    sim.tick(m.score_deadline - sim.state.last_block)
    m = sim.state.market(m.market_id)
    assert m.status == "forfeited" and "no quorum" in m.note
    assert sum(m.paid.values()) == 600 and "alice" not in m.paid
    check_books(sim.state)
    same_after_replay(sim)


@pytest.mark.parametrize("metric", ["accuracy", "loss"])
def test_a_market_whose_rounds_did_not_gain_on_the_test_set_refunds_the_owner(
    sim: Sim, metric: str
) -> None:
    """Gains count in the metric's direction: for a loss, lower is better."""
    mid = market_model(sim, metric=metric)
    rid = start_market(sim, mid, rounds=1)
    run_plan(sim, rid, [{0: 1, 1: 1}])
    ok(sim, "alice", encoders.reveal_test_set(mid, TEST_CID, SALT))
    m = sim.state.open_market(mid)
    worse = (0.6, 0.5) if metric == "accuracy" else (0.5, 0.6)
    for v in VALIDATORS[:2]:
        assert attest_market(sim, v, m.market_id, {rid: worse}).ok
    m = sim.state.market(m.market_id)
    assert m.status == "refunded" and m.paid == {m.owner: 600}
    assert m.gains == {str(rid): -0.1}
    sim.settle_all()
    check_books(sim.state)
    same_after_replay(sim)


def test_a_market_is_refused_where_the_policy_or_its_terms_are_wrong(sim: Sim) -> None:
    plain = training_model(sim)
    spec = encoders.round_spec(3, 2, submit_blocks=5, aggregate_blocks=5)
    c = market_commitment(TEST_CID, SALT)
    pool = sim.state.model(plain).pool
    rejected(
        sim, "alice", encoders.start_rounds(plain, spec, 2, 100, c),
        [sim.pay("alice", pool, 100)], match="not prediction-market",
    )  # fmt: skip
    mid = market_model(sim)
    pool = sim.state.model(mid).pool
    rejected(
        sim, "alice", encoders.start_rounds(mid, spec, 2, 0, c), match="bounty above 0"
    )  # fmt: skip
    rejected(
        sim, "alice", encoders.start_rounds(mid, spec, 2, 100, "0x" + "00" * 32),
        [sim.pay("alice", pool, 100)], match="commits to nothing",
    )  # fmt: skip
    # the bounty must come with the plan, from the owner
    rejected(
        sim, "alice", encoders.start_rounds(mid, spec, 2, 100, c), [sim.pay("alice", pool, 99)],
        match="no unused transfer of 100",
    )  # fmt: skip
    check_books(sim.state)
    same_after_replay(sim)


def test_a_wrong_reveal_changes_nothing_and_the_right_one_still_lands(sim: Sim) -> None:
    mid = market_model(sim)
    rid = start_market(sim, mid, rounds=1)
    run_plan(sim, rid, [{0: 1, 1: 1}])
    for salt in ("0x" + "ab" * 17, "0x" + "ab" * 15 + "ac"):
        rejected(sim, "alice", encoders.reveal_test_set(mid, TEST_CID, salt), match="match")
    ok(sim, "alice", encoders.reveal_test_set(mid, TEST_CID, SALT))
    rejected(sim, "alice", encoders.reveal_test_set(mid, TEST_CID, SALT), match="scoring")
    same_after_replay(sim)


# -- random sequences -------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_deposit_and_market_sequences_keep_the_books(data) -> None:
    """Plans of rounds on a drt model and on a prediction-market model, driven by mostly
    honest calls with random verdicts (rejections, unimproved rounds, rounds that fail, all
    rejected), missing or wrong deposits, reveals right, wrong, late or never, scores with or
    without a quorum, payouts settled at random: the books equal what the pools owe after
    every step, a settled market paid exactly its bounty, nobody but contributors got a
    deposit or a bounty (the owner only its own bounty back, or what it earned as a worker),
    and replays and snapshots agree."""
    draw = data.draw
    sim = Sim()
    drt = drt_model(sim)
    pm = market_model(sim)
    for _ in range(draw(st.integers(3, 8))):
        mid = draw(st.sampled_from((drt, pm)))
        if sim.state.open_round(mid) is None and sim.state.open_market(mid) is None:
            plan = draw(st.integers(1, 3))
            if mid == pm:
                start_market(sim, mid, rounds=plan, bounty=draw(st.integers(1, 900)))
            else:
                spec = encoders.round_spec(3, 2, submit_blocks=5, aggregate_blocks=5)
                spec = spec.__class__(**{**spec.__dict__, "reward": 100})
                pool = sim.state.model(mid).pool
                call = encoders.start_rounds(mid, spec, plan)
                ok(sim, "alice", call, [sim.pay("alice", pool, 100 * plan)])
        while (r := sim.state.open_round(mid)) is not None:
            _drive(draw, sim, r.round_id)
            check_books(sim.state)
        mk = sim.state.open_market(mid)
        if mk is not None and mk.status == "revealing":
            how = draw(st.sampled_from(("reveal", "reveal", "wrong", "never")))
            if how != "never":
                salt = SALT if how == "reveal" else "0x" + "cd" * 16
                sim.call("alice", encoders.reveal_test_set(mid, TEST_CID, salt))
            mk = sim.state.market(mk.market_id)
        if mk is not None and mk.status == "scoring":
            rounds = [x for x in mk.rounds if sim.state.round(x).rewards]
            fresh = [v for v in VALIDATORS if v not in mk.scored_by]  # once each
            for v in draw(st.lists(st.sampled_from(fresh), min_size=1, unique=True)):
                scores = {x: (0.5, draw(st.sampled_from((0.4, 0.6, 0.7, 0.9)))) for x in rounds}
                out = sim.call(v, encoders.attest_market(mk.market_id, TEST_CID, scores))
                settled = sim.state.market(mk.market_id).status != "scoring"
                assert out.ok or (settled and "takes no scores" in out.reason), out
        sim.tick(draw(st.integers(1, 25)))
        check_books(sim.state)
        if draw(st.booleans()):
            sim.settle_all()
            check_books(sim.state)
    sim.tick(30)
    sim.settle_all()
    check_books(sim.state)
    for mid in (drt, pm):  # everything owed was paid: only the stakes are left in the pools
        pool = sim.state.pool(mid)
        assert pool.held == pool.stakes and pool.deposits == pool.bounties == 0, pool
    contributors = {u.worker for r in sim.state.rounds() for u in r.updates}
    for p in sim.state.payouts():
        if p.reason in ("deposit_refund", "deposit_share", "market_reward"):
            assert p.dest in contributors, p
    for mk in sim.state.markets():
        assert mk.status in ("paid", "forfeited", "refunded"), mk
        assert sum(mk.paid.values()) == mk.bounty
    same_after_replay(sim)


def _drive(draw, sim: Sim, rid: int) -> None:
    """One round of a plan: some selected workers submit (drt: mostly with their deposit),
    then a quorum judges it at random, or nobody does and it fails at its deadline."""
    r = sim.state.round(rid)
    m = sim.state.model(r.model_id)
    want = m.deposit if m.reward_policy["kind"] == "drt" else 0
    for i, w in enumerate(r.selected):
        if not draw(st.integers(0, 4)):
            continue  # this one drops out
        deposit = want if draw(st.integers(0, 5)) else draw(st.sampled_from((0, 1)))
        paid = want if draw(st.integers(0, 5)) else 0
        ts = [sim.pay(w, m.pool, paid)] if paid else []
        sim.call(w, encoders.submit_update(rid, CID_U[i], 10 + i, deposit), ts)
    r = sim.state.round(rid)
    if r.status == "open":
        sim.tick(r.submit_deadline - sim.state.last_block)
        r = sim.state.round(rid)
    if r.status != "aggregating":
        return
    how = draw(st.sampled_from(("judge", "judge", "judge", "none")))
    if how == "none":
        sim.tick(r.aggregate_deadline - sim.state.last_block)
        return
    workers = list(r.submitted)
    bad = set(draw(st.lists(st.sampled_from(workers), unique=True)))
    accepted = {w: 1 + i for i, w in enumerate(workers) if w not in bad}
    base = draw(st.sampled_from((None, 0.5, 0.95)))
    verdict(sim, rid, accepted, dict.fromkeys(bad, "bad"), base=base, acc=0.9)
    assert sim.state.round(rid).status in ("finalized", "failed")


def test_a_reveal_opens_its_own_market_when_a_new_plan_runs_beside_it(sim: Sim) -> None:
    """A market awaiting its reveal while the owner already runs the next plan (with its own
    market): each reveal goes to the market whose commitment it opens."""
    mid = market_model(sim)
    first = start_market(sim, mid, rounds=1, bounty=300)
    run_plan(sim, first, [{0: 1, 1: 1}])
    salt2 = "0x" + "77" * 16
    second = start_market(
        sim, mid, rounds=1, bounty=200, commitment=market_commitment(CID_W, salt2)
    )
    m1, m2 = sim.state.markets(mid)
    assert (m1.status, m2.status) == ("revealing", "running")
    rejected(sim, "alice", encoders.reveal_test_set(mid, CID_W, salt2), match="after its last")
    rejected(sim, "alice", encoders.reveal_test_set(mid, TEST_CID, salt2), match="market 1")
    ok(sim, "alice", encoders.reveal_test_set(mid, TEST_CID, SALT))
    assert sim.state.market(m1.market_id).status == "scoring"
    run_plan(sim, second, [{0: 1, 1: 1}])
    ok(sim, "alice", encoders.reveal_test_set(mid, CID_W, salt2))
    assert [m.status for m in sim.state.markets(mid)] == ["scoring", "scoring"]
    check_books(sim.state)
    same_after_replay(sim)
