"""Verdict tables: a round judging more updates than an attestation can list inline. The
table's bytes travel as ``table_part`` remarks before the attestation in the same batch; the
attestation names them by CID and digest. The state assembles, checks and uses them exactly as
it uses inline lists, and refuses every table that is not what the attestation names."""

from __future__ import annotations

from hashlib import blake2b

import pytest
from protocol_sim import Sim, check_books, replay, stake
from test_protocol_rounds import CID_AGG, CID_U, VALIDATORS, start, training_model

from decentralml_jupyter.protocol import State, encode_call, encoders
from decentralml_jupyter.protocol import calls as C
from decentralml_jupyter.protocol.accounts import account_id, ss58
from decentralml_jupyter.storage.unixfs import compute_cid

MANY = tuple(ss58(blake2b(f"many{i}".encode(), digest_size=32).digest()) for i in range(100))


def big_round(sim: Sim, n: int = 100, clients: int = 100) -> tuple[int, tuple[str, ...]]:
    """A model with ``n`` staked workers and a round selecting ``clients`` of them, every
    selected worker's update in."""
    mid = training_model(sim, workers=MANY[:n])
    rid = start(sim, mid, clients=clients, min_clients=clients)
    selected = sim.state.round(rid).selected
    for i, w in enumerate(selected):
        out = sim.call(w, encode_call(C.SubmitUpdate(rid, CID_U[i % 6], 10 + i)))
        assert out.ok, out.reason
    return rid, selected


def verdict(rid, selected, bad=(), inline_max=C.MAX_INLINE, loss=0.25, first=1.0, **kw):
    contributions = {w: first + i for i, w in enumerate(selected) if w not in bad}
    return encoders.verdict(
        rid,
        CID_AGG,
        accuracy=0.9,
        loss=loss,
        contributions=contributions,
        rejected={
            w: f"update norm {i}.5 exceeds 4.25 (3x the median of the round)"
            for i, w in enumerate(bad)
        },
        inline_max=inline_max,
        **kw,
    )


def test_a_round_of_100_finalizes_on_tables_with_rewards_and_slashes(sim: Sim) -> None:
    rid, selected = big_round(sim)
    bad = selected[:3]
    v = verdict(rid, selected, bad)
    assert v.table is not None and v.call.accepted == () and v.call.table is not None
    assert len(encode_call(v.call)) < 300  # the attestation no longer grows with the clients
    first = sim.batch(VALIDATORS[0], v.remarks())
    assert all(o.ok for o in first), [o.reason for o in first]
    assert sim.state.round(rid).status == "aggregating"  # one of a quorum of 2
    # the second validator's floats differ in the last digits: another table, the same digest
    v2 = verdict(rid, selected, bad, loss=0.2500001, first=1.01)
    assert v2.call.table.cid != v.call.table.cid
    assert all(o.ok for o in sim.batch(VALIDATORS[1], v2.remarks()))
    rnd = sim.state.round(rid)
    assert rnd.status == "finalized"
    assert len(rnd.rewards) == len(selected) - len(bad)
    assert set(rnd.slashes) == set(bad)
    att = rnd.attestations[0]
    assert att.table_cid == v.call.table.cid == compute_cid(v.table)
    assert len(att.accepted) == 97 and len(att.rejected) == 3
    assert att.digest == rnd.attestations[1].digest
    check_books(sim.state)
    # replayed from its log and restored from its snapshot: the same state
    assert replay(sim.log).state_hash() == sim.state.state_hash()
    assert State.from_bytes(sim.state.to_bytes()).state_hash() == sim.state.state_hash()


def test_a_table_and_an_inline_list_of_the_same_verdict_agree(sim: Sim) -> None:
    """The quorum's digest covers the verdict, not how it travelled: one validator lists a
    small round inline, the other sends a table (``inline_max=0``), and they make a quorum."""
    mid = training_model(sim)
    rid = start(sim, mid)
    selected = sim.state.round(rid).selected
    for i, w in enumerate(selected):
        assert sim.call(w, encoders.submit_update(rid, CID_U[i], 100)).ok
    inline = verdict(rid, selected)
    table = verdict(rid, selected, inline_max=0)
    assert inline.table is None and len(inline.remarks()) == 1
    assert table.table is not None and len(table.remarks()) == 2
    assert all(o.ok for o in sim.batch(VALIDATORS[0], inline.remarks()))
    assert all(o.ok for o in sim.batch(VALIDATORS[1], table.remarks()))
    assert sim.state.round(rid).status == "finalized"


def _attack(sim: Sim, remarks: list[bytes], match: str, who=VALIDATORS[0]) -> None:
    """Send ``remarks`` in one batch: the attestation (last) is refused with ``match``, and the
    state is as if nothing had been sent but the error."""
    before = sim.state.state_hash()
    outs = sim.batch(who, remarks)
    assert not outs[-1].ok and match in outs[-1].reason, outs[-1].reason
    assert sim.state.state_hash() == before
    assert sim.state.round(sim.state.rounds()[-1].round_id).attestations == ()


def _table_call(v: encoders.Verdict, data: bytes) -> bytes:
    """``v``'s attestation naming ``data`` as its table (CID and digest right for it)."""
    ref = C.TableRef(compute_cid(data), "0x" + blake2b(data, digest_size=32).hexdigest())
    fields = {n: getattr(v.call, n) for n, _ in v.call.SCHEMA}
    return encode_call(type(v.call)(**{**fields, "table": ref}))


def _parts(rid: int, data: bytes) -> list[bytes]:
    step = C.MAX_TABLE_PART_BYTES
    return [encode_call(C.TablePart(rid, data[i : i + step])) for i in range(0, len(data), step)]


def test_hostile_tables_are_refused(sim: Sim) -> None:
    rid, selected = big_round(sim)
    v = verdict(rid, selected, selected[:40])
    parts, attest = v.remarks()[:-1], v.remarks()[-1]
    assert len(parts) >= 2
    # parts missing, one part missing, a part twice, parts out of order
    _attack(sim, [attest], "parts must come before")
    _attack(sim, [*parts[1:], attest], "do not match its digest")
    _attack(sim, [parts[0], *parts, attest], "do not match its digest")
    _attack(sim, [parts[1], parts[0], *parts[2:], attest], "do not match its digest")
    # a tampered part: digest and CID name other bytes
    tampered = bytearray(v.table)
    tampered[40] ^= 1
    _attack(sim, [*_parts(rid, bytes(tampered)), attest], "do not match its digest")
    # the parts sent in an earlier extrinsic are gone when the attestation comes
    outs = sim.batch(VALIDATORS[0], parts)
    assert all(o.ok for o in outs)
    _attack(sim, [attest], "parts must come before")
    # parts without their attestation change nothing
    before = sim.state.state_hash()
    assert all(o.ok for o in sim.batch(VALIDATORS[0], parts))
    assert sim.state.state_hash() == before
    # parts naming another round
    other = _parts(rid + 1, v.table)
    outs = sim.batch(VALIDATORS[0], [*other, attest])
    assert not outs[0].ok and "unknown round" in outs[0].reason
    assert not outs[-1].ok
    # a digest right for the bytes, but the CID of others
    ref = C.TableRef(compute_cid(b"other"), v.call.table.digest)
    fields = {n: getattr(v.call, n) for n, _ in v.call.SCHEMA}
    wrong_cid = encode_call(type(v.call)(**{**fields, "table": ref}))
    _attack(sim, [*parts, wrong_cid], "do not match its CID")
    # tables that are not a verdict table, or not canonical: CID and digest match them
    garbage = b"\xff" * 50
    _attack(sim, [*_parts(rid, garbage), _table_call(v, garbage)], "malformed table")
    table = C.VerdictTable.decode_fields(C.Reader(v.table))
    trailing = v.table + b"\x00"
    _attack(sim, [*_parts(rid, trailing), _table_call(v, trailing)], "malformed table")
    unsorted = C.VerdictTable(tuple(reversed(table.accepted)), table.rejected).encode()
    _attack(sim, [*_parts(rid, unsorted), _table_call(v, unsorted)], "not sorted")
    # a table that judges an update twice, one that misses one, one that judges a stranger
    twice = C.VerdictTable(
        table.accepted, table.rejected + (C.Rejection(table.accepted[0].account, "x"),)
    )
    twice_bytes = _sorted_table(twice).encode()
    _attack(sim, [*_parts(rid, twice_bytes), _table_call(v, twice_bytes)], "both accepted")
    short = _sorted_table(C.VerdictTable(table.accepted, table.rejected[1:])).encode()
    _attack(sim, [*_parts(rid, short), _table_call(v, short)], "judge exactly")
    # scores that do not sum to 10^6
    low = C.VerdictTable(
        (C.Contribution(table.accepted[0].account, table.accepted[0].score - 1),)
        + table.accepted[1:],
        table.rejected,
    ).encode()
    _attack(sim, [*_parts(rid, low), _table_call(v, low)], "sum to")
    # inline lists beside a table
    both = type(v.call)(**{**fields, "accepted": (C.Contribution(selected[50], 10**6),)})
    _attack(sim, [*parts, encode_call(both)], "lists no update inline")
    # a worker (not a validator) cannot send parts; too many parts are refused
    out = sim.batch(selected[50], parts[:1])[0]
    assert not out.ok and "not a validator" in out.reason
    outs = sim.batch(VALIDATORS[0], parts[:1] * (C.MAX_TABLE_PARTS + 1))
    assert all(o.ok for o in outs[:-1]) and "at most" in outs[-1].reason
    # after all that, the honest table still finalizes the round with an honest peer
    assert all(o.ok for o in sim.batch(VALIDATORS[0], v.remarks()))
    assert all(o.ok for o in sim.batch(VALIDATORS[1], v.remarks()))
    assert sim.state.round(rid).status == "finalized"
    check_books(sim.state)


def _sorted_table(t: C.VerdictTable) -> C.VerdictTable:
    return C.VerdictTable(
        tuple(sorted(t.accepted, key=lambda x: account_id(x.account))),
        tuple(sorted(t.rejected, key=lambda x: account_id(x.account))),
    )


def test_a_table_of_a_thousand_updates_fits_parts_and_the_round_bound() -> None:
    """1,000 judged updates: about 34 KB of table in 9 parts of one batch, each part a remark
    within the limit; the round's selection bound is far above it."""
    accounts = [ss58(blake2b(f"w{i}".encode(), digest_size=32).digest()) for i in range(1000)]
    v = encoders.verdict(
        7,
        CID_AGG,
        accuracy=0.5,
        loss=1.0,
        contributions={a: 1.0 for a in accounts[:990]},
        rejected={a: "update not in storage" for a in accounts[990:]},
    )
    remarks = v.remarks()
    assert all(len(r) <= C.MAX_REMARK_BYTES for r in remarks)
    assert len(remarks) - 1 <= C.MAX_TABLE_PARTS
    table = C.VerdictTable.decode_fields(C.Reader(v.table))
    assert sum(c.score for c in table.accepted) == C.PERMILL
    assert v.call.result_digest(table) == v.call.result_digest(table)
    assert C.MAX_CLIENTS >= 1000


@pytest.mark.parametrize("n", [65, 100])
def test_rounds_select_more_clients_than_fit_inline(sim: Sim, n: int) -> None:
    mid = training_model(sim, workers=MANY[:n])
    for w in MANY[n : n + 1]:
        stake(sim, w, mid, 100)
    rid = start(sim, mid, clients=n, min_clients=n)
    assert len(sim.state.round(rid).selected) == n
