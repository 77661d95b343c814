"""Delegated updates in the state machine: a worker lets a host submit its updates
(``delegate_updates``), and the host sends many workers' updates of one round in one
``submit_updates``. Each entry obeys submit_update's rules on its own; nothing is taken for a
worker that did not delegate to that host; the worker, never the host, is paid or slashed."""

from __future__ import annotations

from hashlib import blake2b

import pytest
from protocol_sim import Sim, check_books, ok, pass_proposal, rejected, replay
from test_protocol_rounds import CID_U, VALIDATORS, WORKERS, attest, start
from test_protocol_rounds import training_model as _training_model

from decentralml_jupyter.protocol import (
    MAX_REMARK_BYTES,
    AddValidator,
    CodecError,
    RewardPolicy,
    State,
    encode_call,
    encoders,
)
from decentralml_jupyter.protocol import calls as C
from decentralml_jupyter.protocol.accounts import ss58

HOST = ss58(blake2b(b"host", digest_size=32).digest())
OTHER_HOST = ss58(blake2b(b"other host", digest_size=32).digest())


def training_model(sim: Sim, **kw) -> int:
    """The rounds tests' model, with six staked workers."""
    return _training_model(sim, workers=WORKERS, **kw)


def delegate(sim: Sim, workers, host: str = HOST) -> None:
    for w in workers:
        ok(sim, w, encoders.delegate_updates(host))


def entries(rid: int, workers, start_at: int = 0):
    return [(w, CID_U[start_at + i], 100 * (i + 1)) for i, w in enumerate(workers)]


def bulk(sim: Sim, rid: int, items, host: str = HOST):
    """The host's submit_updates in one extrinsic; returns their outcomes."""
    return sim.batch(host, encoders.submit_updates(rid, items))


def refusals(sim: Sim, n: int) -> list[tuple[str, str, str]]:
    return [(e.account, e.call, e.reason) for e in sim.state.errors()[n:]]


def test_a_hosts_updates_equal_the_workers_own_and_pay_the_workers(sim: Sim) -> None:
    """The same round, once with each worker's own submit_update and once with the host's
    submit_updates: the same updates, the same verdict, the same rewards and slashes, paid
    to the workers (the host is paid nothing); the books balance."""
    own = Sim()
    results = []
    for s, via_host in ((own, False), (sim, True)):
        mid = training_model(s)
        rid = start(s, mid, clients=4, min_clients=2)
        selected = s.state.round(rid).selected
        if via_host:
            delegate(s, selected)
            outs = bulk(s, rid, entries(rid, selected))
            assert [o.ok for o in outs] == [True]
        else:
            for w, cid, n in entries(rid, selected):
                ok(s, w, encoders.submit_update(rid, cid, n))
        r = s.state.round(rid)
        assert r.status == "aggregating" and r.submitted == selected
        good, poisoner = selected[:3], selected[3]
        weights = dict.fromkeys(good, 1)
        for v in VALIDATORS[:2]:
            assert attest(s, v, rid, weights, {poisoner: "norm bound exceeded"}).ok
        r = s.state.round(rid)
        assert r.status == "finalized"
        assert set(r.rewards) == set(good) and set(r.slashes) == {poisoner}
        assert HOST not in {p.dest for p in s.state.payouts()}
        check_books(s.state)
        assert all(o.ok for o in s.settle_all())
        check_books(s.state)
        results.append(
            (
                [(u.worker, u.cid, u.num_examples, u.status) for u in r.updates],
                r.rewards,
                r.slashes,
            )
        )
    assert results[0] == results[1]


def test_only_workers_that_delegated_to_the_host_are_taken(sim: Sim) -> None:
    """A worker that never delegated, delegated to another host, or revoked is refused under
    its own name (as a submit_update); the others in the same call are taken."""
    mid = training_model(sim)
    rid = start(sim, mid, clients=5, min_clients=2)
    a, b, c, d, e = sim.state.round(rid).selected
    delegate(sim, [a, b, d])
    delegate(sim, [c], OTHER_HOST)
    ok(sim, d, encoders.delegate_updates(None))  # d revokes
    assert sim.state.delegates() == dict(sorted({a: HOST, b: HOST, c: OTHER_HOST}.items()))
    n = len(sim.state.errors())
    outs = bulk(sim, rid, entries(rid, [a, b, c, d, e]))
    assert all(o.ok for o in outs)
    assert sim.state.round(rid).submitted == (a, b)
    assert refusals(sim, n) == [
        (w, "submit_update", f"{w} has not delegated its updates to {HOST}") for w in (c, d, e)
    ]
    # the refused ones still send their own
    for w, cid, k in entries(rid, [c, d, e], start_at=2):
        ok(sim, w, encoders.submit_update(rid, cid, k))
    assert set(sim.state.round(rid).submitted) == {a, b, c, d, e}
    check_books(sim.state)


def test_each_entry_obeys_submit_updates_rules(sim: Sim) -> None:
    """A worker not selected, one already in (by itself or twice in one call) and one made a
    validator meanwhile are refused under their names; the host's own update needs no
    delegation; when every selected worker is in, the round stops taking updates."""
    mid = training_model(sim)
    rid = start(sim, mid, clients=4, min_clients=2, submit_blocks=30)
    selected = sim.state.round(rid).selected
    outsider = next(w for w in WORKERS if w not in selected)
    a, b, c, d = selected
    delegate(sim, [a, b, c, d, outsider])
    ok(sim, a, encoders.submit_update(rid, CID_U[0], 10))  # a sends its own first
    n = len(sim.state.errors())
    items = [(a, CID_U[1], 5), (b, CID_U[2], 5), (b, CID_U[3], 6), (outsider, CID_U[4], 5)]
    assert all(o.ok for o in bulk(sim, rid, items))
    assert sim.state.round(rid).submitted == (a, b)
    assert [(w, why) for w, _, why in refusals(sim, n)] == [
        (a, f"{a} already submitted an update to round {rid}"),
        (b, f"{b} already submitted an update to round {rid}"),
        (outsider, f"{outsider} was not selected for round {rid}"),
    ]
    # d becomes a validator mid-round: it judges updates, it sends none (not even hosted)
    pass_proposal(sim, mid, AddValidator(d))
    n = len(sim.state.errors())
    assert all(o.ok for o in bulk(sim, rid, [(d, CID_U[5], 5)]))
    assert d not in sim.state.round(rid).submitted
    assert "it judges updates, it sends none" in refusals(sim, n)[0][2]
    # a host with an update of its own: c hosts itself and nobody else
    ok(sim, c, encoders.submit_updates(rid, [(c, CID_U[5], 7)])[0])
    r = sim.state.round(rid)
    assert c in r.submitted
    check_books(sim.state)


def test_calls_refused_as_a_whole_change_nothing(sim: Sim) -> None:
    """An unknown round, a closed one, a drt model (each update carries its worker's
    deposit), a host that validates the model, an empty or oversized call: refused whole,
    nothing changes; delegating to oneself, or revoking nothing, too."""
    mid = training_model(sim)
    rid = start(sim, mid, clients=3, min_clients=2)
    selected = sim.state.round(rid).selected
    delegate(sim, selected)
    (remark,) = encoders.submit_updates(rid, entries(rid, selected))
    rejected(sim, HOST, encoders.submit_updates(rid + 7, entries(rid, selected))[0],
             match="unknown round")  # fmt: skip
    delegate(sim, selected, VALIDATORS[0])
    rejected(sim, VALIDATORS[0], remark, match="it judges updates, it carries none")
    empty = encode_call(C.SubmitUpdates(rid, ()))
    rejected(sim, HOST, empty, match="names no update")
    big = tuple(C.DelegatedUpdate(selected[0], "Q" * 128, i) for i in range(C.MAX_DELEGATED))
    with pytest.raises(CodecError, match="more than 4096"):
        encode_call(C.SubmitUpdates(rid, big))
    # a remark one entry too long is malformed on the wire
    too_many = (
        C.PREFIX + bytes([C.VERSION, C.SubmitUpdates.INDEX]) + C.ID.encode(rid)
        + C.Vec(C.StructField(C.DelegatedUpdate), C.MAX_DELEGATED + 1).encode(
            tuple(C.DelegatedUpdate(w, CID_U[0], i) for i, w in
                  enumerate((selected * 14)[: C.MAX_DELEGATED + 1]))
        )
    )  # fmt: skip
    assert len(too_many) <= MAX_REMARK_BYTES  # within a remark: refused for its length
    rejected(sim, HOST, too_many, match="malformed call")
    rejected(sim, HOST, encoders.delegate_updates(HOST), match="without delegating")
    rejected(sim, HOST, encoders.delegate_updates(None), match="delegated its updates to no one")
    sim.tick(6)  # past the submit deadline
    delegate(sim, selected)
    rejected(sim, HOST, remark, match="takes no updates")
    # drt: each worker sends its own update with its deposit's transfer
    drt = Sim()
    mid = _training_model(drt, workers=WORKERS, policy=RewardPolicy("drt", 0, 100_000), deposit=5)
    rid = start(drt, mid, clients=3, min_clients=2)
    selected = drt.state.round(rid).selected
    delegate(drt, selected)
    (remark,) = encoders.submit_updates(rid, entries(rid, selected))
    rejected(drt, HOST, remark, match="drt")
    check_books(drt.state)


def test_many_updates_fit_in_few_remarks_and_survive_replay_and_snapshots(sim: Sim) -> None:
    """At most MAX_DELEGATED entries and MAX_REMARK_BYTES a remark; a round of 40+ clients
    in two remarks of one extrinsic; delegations and updates replay and snapshot exactly."""
    many = tuple(ss58(blake2b(f"many{i}".encode(), digest_size=32).digest()) for i in range(45))
    mid = _training_model(sim, workers=many)
    rid = start(sim, mid, clients=45, min_clients=2)
    selected = sim.state.round(rid).selected
    assert len(selected) == 45
    delegate(sim, selected)
    cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    remarks = encoders.submit_updates(rid, [(w, cid, 10) for w in selected])
    assert [len(C.decode_call(r).updates) for r in remarks] == [C.MAX_DELEGATED, 5]
    assert all(len(r) <= MAX_REMARK_BYTES for r in remarks)
    assert all(o.ok for o in sim.batch(HOST, remarks))
    assert sim.state.round(rid).submitted == selected
    assert sim.state.round(rid).status == "aggregating"
    again = replay(sim.log)
    assert again.state_hash() == sim.state.state_hash()
    restored = State.from_bytes(sim.state.to_bytes())
    assert restored.state_hash() == sim.state.state_hash()
    assert restored.delegates() == sim.state.delegates() == dict.fromkeys(sorted(selected), HOST)
    # a delegation is part of the state's hash
    other = State.from_bytes(sim.state.to_bytes())
    other._delegates.pop(selected[0])
    assert other.state_hash() != sim.state.state_hash()
