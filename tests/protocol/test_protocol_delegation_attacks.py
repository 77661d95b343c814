"""Attacks on delegated updates (``delegate_updates``, ``submit_updates``): policy changes
mid-round, value attached to a host's calls, delegation chains and revocations in the same
block, validators behind a host, secure rounds' reveals, reputation, the error log and
replay. Each test states what an attacker would want and asserts it does not happen: the
books never count more than the pools hold, nobody is paid or has an update taken without
the worker's authority."""

from __future__ import annotations

from protocol_sim import Sim, check_books, ok, pass_proposal, rejected, replay
from test_protocol_delegation import HOST, OTHER_HOST, bulk, delegate, entries, training_model
from test_protocol_rounds import CID_U, VALIDATORS, WORKERS, attest, start

from decentralml_jupyter.protocol import (
    AddValidator,
    CallContext,
    RewardPolicy,
    SetRewardPolicy,
    State,
    Transfer,
    encode_call,
    encoders,
)
from decentralml_jupyter.protocol import calls as C

DEPOSIT = 5


def host_batch(sim: Sim, host: str, remarks, transfers=()) -> list:
    """A host's extrinsic: ``remarks`` in one batch with ``transfers`` beside them."""
    outs = []
    for i, remark in enumerate(remarks):
        ctx = CallContext(
            sim.block, f"0x{sim.block:064x}", sim.extrinsic, i, host, tuple(transfers)
        )
        sim.log.append(("apply", ctx, remark))
        outs.append(sim.state.apply(ctx, remark))
    sim.state.close_extrinsic(sim.block, sim.extrinsic, tuple(transfers))
    sim.extrinsic += 1
    return outs


def finish(sim: Sim, rid: int, accepted, rejected_=None) -> None:
    for v in VALIDATORS[:2]:
        assert attest(sim, v, rid, dict.fromkeys(accepted, 1), rejected_).ok
    assert sim.state.round(rid).status == "finalized"


def drain(sim: Sim) -> None:
    """Every payout paid by its pool; the books hold exactly what is owed, before and after;
    a replay of everything fed gives the same state."""
    check_books(sim.state)
    assert all(o.ok for o in sim.settle_all())
    check_books(sim.state)
    assert not sim.state.pending_payouts()
    assert replay(sim.log).state_hash() == sim.state.state_hash()


def test_a_switch_to_drt_mid_round_stops_hosted_updates_and_invents_no_deposit(sim: Sim) -> None:
    """Updates a host sent before the model switched to drt carry no deposit: none is
    refunded, shared or counted for them later; after the switch the host's call is refused
    as a whole and each worker sends its own update with its deposit."""
    mid = training_model(sim, deposit=DEPOSIT)
    rid = start(sim, mid, clients=4, min_clients=2, submit_blocks=40, aggregate_blocks=10)
    a, b, c, d = sim.state.round(rid).selected
    delegate(sim, [a, b, c, d])
    assert all(o.ok for o in bulk(sim, rid, entries(rid, [a, b])))
    pass_proposal(sim, mid, SetRewardPolicy(RewardPolicy("drt", 0, 100_000)))
    assert sim.state.model(mid).reward_policy["kind"] == "drt"
    pool = sim.state.model(mid).pool
    # the host attaches the remaining workers' deposits, as if they were its own: refused
    # whole, and what it moved into the pool is owed back to it
    pay = [Transfer(HOST, pool, DEPOSIT), Transfer(HOST, pool, DEPOSIT)]
    (remark,) = encoders.submit_updates(rid, entries(rid, [c, d], start_at=2))
    n = len(sim.state.payouts())
    outs = host_batch(sim, HOST, [remark], pay)
    assert not outs[0].ok and "drt" in outs[0].reason
    assert [(p.dest, p.amount, p.reason) for p in sim.state.payouts()[n:]] == [
        (HOST, DEPOSIT, "refund"),
        (HOST, DEPOSIT, "refund"),
    ]
    assert set(sim.state.round(rid).submitted) == {a, b}
    for i, w in enumerate((c, d)):
        ok(
            sim,
            w,
            encoders.submit_update(rid, CID_U[2 + i], 10, DEPOSIT),
            [Transfer(w, pool, DEPOSIT)],
        )
    deposits = {u.worker: (u.deposit, u.deposit_status) for u in sim.state.round(rid).updates}
    assert deposits == {a: (0, ""), b: (0, ""), c: (DEPOSIT, "held"), d: (DEPOSIT, "held")}
    # a hosted update and a deposited one rejected: only the real deposit is taken
    finish(sim, rid, [b, d], {a: "poisoned", c: "poisoned"})
    sim.tick(sim.state.params.deposit_wait_blocks + 1)
    refunds = [(p.dest, p.amount) for p in sim.state.payouts() if p.reason == "deposit_refund"]
    assert refunds == [(d, DEPOSIT)]
    assert HOST not in {p.dest for p in sim.state.payouts() if p.reason != "refund"}
    drain(sim)


def test_a_switch_away_from_drt_mid_round_refunds_only_real_deposits(sim: Sim) -> None:
    """A drt round whose model leaves drt while it is open: the host's deposit-free updates
    are taken; the deposits made before the switch are refunded (or taken) exactly once."""
    mid = training_model(sim, policy=RewardPolicy("drt", 0, 100_000), deposit=DEPOSIT)
    rid = start(sim, mid, clients=4, min_clients=2, submit_blocks=40, aggregate_blocks=10)
    a, b, c, d = sim.state.round(rid).selected
    pool = sim.state.model(mid).pool
    delegate(sim, [a, b, c, d])
    (remark,) = encoders.submit_updates(rid, entries(rid, [a, b]))
    rejected(sim, HOST, remark, [Transfer(a, pool, DEPOSIT)], match="drt")
    ok(sim, a, encoders.submit_update(rid, CID_U[0], 10, DEPOSIT), [Transfer(a, pool, DEPOSIT)])
    pass_proposal(sim, mid, SetRewardPolicy(RewardPolicy("proportional", 0, 100_000)))
    assert all(o.ok for o in bulk(sim, rid, entries(rid, [a, b, c, d])))
    r = sim.state.round(rid)
    assert r.status == "aggregating"
    assert {u.worker: u.deposit for u in r.updates} == {a: DEPOSIT, b: 0, c: 0, d: 0}
    finish(sim, rid, [a, b, c], {d: "poisoned"})
    sim.tick(sim.state.params.deposit_wait_blocks + 1)
    refunds = [(p.dest, p.amount) for p in sim.state.payouts() if p.reason == "deposit_refund"]
    assert refunds == [(a, DEPOSIT)]
    drain(sim)


def test_value_attached_to_delegation_and_hosted_updates_is_owed_back(sim: Sim) -> None:
    """Neither call takes funds: a transfer into the pool in their batch (the host's, or a
    worker's through its proxy) backs nothing and is owed back to whoever sent it, whether
    the call is taken, partly refused or refused whole."""
    mid = training_model(sim)
    rid = start(sim, mid, clients=3, min_clients=2)
    a, b, c = sim.state.round(rid).selected
    pool = sim.state.model(mid).pool
    n = len(sim.state.payouts())
    outs = host_batch(sim, a, [encoders.delegate_updates(HOST)], [Transfer(a, pool, 7)])
    assert outs[0].ok
    delegate(sim, [b])
    # c never delegated: its entry is refused, a's and b's are taken; all value goes back
    (remark,) = encoders.submit_updates(rid, entries(rid, [a, b, c]))
    moved = [Transfer(HOST, pool, 11), Transfer(c, pool, 13)]
    outs = host_batch(sim, HOST, [remark], moved)
    assert outs[0].ok and set(sim.state.round(rid).submitted) == {a, b}
    empty = encode_call(C.SubmitUpdates(rid, ()))
    outs = host_batch(sim, HOST, [empty], [Transfer(HOST, pool, 17)])
    assert not outs[0].ok
    got = [(p.dest, p.amount, p.reason) for p in sim.state.payouts()[n:]]
    assert got == [(a, 7, "refund"), (HOST, 11, "refund"), (c, 13, "refund"), (HOST, 17, "refund")]
    drain(sim)


def test_delegation_is_not_transitive(sim: Sim) -> None:
    """a delegates to b, b to c: c cannot send a's update (only b can); b's own delegation
    lets c send b's."""
    mid = training_model(sim)
    rid = start(sim, mid, clients=4, min_clients=2)
    a, b, *_ = sim.state.round(rid).selected
    ok(sim, a, encoders.delegate_updates(b))
    ok(sim, b, encoders.delegate_updates(OTHER_HOST))
    n = len(sim.state.errors())
    assert all(o.ok for o in bulk(sim, rid, entries(rid, [a, b]), host=OTHER_HOST))
    assert sim.state.round(rid).submitted == (b,)
    assert [(e.account, e.reason) for e in sim.state.errors()[n:]] == [
        (a, f"{a} has not delegated its updates to {OTHER_HOST}")
    ]
    # b, a's host, sends a's (b's own is already in)
    assert all(o.ok for o in bulk(sim, rid, entries(rid, [a]), host=b))
    assert sim.state.round(rid).submitted == (b, a)
    check_books(sim.state)


def test_a_revocation_binds_from_its_extrinsic_on_in_the_same_block() -> None:
    """Within one block, extrinsic order decides: a revocation before the host's call
    stops it; one after it does not undo the update already taken."""
    for revoke_first in (True, False):
        sim = Sim()
        mid = training_model(sim)
        rid = start(sim, mid, clients=3, min_clients=2)
        a, b, _ = sim.state.round(rid).selected
        delegate(sim, [a, b])
        sim.tick()
        block = sim.block
        if revoke_first:
            ok(sim, a, encoders.delegate_updates(None))
        bulk(sim, rid, entries(rid, [a, b]))
        if not revoke_first:
            ok(sim, a, encoders.delegate_updates(None))
        assert sim.block == block  # one block
        taken = set(sim.state.round(rid).submitted)
        assert taken == ({b} if revoke_first else {a, b})
        assert a not in sim.state.delegates()
        assert replay(sim.log).state_hash() == sim.state.state_hash()


def test_a_hosted_update_bars_its_worker_from_attesting_after_it_becomes_a_validator(
    sim: Sim,
) -> None:
    """A validator cannot get an update into a round it judges through a host: a selected
    worker made a validator mid-round is refused as a hosted entry; one whose update a host
    sent before it became a validator cannot attest the round, and its attestation does
    not count towards the quorum."""
    mid = training_model(sim)
    rid = start(sim, mid, clients=4, min_clients=2, submit_blocks=40, aggregate_blocks=40)
    a, b, c, d = sim.state.round(rid).selected
    delegate(sim, [a, b, c, d])
    assert all(o.ok for o in bulk(sim, rid, entries(rid, [a, b])))
    pass_proposal(sim, mid, AddValidator(a))  # a, with an update in, now validates
    pass_proposal(sim, mid, AddValidator(c))  # c, with none, now validates
    n = len(sim.state.errors())
    assert all(o.ok for o in bulk(sim, rid, entries(rid, [c, d], start_at=2)))
    assert [e.account for e in sim.state.errors()[n:]] == [c]
    assert set(sim.state.round(rid).submitted) == {a, b, d}
    # the host, a validator's delegate, is no validator: it still cannot carry c's update
    # as its own (c is barred), and a cannot attest the round its update is in
    sim.tick(sim.state.round(rid).submit_deadline - sim.state.last_block)
    assert sim.state.round(rid).status == "aggregating"
    out = attest(sim, a, rid, {a: 1, b: 1, d: 1})
    assert not out.ok and "has an update in round" in out.reason
    check_books(sim.state)


def test_a_validator_cannot_host_and_its_workers_cannot_name_it_to_get_in(sim: Sim) -> None:
    """Workers that delegate to one of the model's validators cannot have it carry their
    updates (refused whole, nothing taken); a validator's own entry through another host is
    refused too (validators are never selected)."""
    mid = training_model(sim)
    rid = start(sim, mid, clients=3, min_clients=2)
    selected = sim.state.round(rid).selected
    v = VALIDATORS[0]
    delegate(sim, selected, v)
    (remark,) = encoders.submit_updates(rid, entries(rid, selected))
    rejected(sim, v, remark, match="it judges updates, it carries none")
    ok(sim, v, encoders.delegate_updates(HOST))
    n = len(sim.state.errors())
    assert all(o.ok for o in bulk(sim, rid, [(v, CID_U[0], 10)]))
    assert sim.state.round(rid).submitted == ()
    assert [(e.account, e.reason) for e in sim.state.errors()[n:]] == [
        (v, f"{v} was not selected for round {rid}")
    ]


def test_duplicate_entries_take_one_update_at_most(sim: Sim) -> None:
    """The same entry twice is a malformed call (nothing taken); the same worker twice with
    different updates gets its first one in and the second refused."""
    mid = training_model(sim)
    rid = start(sim, mid, clients=3, min_clients=2)
    a, b, _ = sim.state.round(rid).selected
    delegate(sim, [a, b])
    twice = (
        C.PREFIX
        + bytes([C.VERSION, C.SubmitUpdates.INDEX])
        + C.ID.encode(rid)
        + C.Vec(C.StructField(C.DelegatedUpdate), C.MAX_DELEGATED).encode(
            (C.DelegatedUpdate(a, CID_U[0], 5), C.DelegatedUpdate(a, CID_U[0], 5))
        )
    )
    rejected(sim, HOST, twice, match="malformed call")
    items = [(a, CID_U[0], 5), (a, CID_U[1], 50), (b, CID_U[2], 5)]
    assert all(o.ok for o in bulk(sim, rid, items))
    r = sim.state.round(rid)
    assert [(u.worker, u.cid, u.num_examples) for u in r.updates] == [
        (a, CID_U[0], 5),
        (b, CID_U[2], 5),
    ]


def test_entries_after_the_round_fills_are_refused_and_the_call_cannot_reopen_it(
    sim: Sim,
) -> None:
    """The round turns aggregating inside the call, at its last selected worker: later
    entries are refused, and an attestation can follow in the same block."""
    mid = training_model(sim)
    rid = start(sim, mid, clients=2, min_clients=2)
    a, b = sim.state.round(rid).selected
    outsider = next(w for w in WORKERS if w not in (a, b))
    delegate(sim, [a, b, outsider])
    n = len(sim.state.errors())
    assert all(o.ok for o in bulk(sim, rid, entries(rid, [a, b, outsider])))
    assert sim.state.round(rid).status == "aggregating"
    assert [e.account for e in sim.state.errors()[n:]] == [outsider]
    assert "takes no updates" in sim.state.errors()[n].reason
    finish(sim, rid, [a, b])
    drain(sim)


def test_the_host_gains_no_reputation_reward_or_slash(sim: Sim) -> None:
    """A host that is itself a selected worker sends its own update and its members': the
    members' accepted scores, rewards and slashes are theirs; the host's reputation counts its
    own update only."""
    mid = training_model(sim)
    rid = start(sim, mid, clients=4, min_clients=2)
    h, a, b, c = sim.state.round(rid).selected
    delegate(sim, [a, b, c], host=h)
    assert all(o.ok for o in bulk(sim, rid, entries(rid, [h, a, b, c]), host=h))
    finish(sim, rid, [h, a, b], {c: "poisoned"})
    rep = {x.account: x for x in sim.state.reputation(mid)}
    assert rep[h].accepted == 1 and rep[a].accepted == 1 and rep[c].rejected == 1
    r = sim.state.round(rid)
    assert set(r.rewards) == {h, a, b} and set(r.slashes) == {c}
    paid = {p.dest: p.amount for p in sim.state.payouts() if p.reason == "round_reward"}
    assert paid == r.rewards and sum(paid.values()) == 1000 + r.slashes[c]
    drain(sim)


def test_refusals_are_logged_at_the_hosts_extrinsic_and_position_only(sim: Sim) -> None:
    """A hostile host naming workers that never delegated to it gets nothing in; their
    refusals sit at the host's own extrinsic and batch position, so a worker reading the
    receipt of its own (taken) update sees no refusal."""
    mid = training_model(sim)
    rid = start(sim, mid, clients=3, min_clients=2)
    a, b, c = sim.state.round(rid).selected
    delegate(sim, [a, b])  # to HOST, not to the attacker
    sim.tick()
    ok(sim, a, encoders.submit_update(rid, CID_U[0], 5))
    own = (sim.block, sim.extrinsic - 1)
    (remark,) = encoders.submit_updates(rid, entries(rid, [a, b, c]))
    outs = host_batch(sim, OTHER_HOST, [encoders.announce_key("0x" + "11" * 32), remark])
    assert all(o.ok for o in outs)
    assert sim.state.round(rid).submitted == (a,)
    assert sim.state.errors_at(*own) == []
    hostile = sim.state.errors_at(sim.block, sim.extrinsic - 1)
    assert [(e.account, e.call, e.batch_index) for e in hostile] == [
        (a, "submit_update", 1),
        (b, "submit_update", 1),
        (c, "submit_update", 1),
    ]
    # b's own host still gets b's update in
    assert all(o.ok for o in bulk(sim, rid, entries(rid, [b], start_at=1)))
    assert sim.state.round(rid).submitted == (a, b)


def test_delegations_are_state_replayed_and_snapshotted_mid_round(sim: Sim) -> None:
    """A state restored from a snapshot taken after delegations (and a revocation) takes and
    refuses the same hosted entries as the original; so does a replay."""
    mid = training_model(sim)
    rid = start(sim, mid, clients=4, min_clients=2)
    a, b, c, d = sim.state.round(rid).selected
    delegate(sim, [a, b, c])
    ok(sim, c, encoders.delegate_updates(OTHER_HOST))
    ok(sim, b, encoders.delegate_updates(None))
    restored = Sim(State.from_bytes(sim.state.to_bytes()))
    restored.block, restored.extrinsic = sim.block, sim.extrinsic
    for s in (sim, restored):
        assert all(o.ok for o in bulk(s, rid, entries(rid, [a, b, c, d])))
        assert s.state.round(rid).submitted == (a,)
    assert restored.state.state_hash() == sim.state.state_hash()
    assert restored.state.errors()[-3:] == sim.state.errors()[-3:]
    assert replay(sim.log).state_hash() == sim.state.state_hash()


def test_in_a_secure_round_hosted_workers_reveal_and_their_host_cannot(sim: Sim) -> None:
    """A secure round's reveals follow whose updates are in: a worker whose update its host
    sent reveals its seeds (naming exactly the workers without one); the host, with no
    update of its own in the round, cannot reveal for them or inject a seed."""
    mid = training_model(sim)
    pass_proposal(sim, mid, C.SetStrategy("fedavg:secure"))
    rid = start(sim, mid, clients=4, min_clients=2, submit_blocks=5)
    selected = sim.state.round(rid).selected
    hosted, dropped = selected[:2], selected[2:]
    delegate(sim, selected)
    assert all(o.ok for o in bulk(sim, rid, entries(rid, hosted)))
    sim.tick(6)
    assert sim.state.round(rid).status == "aggregating"
    seed = b"\x11" * 32
    reveal = encoders.reveal_seeds(rid, seed, dict.fromkeys(dropped, seed))
    assert "has no update" in rejected(sim, HOST, reveal)
    assert "has no update" in rejected(sim, dropped[0], reveal)
    for w in hosted:
        ok(sim, w, reveal)
    assert set(sim.state.round(rid).reveals) == set(hosted)
    assert replay(sim.log).state_hash() == sim.state.state_hash()


def test_a_worker_hosts_failing_own_call_cannot_stop_its_members_hosted_updates() -> None:
    """The worker host sends one ``Utility.batch`` (not atomic: a failing call stops the
    calls after it, and the host takes every call of the batch as sent). Its own calls that
    can fail (a stake's or a drt deposit's transfer) must come after the submit_updates that
    carry its members' updates, or a host short of funds would silently drop every member's
    update of the round."""
    from decentralml_jupyter.agents.worker import Worker

    worker = Worker.__new__(Worker)
    lead, member = object(), object()
    worker.identities = [lead, member]
    sent: list[list] = []
    worker._send = sent.append  # type: ignore[method-assign]
    calls = [
        (lead, "key", 0, "k"),
        (lead, "stake", 1, "stake transfer"),
        (member, "stake", 1, "member stake"),
        (member, "delegate", 0, "delegate"),
        (lead, "update", 2, "drt deposit transfer"),
        (lead, "updates", (3, [lead, member]), "submit_updates"),
        (lead, "reveal", 4, "reveal"),
    ]
    worker.send(calls)
    (batch,) = sent
    order = [c[3] for c in batch]
    assert order[:2] == ["member stake", "delegate"]  # proxied: they never fail the batch
    assert order.index("submit_updates") < order.index("stake transfer")
    assert order.index("submit_updates") < order.index("drt deposit transfer")
    assert sorted(order) == sorted(c[3] for c in calls)
