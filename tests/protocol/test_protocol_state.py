"""The state machine: each call family's lifecycle, and every rejection leaving state unchanged."""

from __future__ import annotations

import pytest
from protocol_sim import (
    ACCOUNTS,
    CID_A,
    CID_W,
    CUSTODY,
    V1,
    VALS,
    Sim,
    approved_model,
    check_books,
    ok,
    pass_proposal,
    register,
    rejected,
    replay,
    stake,
)

from decentralml_jupyter.protocol import (
    AddValidator,
    AllowList,
    ApproveModel,
    CallContext,
    MinStake,
    OrderingError,
    RemoveValidator,
    RetireModel,
    SetEligibleWorkers,
    SetLicence,
    SetProtocolParam,
    SetStrategy,
    SnapshotError,
    State,
    Transfer,
    encoders,
    multisig_address,
)
from decentralml_jupyter.protocol.accounts import account_id

A, B, CAROL, D, E = (ACCOUNTS[n] for n in ("alice", "bob", "carol", "dave", "eve"))


# ------------------------------------------------------------------------------- models
def test_model_lifecycle(sim: Sim) -> None:
    mid = register(sim, licence="Apache-2.0", jurisdictions=("EU",))
    m = sim.state.model(mid)
    pool = multisig_address(VALS, 2)
    assert (m.status, m.owner, m.pool, m.global_cid, m.round) == ("proposed", A, pool, CID_W, 0)
    assert (m.validators, m.pool_threshold) == (tuple(sorted(VALS, key=account_id)), 2)
    assert sim.state.pool_signers(pool) == (m.validators, 2)
    assert set(m.to_json()) >= {
        "id",
        "name",
        "owner",
        "status",
        "pool",
        "global_cid",
        "round",
        "strategy",
        "validators",
        "total_stake",
    }
    assert sim.state.created_by(0, 0) == [("model", mid)]
    stake(sim, "bob", mid, 500)
    assert sim.state.model(mid).total_stake == 500
    rejected(sim, "alice", encoders.start_training(mid), match="is proposed, not approved")
    pass_proposal(sim, mid, ApproveModel(), voters=("bob",))
    assert sim.state.model(mid).status == "approved"

    rejected(sim, "bob", encoders.start_training(mid), match="only the owner")
    ok(sim, "alice", encoders.start_training(mid))
    assert sim.state.model(mid).status == "training"

    pass_proposal(sim, mid, SetStrategy("fedmedian"), voters=("bob",))
    pass_proposal(sim, mid, SetLicence("CC-BY-4.0"), voters=("bob",))
    assert (sim.state.model(mid).strategy, sim.state.model(mid).licence) == (
        "fedmedian",
        "CC-BY-4.0",
    )
    pass_proposal(sim, mid, RetireModel(), voters=("bob",))
    assert sim.state.model(mid).status == "retired"
    # the stake is refused, and its transfer into the pool is owed back to bob
    rejected(sim, "bob", encoders.stake(mid, 1), [sim.pay("bob", pool, 1)], match="retired")
    [refund] = sim.state.pending_payouts()
    assert (refund.pool, refund.dest, refund.amount, refund.reason) == (pool, B, 1, "refund")
    check_books(sim.state)
    ok(sim, "bob", encoders.unstake(mid, 500))  # unstaking still works once retired
    check_books(sim.state)


@pytest.mark.parametrize("validators", [(), (CAROL,)])
def test_a_model_with_fewer_than_two_validators_takes_no_funds(sim: Sim, validators) -> None:
    mid = register(sim, validators=validators)
    m = sim.state.model(mid)
    # its pool would be the owner's or the single validator's own account
    assert m.pool == (validators[0] if validators else A)
    assert sim.state.pool_signers(m.pool) is None  # not a multisig the protocol tracks
    n = len(validators)
    reason = rejected(
        sim, "bob", encoders.stake(mid, 100), [sim.pay("bob", m.pool, 100)], match=CUSTODY
    )
    assert reason.startswith(f"model {mid} has {n} validator(s)")
    create = encoders.create_task(mid, "data_annotator", 10, 1, 5)
    rejected(sim, "dave", create, [sim.pay("dave", m.pool, 10)], match=CUSTODY)
    assert sim.state.stakes() == [] and sim.state.tasks() == []
    assert sim.state.payouts() == [] and sim.state.holdings() == {}
    pool = sim.state.pool(mid)
    assert (pool.held, pool.obligations, pool.balances) == (0, 0, ())
    # nobody can stake, so nobody can vote: such a model can never be approved
    pid = ok(sim, "alice", encoders.propose(mid, ApproveModel(), 10)).entity_id
    rejected(sim, "alice", encoders.vote(pid, True), match="no stake on model")
    sim.tick(11)
    p = sim.state.proposal(pid)
    assert (p.status, p.note) == ("rejected", "no aye weight")
    assert sim.state.model(mid).status == "proposed"


# ------------------------------------------------------------------------------- stakes
def test_stake_needs_its_exact_transfer_in_the_batch(sim: Sim) -> None:
    mid = register(sim)
    pool = sim.state.model(mid).pool
    call = encoders.stake(mid, 100)
    # each refused stake's transfer that reached the pool is owed back (``rejected`` checks it)
    rejected(sim, "bob", call, [], match="no unused transfer of 100 native")
    rejected(sim, "bob", call, [sim.pay("bob", pool, 99)], match="found: 99 native")
    rejected(sim, "bob", call, [sim.pay("bob", D, 100)], match="no unused transfer")
    rejected(sim, "bob", call, [sim.pay("bob", pool, 100, asset=7)], match="no unused transfer")
    rejected(sim, "bob", call, [sim.pay("carol", pool, 100)], match="no unused transfer")
    rejected(sim, "bob", encoders.stake(mid, 100, 7), [sim.pay("bob", pool, 100, 7)], match="takes")
    rejected(sim, "bob", encoders.stake(mid, 0), match="positive")
    rejected(sim, "bob", encoders.stake(99, 1), [sim.pay("bob", pool, 1)], match="unknown model")
    assert [(p.dest, p.amount, p.asset_id) for p in sim.state.pending_payouts()] == [
        (B, 99, None),
        (B, 100, 7),
        (CAROL, 100, None),
        (B, 100, 7),
        (B, 1, None),
    ]
    assert sim.state.stakes() == []
    check_books(sim.state)
    # one transfer backs one call: two stake remarks in one batch_all with a single transfer
    t = (sim.pay("bob", pool, 100),)
    ext, n_payouts = sim.extrinsic, len(sim.state.payouts())
    sim.extrinsic += 1
    assert sim.state.apply(CallContext(sim.block, "0x00", ext, 1, B, t), call).ok
    again = sim.state.apply(CallContext(sim.block, "0x00", ext, 2, B, t), call)
    assert not again.ok and "no unused transfer" in again.reason
    sim.state.close_extrinsic(sim.block, ext, t)
    assert len(sim.state.payouts()) == n_payouts  # the transfer backed a call: no refund
    assert [(s.account, s.amount) for s in sim.state.stakes()] == [(B, 100)]
    check_books(sim.state)
    assert all(o.ok for o in sim.settle_all())
    assert sim.state.holdings() == {(pool, None): 100}  # the refunds left the pool
    check_books(sim.state)


def test_bring_your_own_token_stake(sim: Sim) -> None:
    mid = register(sim, stake_asset=1984)
    pool = sim.state.model(mid).pool
    rejected(sim, "bob", encoders.stake(mid, 5), [sim.pay("bob", pool, 5)], match="asset 1984")
    [refund] = sim.state.pending_payouts()
    assert (refund.dest, refund.amount, refund.asset_id, refund.reason) == (B, 5, None, "refund")
    stake(sim, "bob", mid, 5, asset=1984)
    [s] = sim.state.stakes(model_id=mid)
    assert (s.account, s.amount, s.asset, s.locked_until) == (B, 5, 1984, None)
    assert set(s.to_json()) >= {"account", "model_id", "amount", "asset", "locked_until"}
    assert sim.state.holdings() == {(pool, None): 5, (pool, 1984): 5}
    check_books(sim.state)


def test_unstake_lock_and_payout(sim: Sim) -> None:
    mid = register(sim)
    pool = sim.state.model(mid).pool
    stake(sim, "bob", mid, 300)
    rejected(sim, "bob", encoders.unstake(mid, 301), match="cannot unstake 301: 300 staked")
    rejected(sim, "carol", encoders.unstake(mid, 1), match="0 staked")
    out = ok(sim, "bob", encoders.unstake(mid, 100))
    assert out.entity == "unbonding"
    lock = sim.state.params.unstake_lock_blocks
    unbond = [s for s in sim.state.stakes(account=B) if s.status == "unbonding"]
    assert [(s.amount, s.locked_until) for s in unbond] == [(100, sim.block + lock)]
    assert sim.state.model(mid).total_stake == 200
    sim.tick(lock)
    assert sim.state.pending_payouts() == []
    sim.tick()
    [p] = sim.state.pending_payouts()
    assert (p.pool, p.dest, p.amount, p.reason) == (pool, B, 100, "unstake")
    check_books(sim.state)

    settle = encoders.settle_payout(p.id)
    rejected(sim, "bob", settle, [sim.pay("bob", B, 100)], match="only be settled by its pool")
    rejected(sim, pool, settle, [], match="no unused transfer")
    ok(sim, pool, settle, [sim.pay(pool, B, 100)])
    rejected(sim, pool, encoders.settle_payout(42), match="unknown payout")
    assert sim.state.pending_payouts() == []
    info = sim.state.pool(mid)
    assert (info.stakes, info.unbonding, info.held, info.obligations) == (200, 0, 200, 200)
    assert sim.state.losses() == []
    # value the pool's signatories move out beside a refused settlement is lost to the books:
    # a wrong amount, or the same payout paid twice, is debited and listed, never re-counted
    rejected(sim, pool, settle, [sim.pay(pool, B, 100)], match="already paid")
    rejected(sim, pool, encoders.settle_payout(42), [sim.pay(pool, B, 99)], match="unknown payout")
    assert [(x["pool"], x["amount"], x["asset"]) for x in sim.state.losses()] == [
        (pool, 100, None),
        (pool, 99, None),
    ]
    info = sim.state.pool(mid)
    assert (info.stakes, info.held, info.obligations) == (200, 1, 200)
    assert sim.state.holdings() == {(pool, None): 1}


# ------------------------------------------------------------------------------- tasks
def test_task_lifecycle_with_payment_and_refund(sim: Sim) -> None:
    mid = approved_model(sim)
    pool = sim.state.model(mid).pool
    create = encoders.create_task(mid, "data_annotator", 10, 3, 5, description="label")
    rejected(sim, "dave", create, [sim.pay("dave", pool, 10)], match="30 native")
    [short] = sim.state.pending_payouts()  # the refused budget's transfer is owed back
    assert (short.pool, short.dest, short.amount, short.reason) == (pool, D, 10, "refund")
    tid = ok(sim, "dave", create, [sim.pay("dave", pool, 30)]).entity_id
    assert sim.state.created_by(sim.block, sim.extrinsic - 1) == [("task", tid)]
    task = sim.state.task(tid)
    assert (task.budget, task.escrow, task.status) == (30, 30, "open")

    rejected(sim, "dave", encoders.assign_task(tid), match="creator cannot")
    rejected(sim, "bob", encoders.submit_result(tid, CID_W), match="no open assignment")
    ok(sim, "bob", encoders.assign_task(tid))
    rejected(sim, "bob", encoders.assign_task(tid), match="already holds")
    sid = ok(sim, "bob", encoders.submit_result(tid, CID_W)).entity_id
    ok(sim, "carol", encoders.assign_task(tid))
    sid2 = ok(sim, "carol", encoders.submit_result(tid, CID_A)).entity_id

    rejected(sim, "bob", encoders.accept_submission(sid), match="only its creator")
    rejected(sim, "dave", encoders.accept_submission(99), match="unknown submission")
    ok(sim, "dave", encoders.accept_submission(sid))
    rejected(sim, "dave", encoders.accept_submission(sid), match="already accepted")
    ok(sim, "dave", encoders.reject_submission(sid2, "wrong labels"))
    [_, pay] = sim.state.pending_payouts()
    assert (pay.dest, pay.amount, pay.reason) == (B, 10, "task_reward")
    # carol's slot was freed by the rejection: she may take the task again
    ok(sim, "carol", encoders.assign_task(tid))
    sim.tick(5)
    rejected(sim, "eve", encoders.assign_task(tid), match="expired")
    rejected(sim, "carol", encoders.submit_result(tid, CID_W), match="expired")
    sim.tick(sim.state.params.task_review_blocks + 1)
    task = sim.state.task(tid)
    assert (task.status, task.escrow) == ("closed", 0)
    assert [a.status for a in task.assignments] == ["accepted", "rejected", "expired"]
    refund = [p for p in sim.state.pending_payouts() if p.reason == "task_refund"]
    assert [(p.dest, p.amount) for p in refund] == [(D, 20)]
    check_books(sim.state)
    assert all(o.ok for o in sim.settle_all())
    assert [(p.dest, p.amount, p.reason) for p in sim.state.payouts("paid")] == [
        (D, 10, "refund"),
        (B, 10, "task_reward"),
        (D, 20, "task_refund"),
    ]
    assert sim.state.pool(mid).task_escrow == 0
    assert sim.state.holdings() == {(pool, None): 1000}  # alice's stake, nothing else
    check_books(sim.state)


def test_auto_validation_lets_validators_decide_and_review_window_closes(sim: Sim) -> None:
    mid = approved_model(sim, validators=(CAROL, V1))
    pool = sim.state.model(mid).pool
    assert pool == multisig_address([CAROL, V1], 2)
    create = encoders.create_task(mid, "model_engineer", 7, 1, 3, validation="auto")
    tid = ok(sim, "dave", create, [sim.pay("dave", pool, 7)]).entity_id
    ok(sim, "bob", encoders.assign_task(tid))
    rejected(sim, "eve", encoders.assign_task(tid), match="no free assignment")
    sid = ok(sim, "bob", encoders.submit_result(tid, CID_W)).entity_id
    rejected(sim, "eve", encoders.accept_submission(sid), match="or the model's validators")
    ok(sim, "carol", encoders.accept_submission(sid))

    tid2 = ok(sim, "dave", create, [sim.pay("dave", pool, 7)]).entity_id
    ok(sim, "bob", encoders.assign_task(tid2))
    sid2 = ok(sim, "bob", encoders.submit_result(tid2, CID_W)).entity_id
    sim.tick(3 + sim.state.params.task_review_blocks + 1)
    rejected(sim, "dave", encoders.accept_submission(sid2), match="already expired")
    assert sim.state.submissions(tid2)[0].status == "expired"
    check_books(sim.state)


def test_eligible_workers_allow_list_and_min_stake(sim: Sim) -> None:
    mid = approved_model(sim)
    pool = sim.state.model(mid).pool
    pass_proposal(sim, mid, SetEligibleWorkers(AllowList((B,))))
    create = encoders.create_task(mid, "model_contributor", 1, 5, 30)  # outlives a vote
    tid = ok(sim, "dave", create, [sim.pay("dave", pool, 5)]).entity_id
    rejected(sim, "carol", encoders.assign_task(tid), match="allow-list")
    ok(sim, "bob", encoders.assign_task(tid))
    pass_proposal(sim, mid, SetEligibleWorkers(MinStake(50)))
    assert sim.state.model(mid).eligibility == {"type": "min_stake", "amount": 50}
    rejected(sim, "carol", encoders.assign_task(tid), match="at least 50")
    stake(sim, "carol", mid, 50)
    ok(sim, "carol", encoders.assign_task(tid))


# ------------------------------------------------------------------------------- governance
def test_votes_are_stake_weighted_replaceable_and_tallied_at_the_deadline(sim: Sim) -> None:
    mid = register(sim)
    stake(sim, "alice", mid, 100)
    stake(sim, "bob", mid, 300)
    pid = ok(sim, "carol", encoders.propose(mid, ApproveModel(), 10)).entity_id
    rejected(sim, "carol", encoders.vote(pid, True), match="no stake on model")
    rejected(sim, "bob", encoders.vote(77, True), match="unknown proposal 77")
    ok(sim, "alice", encoders.vote(pid, True))
    ok(sim, "bob", encoders.vote(pid, True))
    ok(sim, "bob", encoders.vote(pid, False))  # replaces bob's aye
    p = sim.state.proposal(pid)
    assert (p.ayes, p.nays, p.status, p.voters) == (100, 300, "open", 2)
    assert set(p.to_json()) >= {"id", "kind", "target", "status", "ayes", "nays", "deadline"}
    sim.tick(10)  # ticks the blocks before the deadline
    ok(sim, "bob", encoders.vote(pid, True))  # still in time: the deadline block itself
    sim.tick()
    p = sim.state.proposal(pid)
    assert (p.status, p.ayes, p.nays) == ("passed", 400, 0)
    rejected(sim, "bob", encoders.vote(pid, False), match="closed at block")
    assert sim.state.proposals(open_only=True) == []


def test_quorum_threshold_and_void_proposals(sim: Sim) -> None:
    mid = approved_model(sim)  # alice staked 1000
    stake(sim, "bob", mid, 4000)
    assert sim.state.params.quorum_permill == 200_000
    pid = ok(sim, "alice", encoders.propose(mid, SetStrategy("krum"), 10)).entity_id
    ok(sim, "alice", encoders.vote(pid, True))  # 1000 of 5000 staked votes
    sim.tick(11)
    assert sim.state.proposal(pid).status == "passed"  # exactly 20% meets the quorum

    pass_proposal(sim, None, SetProtocolParam("quorum_permill", 300_000), voters=("bob",))
    assert sim.state.params.quorum_permill == 300_000
    pid = ok(sim, "alice", encoders.propose(mid, SetStrategy("fedavg"), 10)).entity_id
    ok(sim, "alice", encoders.vote(pid, True))
    sim.tick(11)
    p = sim.state.proposal(pid)
    assert (p.status, p.note) == ("rejected", "turnout below quorum (300000 permill of 5000)")

    pid = ok(sim, "alice", encoders.propose(mid, SetStrategy("fedavg"), 10)).entity_id
    ok(sim, "alice", encoders.vote(pid, True))
    ok(sim, "bob", encoders.vote(pid, False))
    sim.tick(11)
    assert sim.state.proposal(pid).note.startswith("ayes not above threshold")

    # two proposals admitting the same validator: the second is void when it passes
    first = ok(sim, "bob", encoders.propose(mid, AddValidator(CAROL), 10)).entity_id
    second = ok(sim, "bob", encoders.propose(mid, AddValidator(CAROL), 11)).entity_id
    ok(sim, "bob", encoders.vote(first, True))
    ok(sim, "bob", encoders.vote(second, True))
    sim.tick(12)
    assert sim.state.proposal(first).status == "passed"
    p = sim.state.proposal(second)
    assert (p.status, p.note) == ("void", f"{CAROL} is already a validator of model {mid}")


def test_invalid_proposals_are_rejected(sim: Sim) -> None:
    mid = register(sim)
    min_v, max_v = sim.state.params.min_voting_blocks, sim.state.params.max_voting_blocks
    assert min_v == 10
    cases = [
        (encoders.propose(mid, ApproveModel(), 0), "voting period must be 10\\.\\."),
        (encoders.propose(mid, ApproveModel(), min_v - 1), "voting period must be"),
        (encoders.propose(mid, ApproveModel(), max_v + 1), "voting period must be"),
        (encoders.propose(None, ApproveModel(), 10), "needs a model"),
        (encoders.propose(mid, SetProtocolParam("quorum_permill", 1), 10), "targets the protocol"),
        (encoders.propose(None, SetProtocolParam("threshold_permill", 10), 10), "500000..999999"),
        (encoders.propose(None, SetProtocolParam("min_voting_blocks", 0), 10), "min_voting"),
        (encoders.propose(None, SetProtocolParam("min_voting_blocks", 9), 10), "10..100800"),
        (encoders.propose(42, ApproveModel(), 10), "unknown model 42"),
        (encoders.propose(mid, RetireModel(), 10), None),
        (encoders.propose(mid, RemoveValidator(B), 10), "not a validator"),
        # the pool must stay a multisig: neither of the two validators can leave
        (encoders.propose(mid, RemoveValidator(V1), 10), "fewer than 2 validators"),
    ]
    for remark, match in cases:
        if match is None:
            ok(sim, "bob", remark)
        else:
            rejected(sim, "bob", remark, match=match)


def test_protocol_level_votes_weigh_native_stake_across_models(sim: Sim) -> None:
    m1, m2 = register(sim), register(sim)
    byo = register(sim, stake_asset=5)
    stake(sim, "alice", m1, 10)
    stake(sim, "alice", m2, 20)
    stake(sim, "bob", byo, 1000, asset=5)  # another token: no weight at protocol level
    pid = ok(sim, "bob", encoders.propose(None, SetProtocolParam("unstake_lock_blocks", 3), 10))
    rejected(sim, "bob", encoders.vote(pid.entity_id, True), match="no stake on any model")
    ok(sim, "alice", encoders.vote(pid.entity_id, True))
    assert sim.state.proposal(pid.entity_id).ayes == 30
    sim.tick(10)
    assert sim.state.params.unstake_lock_blocks != 3  # tallied at the end of the deadline
    sim.tick()
    assert sim.state.params.unstake_lock_blocks == 3


# ------------------------------------------------------------------------------- pools
def test_validator_changes_migrate_pool_funds(sim: Sim) -> None:
    mid = approved_model(sim)  # pool: the 2-of-2 multisig of V1, V2, holding alice's 1000
    pool0 = multisig_address(VALS, 2)
    stake(sim, "bob", mid, 500)
    pass_proposal(sim, mid, AddValidator(CAROL))
    pool1 = multisig_address([*VALS, CAROL], 2)
    assert sim.state.model(mid).pool == pool1
    [mig] = sim.state.pending_payouts()
    assert (mig.pool, mig.dest, mig.amount, mig.reason) == (pool0, pool1, 1500, "migrate")
    check_books(sim.state)
    # the set changes again before the first migration lands: the funds follow on arrival
    pass_proposal(sim, mid, AddValidator(D))
    pool2 = multisig_address([*VALS, CAROL, D], 3)
    assert sim.state.model(mid).pool == pool2
    assert [p.reason for p in sim.state.pending_payouts()] == ["migrate"]
    ok(sim, pool0, encoders.settle_payout(mig.id), [Transfer(pool0, pool1, 1500)])
    [mig2] = sim.state.pending_payouts()
    assert (mig2.pool, mig2.dest, mig2.amount) == (pool1, pool2, 1500)
    ok(sim, pool1, encoders.settle_payout(mig2.id), [Transfer(pool1, pool2, 1500)])
    pool = sim.state.pool(mid)
    assert (pool.pool, pool.balances, pool.threshold) == (pool2, ((pool2, 1500),), 3)
    assert pool.signatories == tuple(sim.state.model(mid).validators)
    # every pool the model had keeps its signatories: they sign what is still owed from it
    for address, n in ((pool0, 2), (pool1, 2), (pool2, 3)):
        signers, k = sim.state.pool_signers(address)
        assert k == n and set(signers) <= {*VALS, CAROL, D}
    assert sim.state.holdings() == {(pool2, None): 1500}
    # stakes now go to the multisig, and payouts come from it; a stake paid into a former
    # pool is refused and owed back from that pool
    rejected(sim, "eve", encoders.stake(mid, 5), [sim.pay("eve", pool0, 5)], match="no unused")
    [back] = sim.state.pending_payouts()
    assert (back.pool, back.dest, back.amount, back.reason) == (pool0, E, 5, "refund")
    stake(sim, "eve", mid, 5)
    ok(sim, "eve", encoders.unstake(mid, 5))
    sim.tick(sim.state.params.unstake_lock_blocks + 1)
    [p] = [p for p in sim.state.pending_payouts() if p.reason == "unstake"]
    assert (p.pool, p.dest, p.amount) == (pool2, E, 5)
    check_books(sim.state)
    assert all(o.ok for o in sim.settle_all())
    assert sim.state.holdings() == {(pool2, None): 1500}
    pass_proposal(sim, mid, RemoveValidator(D))
    pass_proposal(sim, mid, RemoveValidator(CAROL))
    assert sim.state.model(mid).pool == pool0  # back to two validators
    rejected(sim, "alice", encoders.propose(mid, RemoveValidator(V1), 10), match="fewer than 2")
    check_books(sim.state)


def test_removing_a_validator_that_would_leave_one_is_void(sim: Sim) -> None:
    mid = approved_model(sim, validators=(*VALS, CAROL))
    # both proposals are valid when made; the first to pass leaves two validators
    first = ok(sim, "alice", encoders.propose(mid, RemoveValidator(CAROL), 10)).entity_id
    second = ok(sim, "alice", encoders.propose(mid, RemoveValidator(V1), 10)).entity_id
    ok(sim, "alice", encoders.vote(first, True))
    ok(sim, "alice", encoders.vote(second, True))
    sim.tick(11)
    assert sim.state.proposal(first).status == "passed"
    p = sim.state.proposal(second)
    assert p.status == "void" and "fewer than 2 validators" in p.note
    assert sim.state.model(mid).validators == tuple(sorted(VALS, key=account_id))
    assert sim.state.model(mid).pool == multisig_address(VALS, 2)
    check_books(sim.state)


def test_payout_of_a_new_pool_waits_for_its_migration(sim: Sim) -> None:
    mid = approved_model(sim)  # alice staked 1000, held by the V1+V2 multisig
    pool0, pool1 = multisig_address(VALS, 2), multisig_address([*VALS, CAROL], 2)
    ok(sim, "alice", encoders.unstake(mid, 400))
    pass_proposal(sim, mid, AddValidator(CAROL), blocks=sim.state.params.unstake_lock_blocks)
    # the same tick moves the pool to V1+V2+carol (migrating all 1000, unbonding included),
    # then derives the unstake payout from the new pool, which holds nothing yet
    [mig, unbond] = sim.state.pending_payouts()
    assert (mig.reason, mig.pool, mig.dest, mig.amount) == ("migrate", pool0, pool1, 1000)
    assert (unbond.reason, unbond.pool, unbond.amount) == ("unstake", pool1, 400)
    assert sim.state.pending_payouts(ready_only=True) == [mig]
    rejected(
        sim,
        pool1,
        encoders.settle_payout(unbond.id),
        [],  # the pool holds nothing: the chain would refuse its transfer
        match="settle the migration payout into it first",
    )
    check_books(sim.state)
    settled = sim.settle_all()
    assert [o.ok for o in settled] == [True, True]
    assert sim.state.pool(mid).balances == ((pool1, 600),)
    assert sim.state.holdings() == {(pool1, None): 600}


# ------------------------------------------------------------------------------- errors, order
def test_errors_are_recorded_and_looked_up(sim: Sim) -> None:
    rejected(sim, "bob", b"dfml\x01\x02garbage", match="malformed call")
    rejected(sim, "carol", encoders.vote(1, True), match="unknown proposal")
    [e] = sim.state.errors(account=B)
    assert (e.block_number, e.extrinsic_index, e.call) == (0, 0, "stake")
    assert set(e.to_json()) >= {"block_number", "extrinsic_index", "account", "call", "reason"}
    assert [x.call for x in sim.state.errors_at(0, 1)] == ["vote"]
    assert sim.state.errors_at(5, 5) == []


def test_out_of_order_feeding_is_an_error(sim: Sim) -> None:
    sim.tick(3)
    with pytest.raises(OrderingError):
        sim.state.tick(1)
    with pytest.raises(OrderingError):
        sim.state.apply(CallContext(2, "0x", 0, 0, A), encoders.vote(1, True))


# ------------------------------------------------------------------------------- snapshots
def test_snapshot_restore_and_rebuild_reach_the_same_hash(sim: Sim) -> None:
    mid = approved_model(sim, validators=(B, CAROL))
    stake(sim, "dave", mid, 70)
    ok(sim, "dave", encoders.unstake(mid, 20))
    rejected(sim, "eve", encoders.unstake(mid, 20), match="0 staked")
    snap = sim.state.to_bytes()
    restored = State.from_bytes(snap)
    assert restored.state_hash() == sim.state.state_hash()
    assert restored.to_bytes() == snap
    assert restored.errors() == sim.state.errors()
    assert replay(sim.log).state_hash() == sim.state.state_hash()
    # both continue identically
    cont = Sim(restored)
    for s in (sim, cont):
        s.tick(30)
        s.settle_all()
    assert cont.state.state_hash() == sim.state.state_hash()
    with pytest.raises(SnapshotError):
        State.from_bytes(b"{not json")
    with pytest.raises(SnapshotError, match="format"):
        State.from_bytes(b'{"format": 99}')


def test_remarks_may_arrive_as_hex_text(sim: Sim) -> None:
    out = sim.call("alice", "0x" + encoders.register_model("m", CID_A, CID_W).hex())
    assert out.ok and out.entity_id == 1
    assert not sim.call("alice", "hello").ok


def test_a_tie_and_a_vote_with_only_nays_do_not_pass(sim: Sim) -> None:
    mid = approved_model(sim)  # alice staked 1000
    stake(sim, "bob", mid, 1000)
    pid = ok(sim, "alice", encoders.propose(mid, SetStrategy("krum"), 10)).entity_id
    ok(sim, "alice", encoders.vote(pid, True))
    ok(sim, "bob", encoders.vote(pid, False))
    sim.tick(11)
    p = sim.state.proposal(pid)
    # ayes must be *more than* half of the votes cast: 1000 of 2000 is a tie
    assert (p.status, p.ayes, p.nays) == ("rejected", 1000, 1000)
    assert p.note == "ayes not above threshold (500000 permill)"
    assert sim.state.model(mid).strategy != "krum"
    pid = ok(sim, "alice", encoders.propose(mid, SetStrategy("krum"), 10)).entity_id
    ok(sim, "alice", encoders.vote(pid, False))
    ok(sim, "bob", encoders.vote(pid, False))  # full turnout, no aye weight
    sim.tick(11)
    p = sim.state.proposal(pid)
    assert (p.status, p.note, p.ayes, p.nays) == ("rejected", "no aye weight", 0, 2000)
