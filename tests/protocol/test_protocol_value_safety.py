"""Value safety in the state machine: the books never count more than the chain moved.

Custody (no funds for a pool one person holds), refunds of transfers no accepted call used,
losses for value that left a pool outside the protocol's payouts, transfers backing only their
own signer's calls, shared pools, bounded governance parameters and the critical quorum. The
same rules against the real chain: test_value_safety_chain.py.
"""

from __future__ import annotations

from hashlib import blake2b

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_sim import (
    ACCOUNTS,
    CID_A,
    VALS,
    Sim,
    check_books,
    ok,
    pass_proposal,
    register,
    rejected,
    stake,
)

from decentralml_jupyter.protocol import (
    AddValidator,
    ApproveModel,
    CallContext,
    ProtocolParams,
    RemoveValidator,
    RetireModel,
    SetProtocolParam,
    SetStrategy,
    StartRoundProposal,
    State,
    Transfer,
    encode_call,
    encoders,
    multisig_address,
)
from decentralml_jupyter.protocol.accounts import ss58
from decentralml_jupyter.protocol.state import PARAM_BOUNDS

A, B, CAROL, D, E = (ACCOUNTS[n] for n in ("alice", "bob", "carol", "dave", "eve"))
POOL = multisig_address(VALS, 2)


def new_payouts(sim: Sim, n_before: int) -> list[tuple]:
    return [
        (p.pool, p.dest, p.amount, p.asset_id, p.reason, p.status)
        for p in sim.state.payouts()[n_before:]
    ]


def approved(sim: Sim, **kw) -> int:
    """A model of V1 and V2, approved (not training), with alice's 1000 staked on it."""
    mid = register(sim, **kw)
    stake(sim, "alice", mid, 1000, asset=kw.get("stake_asset"))
    pass_proposal(sim, mid, ApproveModel())
    return mid


# ------------------------------------------------------------------------------- (a) refunds
def test_a_rejected_funded_call_is_refunded_exactly_to_its_sender(sim: Sim) -> None:
    mid = approved(sim)  # approved, not training: no round can start
    spec = encoders.round_spec(2, 1, reward=300)
    n = len(sim.state.payouts())
    reason = rejected(
        sim, "alice", encoders.start_round(mid, spec), [sim.pay("alice", POOL, 300)], "training"
    )
    assert reason == f"model {mid} is approved, not training"
    assert new_payouts(sim, n) == [(POOL, A, 300, None, "refund", "pending")]
    info = sim.state.pool(mid)
    assert (info.stakes, info.pending_payouts, info.held, info.obligations) == (
        1000,
        300,
        1300,
        1300,
    )
    assert sim.state.holdings() == {(POOL, None): 1300}  # all it received
    check_books(sim.state)
    # the pool pays it back like any payout, and the books return to the stake alone
    [refund] = sim.state.pending_payouts(ready_only=True)
    t = Transfer(POOL, A, 300)
    ok(sim, POOL, encoders.settle_payout(refund.id), [t])
    assert sim.state.payouts("paid")[-1].reason == "refund"
    assert sim.state.holdings() == {(POOL, None): 1000}
    check_books(sim.state)


@pytest.mark.parametrize("kind", ["start_rounds", "propose", "create_task", "stake"])
def test_every_kind_of_refused_funded_call_is_refunded(sim: Sim, kind: str) -> None:
    mid = approved(sim)
    pass_proposal(sim, mid, RetireModel())  # retired: takes no funds
    spec = encoders.round_spec(2, 1, reward=40)
    remark = {
        "start_rounds": encoders.start_rounds(mid, spec, 3),
        "propose": encoders.propose(mid, StartRoundProposal(spec), 10),
        "create_task": encoders.create_task(mid, "data_annotator", 5, 24, 10),
        "stake": encoders.stake(mid, 120),
    }[kind]
    n = len(sim.state.payouts())
    rejected(sim, "bob", remark, [sim.pay("bob", POOL, 120)], match=".")
    assert new_payouts(sim, n) == [(POOL, B, 120, None, "refund", "pending")]
    check_books(sim.state)
    assert all(o.ok for o in sim.settle_all())
    assert sim.state.holdings() == {(POOL, None): 1000}
    check_books(sim.state)


def test_an_accepted_call_refunds_what_it_did_not_use(sim: Sim) -> None:
    mid = register(sim)
    n = len(sim.state.payouts())
    ts = [sim.pay("bob", POOL, 70), sim.pay("bob", POOL, 100), sim.pay("carol", POOL, 5)]
    ok(sim, "bob", encoders.stake(mid, 100), ts)
    assert [(s.account, s.amount) for s in sim.state.stakes()] == [(B, 100)]
    assert new_payouts(sim, n) == [
        (POOL, B, 70, None, "refund", "pending"),
        (POOL, CAROL, 5, None, "refund", "pending"),
    ]
    assert sim.state.holdings() == {(POOL, None): 175}
    check_books(sim.state)


def test_value_sent_to_a_pool_without_a_protocol_call_is_neither_counted_nor_owed(
    sim: Sim,
) -> None:
    register(sim)
    ext = sim.extrinsic
    sim.extrinsic += 1
    sim.state.close_extrinsic(sim.block, ext, (sim.pay("bob", POOL, 500),))  # a donation
    assert sim.state.payouts() == [] and sim.state.holdings() == {}
    assert sim.state.losses() == []


# ------------------------------------------------------------------------------- (b) proxies
def test_a_proxied_accounts_transfer_backs_nothing_of_its_delegate_and_is_refunded(
    sim: Sim,
) -> None:
    mid = register(sim)
    # dave is eve's proxy: his remark is signed by dave, the transfer event is from eve
    n = len(sim.state.payouts())
    rejected(
        sim,
        "dave",
        encoders.stake(mid, 100),
        [sim.pay("eve", POOL, 100)],
        match=f"no unused transfer of 100 native from {D}",
    )
    assert new_payouts(sim, n) == [(POOL, E, 100, None, "refund", "pending")]
    assert sim.state.stakes() == []
    check_books(sim.state)
    # the other way round too: a stake signed by eve is not backed by dave's transfer
    rejected(sim, "eve", encoders.stake(mid, 100), [sim.pay("dave", POOL, 100)], match=E)
    assert [p.dest for p in sim.state.pending_payouts()] == [E, D]
    # eve's own transfer backs eve's own stake
    stake(sim, "eve", mid, 100)
    assert [(s.account, s.amount) for s in sim.state.stakes()] == [(E, 100)]
    check_books(sim.state)


# ------------------------------------------------------------------------------- (c) shared
def test_two_stakes_into_one_pool_shared_by_two_models_in_one_extrinsic_both_count(
    sim: Sim,
) -> None:
    m1, m2 = register(sim), register(sim)
    m3 = register(sim, stake_asset=7)
    assert sim.state.model(m1).pool == sim.state.model(m2).pool == sim.state.model(m3).pool
    assert sim.state.pool_signers(POOL)[1] == 2
    transfers = (
        sim.pay("bob", POOL, 100),
        sim.pay("bob", POOL, 100),
        sim.pay("bob", POOL, 40, asset=7),
    )
    calls = (encoders.stake(m1, 100), encoders.stake(m2, 100), encoders.stake(m3, 40, 7))
    ext, n = sim.extrinsic, len(sim.state.payouts())
    sim.extrinsic += 1
    for batch_index, remark in enumerate(calls):
        ctx = CallContext(sim.block, "0x00", ext, batch_index, B, transfers)
        assert sim.state.apply(ctx, remark).ok
    sim.state.close_extrinsic(sim.block, ext, transfers)
    assert len(sim.state.payouts()) == n  # each transfer backed one call: nothing refunded
    assert {(s.model_id, s.amount) for s in sim.state.stakes(account=B)} == {
        (m1, 100),
        (m2, 100),
        (m3, 40),
    }
    assert [sim.state.pool(m).balances for m in (m1, m2, m3)] == [
        ((POOL, 100),),
        ((POOL, 100),),
        ((POOL, 40),),
    ]
    assert sim.state.holdings() == {(POOL, None): 200, (POOL, 7): 40}
    check_books(sim.state)


def test_one_transfer_backs_one_of_two_stakes_into_a_shared_pool(sim: Sim) -> None:
    m1, m2 = register(sim), register(sim)
    t = (sim.pay("bob", POOL, 100),)
    ext, n = sim.extrinsic, len(sim.state.payouts())
    sim.extrinsic += 1
    assert sim.state.apply(CallContext(sim.block, "0x00", ext, 0, B, t), encoders.stake(m1, 100))
    second = sim.state.apply(CallContext(sim.block, "0x00", ext, 1, B, t), encoders.stake(m2, 100))
    assert not second.ok and "no unused transfer" in second.reason
    sim.state.close_extrinsic(sim.block, ext, t)
    assert len(sim.state.payouts()) == n
    assert [(s.model_id, s.amount) for s in sim.state.stakes()] == [(m1, 100)]
    assert sim.state.holdings() == {(POOL, None): 100}
    check_books(sim.state)


# ------------------------------------------------------------------------------- (d) self
def test_a_self_transfer_backs_nothing(sim: Sim) -> None:
    mid = register(sim)
    n = len(sim.state.payouts())
    rejected(sim, "bob", encoders.stake(mid, 100), [sim.pay("bob", B, 100)], "no unused")
    # the pool itself paying itself moves nothing: no stake, no refund, no loss
    reason = rejected(
        sim, POOL, encoders.stake(mid, 100), [Transfer(POOL, POOL, 100)], "no unused transfer"
    )
    assert "found" not in reason  # a self-transfer is not even a near miss
    assert len(sim.state.payouts()) == n
    assert sim.state.losses() == [] and sim.state.holdings() == {}
    # alone, too: close_extrinsic ignores it either way
    ext = sim.extrinsic
    sim.extrinsic += 1
    before = sim.state.state_hash()
    sim.state.close_extrinsic(sim.block, ext, (Transfer(POOL, POOL, 100),))
    assert sim.state.state_hash() == before


# ------------------------------------------------------------------------------- (e) losses
def test_an_unconsumed_transfer_out_of_a_pool_is_debited_and_listed(sim: Sim) -> None:
    m1 = approved(sim)
    m2 = register(sim)  # shares the pool
    stake(sim, "bob", m2, 500)
    fed_in = 1500
    assert sim.state.holdings() == {(POOL, None): fed_in}

    # a quorum of the pool's signatories moves 200 out, with no protocol call at all
    ext = sim.extrinsic
    sim.extrinsic += 1
    sim.state.close_extrinsic(sim.block, ext, (Transfer(POOL, E, 200),))
    assert sim.state.losses() == [
        {
            "block_number": sim.block,
            "pool": POOL,
            "amount": 200,
            "asset": None,
            "note": f"transfer to {E}",
        }
    ]
    # debited from the models booked in that pool, in id order
    assert sim.state.pool(m1).held == 800 and sim.state.pool(m1).obligations == 1000
    assert sim.state.pool(m2).held == 500 == sim.state.pool(m2).obligations
    assert sim.state.holdings() == {(POOL, None): fed_in - 200}

    # beside an accepted settlement: the payout's transfer is paid, the extra one is lost
    ok(sim, "bob", encoders.unstake(m2, 100))
    sim.tick(sim.state.params.unstake_lock_blocks + 1)
    [p] = sim.state.pending_payouts(ready_only=True)
    assert (p.model_id, p.dest, p.amount) == (m2, B, 100)
    ok(sim, POOL, encoders.settle_payout(p.id), [Transfer(POOL, B, 100), Transfer(POOL, D, 1000)])
    assert [(x["amount"], x["note"]) for x in sim.state.losses()] == [
        (200, f"transfer to {E}"),
        (1000, f"transfer to {D}"),
    ]
    assert sim.state.pool(m1).held == 0  # 800 of the 1000 came from m1 (first in id order)
    assert sim.state.pool(m2).held == 200 and sim.state.pool(m2).obligations == 400
    assert sim.state.holdings() == {(POOL, None): fed_in - 200 - 100 - 1000}

    ok(sim, "bob", encoders.unstake(m2, 100))
    sim.tick(sim.state.params.unstake_lock_blocks + 1)
    [owed] = sim.state.pending_payouts(ready_only=True)
    # more than the books count leaves: they stop at zero, and the whole amount is listed
    ext = sim.extrinsic
    sim.extrinsic += 1
    sim.state.close_extrinsic(sim.block, ext, (Transfer(POOL, E, 5000),), ((POOL, 3, None),))
    assert [(x["amount"], x["note"]) for x in sim.state.losses()[2:]] == [
        (5000, f"transfer to {E}"),
        (3, "removed by the chain"),
    ]
    assert sim.state.holdings() == {}
    assert all(info.held == 0 for info in sim.state.pools())
    # the books owe what they owed, but pay nothing they no longer hold
    assert sim.state.pending_payouts() == [owed]
    assert sim.state.pending_payouts(ready_only=True) == []
    rejected(sim, POOL, encoders.settle_payout(owed.id), [], match="holds 0 for model")
    assert (sim.state.pool(m1).obligations, sim.state.pool(m2).obligations) == (1000, 400)


def test_a_loss_in_another_asset_leaves_the_native_books_alone(sim: Sim) -> None:
    m1 = register(sim)
    m2 = register(sim, stake_asset=7)
    stake(sim, "bob", m1, 300)
    stake(sim, "bob", m2, 50, asset=7)
    ext = sim.extrinsic
    sim.extrinsic += 1
    sim.state.close_extrinsic(sim.block, ext, (Transfer(POOL, E, 20, 7),))
    assert sim.state.holdings() == {(POOL, None): 300, (POOL, 7): 30}
    assert sim.state.pool(m1).held == sim.state.pool(m1).obligations == 300
    assert (sim.state.pool(m2).held, sim.state.pool(m2).obligations) == (30, 50)


# ------------------------------------------------------------------------------- (f) bounds
# a state where every bound of every parameter is reachable alone (max_voting_blocks above
# min_voting_blocks' upper bound, the critical quorum above the quorum's and vice versa)
WIDE = ProtocolParams(
    max_voting_blocks=201_600, quorum_permill=100_000, critical_quorum_permill=1_000_000
)


@pytest.mark.parametrize("name", sorted(PARAM_BOUNDS))
def test_set_protocol_param_is_bounded(name: str) -> None:
    sim = Sim(State(WIDE))
    lo, hi = PARAM_BOUNDS[name]
    for value in (lo - 1, hi + 1):
        remark = encoders.propose(None, SetProtocolParam(name, value), 10)
        rejected(sim, "bob", remark, match=f"^{name} must be in {lo}\\.\\.{hi}$")
    for value in (lo, hi):
        out = ok(sim, "bob", encoders.propose(None, SetProtocolParam(name, value), 10))
        p = sim.state.proposal(out.entity_id)
        assert (p.kind, p.params, p.status) == (
            "SetProtocolParam",
            {"name": name, "value": value},
            "open",
        )


def test_parameters_stay_consistent_with_each_other(sim: Sim) -> None:
    def propose(name, value):
        return encoders.propose(None, SetProtocolParam(name, value), 10)

    params = sim.state.params
    assert (params.quorum_permill, params.critical_quorum_permill) == (200_000, 500_000)
    rejected(sim, "bob", propose("quorum_permill", 500_001), match="at most critical_quorum")
    rejected(sim, "bob", propose("critical_quorum_permill", 334_000 - 1), match="334000")
    rejected(sim, "bob", propose("min_voting_blocks", 100_001), match="at most max_voting")
    ok(sim, "bob", propose("quorum_permill", 500_000))
    # both valid when proposed; once the first passes, the second would break the order
    mid = register(sim)
    stake(sim, "alice", mid, 100)
    first = ok(sim, "alice", propose("quorum_permill", 450_000)).entity_id
    second = ok(sim, "alice", propose("critical_quorum_permill", 400_000)).entity_id
    ok(sim, "alice", encoders.vote(first, True))
    ok(sim, "alice", encoders.vote(second, True))
    sim.tick(11)
    assert sim.state.proposal(first).status == "passed"
    p = sim.state.proposal(second)
    assert (p.status, p.note) == (
        "void",
        "critical_quorum_permill must be at least quorum_permill",
    )
    assert (sim.state.params.quorum_permill, sim.state.params.critical_quorum_permill) == (
        450_000,
        500_000,
    )


def test_a_passed_parameter_change_takes_effect(sim: Sim) -> None:
    mid = register(sim)
    stake(sim, "alice", mid, 100)
    pass_proposal(sim, None, SetProtocolParam("min_voting_blocks", 12))
    assert sim.state.params.min_voting_blocks == 12
    rejected(sim, "bob", encoders.propose(mid, SetStrategy("krum"), 11), match="12\\.\\.")


# ------------------------------------------------------------------------------- (g) quorum
def critical_model(sim: Sim) -> int:
    """Validators V1, V2 and carol; alice holds 10% of the stake, dave 30%, bob 60%."""
    mid = register(sim, validators=(*VALS, CAROL))
    for who, amount in (("alice", 100), ("dave", 300), ("bob", 600)):
        stake(sim, who, mid, amount)
    return mid


def vote_on(sim: Sim, target, action, voters) -> tuple[str, str]:
    pid = ok(sim, voters[0], encoders.propose(target, action, 10)).entity_id
    for v in voters:
        ok(sim, v, encoders.vote(pid, True))
    sim.tick(11)
    p = sim.state.proposal(pid)
    return p.status, p.note


@pytest.mark.parametrize("action", [AddValidator(E), RemoveValidator(CAROL)])
def test_a_ten_percent_staker_cannot_change_the_validators_alone(sim: Sim, action) -> None:
    mid = critical_model(sim)
    before = sim.state.model(mid).validators
    below = ("rejected", "turnout below quorum (500000 permill of 1000)")
    assert vote_on(sim, mid, action, ("alice",)) == below
    assert vote_on(sim, mid, action, ("alice", "dave")) == below  # 40%: still a minority
    assert sim.state.model(mid).validators == before
    assert sim.state.model(mid).pool == multisig_address([*VALS, CAROL], 2)
    # the same 40% passes an ordinary proposal (quorum 20%)
    assert vote_on(sim, mid, SetStrategy("krum"), ("alice", "dave")) == ("passed", "")
    # a majority of the stake turning out passes the critical one
    assert vote_on(sim, mid, action, ("bob",)) == ("passed", "")
    assert sim.state.model(mid).validators != before
    check_books(sim.state)


def test_retirement_and_parameters_need_the_critical_quorum_too(sim: Sim) -> None:
    mid = critical_model(sim)
    below = ("rejected", "turnout below quorum (500000 permill of 1000)")
    assert vote_on(sim, mid, RetireModel(), ("alice", "dave")) == below
    param = SetProtocolParam("unstake_lock_blocks", 5)
    assert vote_on(sim, None, param, ("alice", "dave")) == below
    assert sim.state.params.unstake_lock_blocks == 20
    assert vote_on(sim, None, param, ("dave", "bob")) == ("passed", "")
    assert sim.state.params.unstake_lock_blocks == 5
    assert vote_on(sim, mid, RetireModel(), ("dave", "bob")) == ("passed", "")
    assert sim.state.model(mid).status == "retired"


# ------------------------------------------------------------------------------- (h) property
V3, V4 = (ss58(blake2b(f"validator{i}".encode(), digest_size=32).digest()) for i in (3, 4))
STAKERS = ("alice", "bob", "carol", "dave", "eve")
OTHER_POOL = multisig_address([V3, V4], 2)
MODES = ("exact", "exact", "exact", "none", "amount", "asset", "source", "extra")


class World:
    """A Sim plus everything the test fed the chain, and what it expects the books to do."""

    def __init__(self) -> None:
        self.sim = Sim(State(ProtocolParams(unstake_lock_blocks=2)))
        self.fed: list[Transfer] = []  # every transfer the chain executed
        self.owed_back = 0  # value into pools, in extrinsics with calls, that no call used
        self.lost = 0  # value out of pools that no settled payout used

    def call(self, who: str, remark: bytes, ts=(), used: Transfer | None = None):
        ts = tuple(ts)
        n = len(self.sim.state.payouts())
        out = self.sim.call(who, remark, ts)
        self.fed += ts
        used_here = used if out.ok else None
        for t in ts:
            if t.source == t.dest or t.amount == 0:
                continue
            if t == used_here:
                used_here = None  # the first equal transfer backs the call, only that one
                continue
            if self.sim.state.pool_signers(t.dest) is not None:
                self.owed_back += t.amount
            if self.sim.state.pool_signers(t.source) is not None:
                self.lost += t.amount
        refunds = [p for p in self.sim.state.payouts()[n:] if p.reason == "refund"]
        assert all(p.status == "pending" for p in refunds)
        return out

    def alone(self, ts) -> None:
        """An extrinsic with no protocol call: only what leaves a pool counts (as a loss)."""
        ext = self.sim.extrinsic
        self.sim.extrinsic += 1
        self.sim.state.close_extrinsic(self.sim.block, ext, tuple(ts))
        self.fed += ts
        self.lost += sum(
            t.amount
            for t in ts
            if t.source != t.dest and self.sim.state.pool_signers(t.source) is not None
        )

    def net(self) -> dict[tuple[str, int | None], int]:
        out: dict[tuple[str, int | None], int] = {}
        for t in self.fed:
            out[(t.dest, t.asset_id)] = out.get((t.dest, t.asset_id), 0) + t.amount
            out[(t.source, t.asset_id)] = out.get((t.source, t.asset_id), 0) - t.amount
        return out

    def check(self) -> None:
        s = self.sim.state
        net = self.net()
        for (pool, asset), held in s.holdings().items():
            assert s.pool_signers(pool) is not None, pool
            assert 0 < held <= net.get((pool, asset), 0), (pool, asset, held)
        refunds = sum(p.amount for p in s.payouts() if p.reason == "refund")
        assert refunds == self.owed_back
        assert sum(x["amount"] for x in s.losses()) == self.lost
        hit = {(x["pool"], x["asset"]) for x in s.losses()}
        for info in s.pools():
            if not hit:
                assert info.held == info.obligations, info
            elif (info.pool, info.asset_id) not in hit:  # a loss elsewhere leaves it whole
                assert info.held == info.obligations, info
            else:
                assert info.held <= info.obligations, info  # never more than it owes


def setup_world() -> World:
    """m1, m2 (native) and m3 (asset 7) share the pool of V1 and V2; m4 (V3, V4) is approved
    but not training; m5 has one validator (takes no funds). Everyone staked 100 on m1-m4."""
    w = World()
    sim = w.sim
    for vals, asset in ((VALS, None), (VALS, None), (VALS, 7), ((V3, V4), None), ((V3,), None)):
        register(sim, validators=vals, stake_asset=asset)
    for mid in (1, 2, 3, 4):
        m = sim.state.model(mid)
        for who in STAKERS:
            t = sim.pay(who, m.pool, 100, m.stake_asset)
            assert w.call(who, encoders.stake(mid, 100, m.stake_asset), (t,), used=t).ok
    pids = [
        ok(sim, "alice", encoders.propose(mid, ApproveModel(), 10)).entity_id
        for mid in (1, 2, 3, 4)
    ]
    for pid in pids:
        for who in STAKERS:
            ok(sim, who, encoders.vote(pid, True))
    sim.tick(11)
    for mid in (1, 2, 3):
        ok(sim, "alice", encoders.start_training(mid))
    sim.tick()
    w.check()
    return w


def mangle(draw, mode: str, exact: Transfer) -> tuple[Transfer, ...]:
    who = ACCOUNTS[draw(st.sampled_from(STAKERS))]
    if mode == "none":
        return ()
    if mode == "amount":
        return (Transfer(exact.source, exact.dest, exact.amount + draw(st.integers(1, 9))),)
    if mode == "asset":
        return (Transfer(exact.source, exact.dest, exact.amount, 9),)
    if mode == "source":  # from someone else: a proxied account, say
        return (Transfer(who, exact.dest, exact.amount, exact.asset_id),)
    if mode == "extra":
        return (Transfer(who, exact.dest, draw(st.integers(1, 30)), exact.asset_id), exact)
    return (exact,)


def world_step(draw, w: World) -> None:
    sim, s = w.sim, w.sim.state
    kind = draw(
        st.sampled_from(
            ("stake", "stake", "unstake", "round", "round", "drive", "drive", "refused")
            + ("out", "donate", "settle", "settle", "tick")
        )
    )
    who = draw(st.sampled_from(STAKERS))
    mid = draw(st.integers(1, 5))
    m = s.model(mid)
    if kind == "stake":
        amount = draw(st.integers(1, 300))
        exact = sim.pay(who, m.pool, amount, m.stake_asset)
        w.call(
            who,
            encoders.stake(mid, amount, m.stake_asset),
            mangle(draw, draw(st.sampled_from(MODES)), exact),
            exact,
        )
    elif kind == "unstake":
        mine = [
            x.amount for x in s.stakes(model_id=mid, account=ACCOUNTS[who]) if x.status == "active"
        ]
        w.call(who, encoders.unstake(mid, draw(st.sampled_from([*mine, 1, 10**6]))))
    elif kind == "round":
        reward, plan = draw(st.integers(0, 60)), draw(st.sampled_from((1, 1, 2)))
        spec = encoders.round_spec(
            draw(st.integers(1, 3)), 1, submit_blocks=2, aggregate_blocks=2, reward=reward
        )
        remark = (
            encoders.start_round(mid, spec) if plan == 1 else encoders.start_rounds(mid, spec, plan)
        )
        owner = "alice" if draw(st.integers(0, 4)) else who
        exact = sim.pay(owner, m.pool, reward * plan, m.stake_asset)
        ts = mangle(draw, draw(st.sampled_from(MODES)), exact) if reward else ()
        w.call(owner, remark, ts, exact)
    elif kind == "drive":
        live = [r for r in s.rounds() if r.status in ("open", "aggregating")]
        if not live:
            return
        r = draw(st.sampled_from(live))
        for worker in r.selected if r.status == "open" else ():
            if draw(st.integers(0, 4)):
                w.call(worker, encoders.submit_update(r.round_id, CID_A, draw(st.integers(1, 50))))
        r = s.round(r.round_id)
        if r.status == "aggregating" and r.submitted:
            n_bad = draw(st.integers(0, len(r.submitted)))
            bad = {x: "poisoned" for x in r.submitted[:n_bad]}
            good = dict.fromkeys(r.submitted[n_bad:], 1)
            cid = CID_A if good else r.base_cid  # with none accepted, the base model
            call = encoders.attest(
                r.round_id, cid, accuracy=0.5, loss=0.5, contributions=good, rejected=bad
            )
            for v in sim.state.model(r.model_id).validators:
                w.call(v, encode_call(call))
    elif kind == "refused":  # funded calls that cannot be accepted, their value into a pool
        amount = draw(st.integers(1, 80))
        pool = draw(st.sampled_from((POOL, OTHER_POOL)))
        remark = draw(
            st.sampled_from(
                (
                    encoders.start_round(4, encoders.round_spec(1, 1, reward=amount)),
                    encoders.propose(
                        4, StartRoundProposal(encoders.round_spec(1, 1, reward=amount)), 10
                    ),
                    encoders.create_task(1, "data_annotator", amount, 2, 5),
                    encoders.stake(99, amount),
                    encoders.stake(5, amount),
                )
            )
        )
        w.call(who, remark, (sim.pay(who, pool, amount),))
    elif kind == "out":  # a quorum of signatories moves value out beside the protocol
        pool = draw(st.sampled_from((POOL, OTHER_POOL)))
        asset = draw(st.sampled_from((None, None, 7)))
        has = w.net().get((pool, asset), 0)  # the chain moves no more than the pool has
        if has > 0:
            w.alone((Transfer(pool, ACCOUNTS[who], draw(st.integers(1, has)), asset),))
    elif kind == "donate":
        w.alone(
            (sim.pay(who, draw(st.sampled_from((POOL, OTHER_POOL))), draw(st.integers(1, 50))),)
        )
    elif kind == "settle":
        ready = s.pending_payouts(ready_only=True)
        if not ready:
            sim.tick()
            return
        p = draw(st.sampled_from(ready))
        exact = Transfer(p.pool, p.dest, p.amount, p.asset_id)
        w.call(p.pool, encoders.settle_payout(p.id), (exact,), exact)
    else:
        sim.tick(draw(st.integers(1, 3)))


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_random_sequences_never_let_the_books_exceed_what_was_transferred(data) -> None:
    w = setup_world()
    for _ in range(data.draw(st.integers(20, 80))):
        world_step(data.draw, w)
        w.check()


def test_a_loss_in_a_former_pool_re_derives_its_migration_instead_of_freezing_it(sim: Sim) -> None:
    mid = register(sim)
    stake(sim, "alice", mid, 1000)
    stake(sim, "bob", mid, 500)
    pass_proposal(sim, mid, AddValidator(CAROL), voters=("alice", "bob"))
    (migration,) = [p for p in sim.state.pending_payouts() if p.reason == "migrate"]
    assert (migration.pool, migration.amount) == (POOL, 1500)
    # one unit leaves the old pool outside the protocol (dust, a dishonest quorum)
    sim.state.close_extrinsic(sim.block, 99, (), ((POOL, 1, None),))
    sim.tick()
    pending = [p for p in sim.state.pending_payouts() if p.reason == "migrate"]
    assert [(p.pool, p.amount) for p in pending] == [(POOL, 1499)]
    assert sim.state.payouts("void")[0].id == migration.id
    # the re-derived migration is payable, and then the new pool pays its unstakes
    assert [p.id for p in sim.state.pending_payouts(ready_only=True)] == [pending[0].id]
    sim.settle_all()
    ok(sim, "bob", encoders.unstake(mid, 500))
    sim.tick(sim.state.params.unstake_lock_blocks + 1)
    assert [p.reason for p in sim.state.pending_payouts(ready_only=True)] == ["unstake"]
    assert sim.state.losses()[0]["amount"] == 1
