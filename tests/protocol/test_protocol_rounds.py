"""Federated rounds in the state machine: start, selection, updates, k-of-n attestation,
rewards and slashes as pool payouts, deadlines, and every rejection leaving state unchanged."""

from __future__ import annotations

from hashlib import blake2b

import pytest
from protocol_sim import (
    ACCOUNTS,
    CID_A,
    CID_W,
    Sim,
    check_books,
    ok,
    pass_proposal,
    rejected,
    replay,
    stake,
)

from decentralml_jupyter.protocol import (
    ApproveModel,
    MinStake,
    RetireModel,
    RewardPolicy,
    SetEligibleWorkers,
    StartRoundProposal,
    State,
    encode_call,
    encoders,
)
from decentralml_jupyter.protocol.accounts import account_id, ss58

A = ACCOUNTS["alice"]
VALIDATORS = tuple(ACCOUNTS[n] for n in ("bob", "carol", "dave"))
WORKERS = tuple(ss58(blake2b(f"worker{i}".encode(), digest_size=32).digest()) for i in range(6))
CID_U = [f"QmUpdate{i}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" for i in range(6)]
CID_AGG = "QmAggregate333333333333333333333333333333333333"
CID_AGG2 = "QmAggregate444444444444444444444444444444444444"
CLI_FIELDS = {
    "round_id",
    "model_id",
    "status",
    "selected",
    "submitted",
    "aggregate_cid",
    "metrics",
    "rewards",
    "slashes",
}


def training_model(
    sim: Sim,
    validators=VALIDATORS,
    workers=WORKERS[:4],
    policy: RewardPolicy | None = None,
    worker_stake: int = 100,
    metric: str = "accuracy",
    **fields,
) -> int:
    """A model in training with ``validators`` and ``workers`` staked on it (``fields``:
    more of its registration's)."""
    policy = policy or RewardPolicy("proportional", 0, 100_000)
    mid = ok(
        sim,
        "alice",
        encoders.register_model(
            "digits", CID_A, CID_W, validators=validators, reward_policy=policy, metric=metric,
            **fields,
        ),
    ).entity_id  # fmt: skip
    stake(sim, "alice", mid, 1000)
    pass_proposal(sim, mid, ApproveModel())
    ok(sim, "alice", encoders.start_training(mid))
    for w in workers:
        stake(sim, w, mid, worker_stake)
    sim.tick()
    return mid


def start(sim: Sim, mid: int, reward: int = 1000, who: str = "alice", **kw) -> int:
    spec = encoders.round_spec(
        kw.pop("clients", 3),
        kw.pop("min_clients", 2),
        submit_blocks=kw.pop("submit_blocks", 5),
        aggregate_blocks=kw.pop("aggregate_blocks", 5),
        **kw,
    )
    spec = spec.__class__(**{**spec.__dict__, "reward": reward})
    pool = sim.state.model(mid).pool
    pay = [sim.pay(who, pool, reward)] if reward else []
    out = ok(sim, who, encoders.start_round(mid, spec), pay)
    assert out.entity == "round"
    return out.entity_id


def submit_all(sim: Sim, rid: int) -> tuple[str, ...]:
    selected = sim.state.round(rid).selected
    for i, w in enumerate(selected):
        ok(sim, w, encoders.submit_update(rid, CID_U[i], 100 * (i + 1)))
    return selected


def attest(sim: Sim, who: str, rid: int, contributions, rejected_=None, cid=CID_AGG, acc=0.91):
    call = encoders.attest(
        rid, cid, accuracy=acc, loss=0.25, contributions=contributions, rejected=rejected_
    )
    return sim.call(who, encode_call(call))


def test_a_quorum_on_the_models_own_metric_reports_it_by_its_name(sim: Sim) -> None:
    """A regression's validators attest its MAE (an AttestMetric): the round's metrics carry
    it as "mae". Metrics are reported beside the exact verdict, not compared bit for bit: two
    validators whose floats differ in the last digits still make a quorum, and the round
    records the lower median of what they reported; an AttestMetric never overwrites accuracy
    or loss."""
    mid = training_model(sim, metric="mae")
    rid = start(sim, mid)
    selected = submit_all(sim, rid)
    shares = {w: 1.0 for w in selected}

    def att(who: str, mae: float | None, loss: float = 2.5):
        call = encoders.attest(
            rid, CID_AGG, accuracy=0.0, loss=loss, contributions=shares, metric=mae
        )
        assert type(call).__name__ == ("Attest" if mae is None else "AttestMetric")
        return sim.call(who, encode_call(call))

    att(VALIDATORS[0], 41.500001, loss=2.500002)
    assert sim.state.round(rid).status == "aggregating"  # one of a quorum of 2
    att(VALIDATORS[1], 41.5)
    rnd = sim.state.round(rid)
    assert rnd.status == "finalized" and rnd.metrics["mae"] == 41.5
    assert rnd.metrics["loss"] == 2.5 and rnd.metrics["accuracy"] == 0.0
    # replayed from its snapshot, the same
    assert State.from_bytes(sim.state.to_bytes()).round(rid).metrics == rnd.metrics
    # on a model whose metric is accuracy, a quorum's AttestMetric leaves accuracy as attested
    acc_model = training_model(sim, workers=WORKERS[:4])
    rid2 = start(sim, acc_model)
    picked = submit_all(sim, rid2)
    for v in VALIDATORS[:2]:
        call = encoders.attest(
            rid2, CID_AGG, accuracy=0.9, loss=0.3, contributions={w: 1.0 for w in picked},
            metric=7.0,
        )  # fmt: skip
        sim.call(v, encode_call(call))
    assert sim.state.round(rid2).metrics["accuracy"] == 0.9


# ------------------------------------------------------------------------------- lifecycle
def test_full_round_lifecycle_with_rewards_and_slashes(sim: Sim) -> None:
    mid = training_model(sim)
    assert sim.state.eligible_workers(mid) == sorted([A, *WORKERS[:4]], key=account_id)
    rid = start(sim, mid, clients=3, min_clients=2, epochs=2, clip_norm=1.0, noise_multiplier=0.5)
    r = sim.state.round(rid)
    # alice staked, so she is eligible, but she funds the round: 4 eligible besides her
    assert r.status == "open" and len(r.selected) == 3 and r.eligible == 4 and A not in r.selected
    assert r.reward == r.escrow == 1000 and r.base_cid == CID_W
    assert r.hints == {"epochs": 2, "batch_size": 32, "learning_rate": 0.01}
    from decentralml_jupyter.fl.privacy import dp_epsilon

    assert r.dp == {
        "clip_norm": 1.0, "noise_multiplier": 0.5,
        "epsilon": round(dp_epsilon([0.5]), 4), "delta": 1e-5,
    }  # fmt: skip
    assert (r.submit_deadline, r.aggregate_deadline) == (r.start_block + 5, r.start_block + 10)
    assert sim.state.open_round(mid).round_id == rid
    assert sim.state.created_by(r.start_block, 0) == [("round", rid)]
    # the documented selection: rank eligible workers by blake2b(seed ++ account id)
    block_hash = bytes.fromhex(f"{r.start_block:064x}")
    seed = blake2b(
        b"dfml/round-selection"
        + block_hash
        + mid.to_bytes(8, "little")
        + rid.to_bytes(8, "little"),
        digest_size=32,
    ).digest()
    assert r.seed == "0x" + seed.hex()
    ranked = sorted(
        (w for w in sim.state.eligible_workers(mid) if w != A),
        key=lambda a: blake2b(seed + account_id(a), digest_size=32).digest(),
    )
    assert r.selected == tuple(ranked[:3])
    check_books(sim.state)

    honest1, honest2, poisoner = submit_all(sim, rid)
    r = sim.state.round(rid)
    assert r.status == "aggregating"  # all selected clients are in
    assert r.submitted == (honest1, honest2, poisoner)
    assert [u.num_examples for u in r.updates] == [100, 200, 300]
    stake_before = sim.state.stakes(model_id=mid, account=poisoner)[0].amount

    weights = {honest1: 3, honest2: 1}
    out = attest(sim, VALIDATORS[0], rid, weights, {poisoner: "norm bound exceeded"})
    assert out.ok and out.entity == "attestation"
    assert sim.state.round(rid).status == "aggregating"  # 1 of k=2
    # the same result listed in another order has the same digest, so it completes the quorum
    reordered = encoders.attest(
        rid,
        CID_AGG,
        accuracy=0.91,
        loss=0.25,
        contributions=dict(reversed(weights.items())),
        rejected={poisoner: "norm bound exceeded"},
    )
    assert ok(sim, VALIDATORS[2], encode_call(reordered)).ok

    r = sim.state.round(rid)
    assert r.status == "finalized" and r.number == 1 and r.escrow == 0
    assert set(r.to_json()) >= CLI_FIELDS
    assert r.aggregate_cid == CID_AGG
    assert r.metrics["accuracy"] == 0.91 and r.metrics["loss"] == 0.25
    m = sim.state.model(mid)
    assert (m.global_cid, m.round) == (CID_AGG, 1)
    # slash: 10% of the poisoner's stake, added to the honest contributors' pot
    slash = stake_before // 10
    assert r.slashes == {poisoner: slash}
    assert sim.state.stakes(model_id=mid, account=poisoner)[0].amount == stake_before - slash
    pot = 1000 + slash
    # floor shares, the rounding remainder to the largest contributor
    remainder = pot - pot * 3 // 4 - pot // 4
    assert r.rewards == {honest1: pot * 3 // 4 + remainder, honest2: pot // 4}
    assert sum(r.rewards.values()) == pot
    assert r.rewards[honest2] > 0 > -slash  # honest earns, the poisoner loses
    assert {u.worker: u.status for u in r.updates} == {
        honest1: "accepted",
        honest2: "accepted",
        poisoner: "rejected",
    }
    payouts = {p.dest: p for p in sim.state.pending_payouts() if p.reason == "round_reward"}
    assert {d: p.amount for d, p in payouts.items()} == r.rewards
    assert all(p.pool == m.pool for p in payouts.values())
    assert [x.payout_id for x in sim.state.rewards(round_id=rid)] == [
        payouts[x.account].id for x in sim.state.rewards(round_id=rid)
    ]
    assert sim.state.slashes(account=poisoner)[0].reason == "norm bound exceeded"
    check_books(sim.state)
    # the third validator is too late: the round is over
    assert not attest(sim, VALIDATORS[1], rid, weights, {poisoner: "x"}).ok
    assert all(o.ok for o in sim.settle_all())
    check_books(sim.state)
    assert sim.state.pool(mid).round_escrow == 0
    # a new round may start now, from the new global model
    rid2 = start(sim, mid)
    assert sim.state.round(rid2).base_cid == CID_AGG
    assert [x.round_id for x in sim.state.round_history(mid)] == [rid, rid2]


def test_selection_is_deterministic_and_seeded_by_the_block_hash() -> None:
    def selection(hash_of) -> tuple[str, ...]:
        sim = Sim()
        sim.call = _with_hash(sim, hash_of)  # type: ignore[method-assign]
        mid = training_model(sim, workers=WORKERS)
        return sim.state.round(start(sim, mid, clients=3)).selected

    same = selection(lambda b: f"0x{b:064x}")
    assert selection(lambda b: f"0x{b:064x}") == same
    others = {selection(lambda b, i=i: f"0x{b + 1000 * i:064x}") for i in range(1, 6)}
    assert len(others | {same}) > 1  # 20 ways to pick 3 of 7: the hash changes the pick


def _with_hash(sim: Sim, hash_of):
    from decentralml_jupyter.protocol import CallContext

    def call(who, remark, transfers=(), batch_index=0):
        ctx = CallContext(
            sim.block,
            hash_of(sim.block),
            sim.extrinsic,
            batch_index,
            ACCOUNTS.get(who, who),
            tuple(transfers),
        )
        sim.extrinsic += 1
        sim.log.append(("apply", ctx, remark))
        out = sim.state.apply(ctx, remark)
        sim.state.close_extrinsic(ctx.block_number, ctx.extrinsic_index, ctx.transfers)
        return out

    return call


def test_eligibility_rules_shape_the_selection(sim: Sim) -> None:
    mid = training_model(sim, workers=WORKERS[:3])
    stake(sim, WORKERS[0], mid, 400)  # now 500 staked
    pass_proposal(sim, mid, SetEligibleWorkers(MinStake(500)))
    # validators never train; only the accounts meeting min_stake (alice 1000, worker0 500)
    assert sim.state.eligible_workers(mid) == sorted([A, WORKERS[0]], key=account_id)
    # and alice funds the round: who pays a round does not work in it
    rejected(sim, "alice", encoders.start_round(mid, encoders.round_spec(5, 2)), [],
             match="1 eligible workers besides the round's starter")  # fmt: skip
    rid = start(sim, mid, clients=5, min_clients=1)
    assert set(sim.state.round(rid).selected) == {WORKERS[0]}


# ------------------------------------------------------------------------------- rejections
def test_every_invalid_round_call_changes_nothing(sim: Sim) -> None:
    mid = training_model(sim)
    pool = sim.state.model(mid).pool
    spec = encoders.round_spec(2, 1, submit_blocks=3, aggregate_blocks=3, reward=50)
    pay = [sim.pay("alice", pool, 50)]
    rejected(sim, "bob", encoders.start_round(mid, spec), [sim.pay("bob", pool, 50)], "owner")
    rejected(sim, "alice", encoders.start_round(mid, spec), [], "no unused transfer")
    rejected(sim, "alice", encoders.start_round(mid, spec), [sim.pay("alice", pool, 49)], "50")
    rejected(sim, "alice", encoders.start_round(99, spec), pay, "unknown model")
    bad = encoders.round_spec(2, 3, reward=50)
    rejected(sim, "alice", encoders.start_round(mid, bad), pay, "min_clients")
    many = encoders.round_spec(6, 6, reward=50)
    rejected(sim, "alice", encoders.start_round(mid, many), pay, "4 eligible workers besides")

    rid = ok(sim, "alice", encoders.start_round(mid, spec), pay).entity_id
    rejected(sim, "alice", encoders.start_round(mid, spec), pay, "already has round")
    selected = sim.state.round(rid).selected
    outsider = next(w for w in (A, *WORKERS) if w not in selected)
    rejected(sim, outsider, encoders.submit_update(rid, CID_U[0], 10), match="not selected")
    rejected(sim, VALIDATORS[0], encoders.submit_update(rid, CID_U[0], 10), match="not selected")
    rejected(sim, selected[0], encoders.submit_update(rid + 1, CID_U[0], 10), match="unknown")
    rejected(sim, selected[0], encoders.unstake(mid, 1), match="bonded")
    ok(sim, selected[0], encoders.submit_update(rid, CID_U[0], 10))
    rejected(sim, selected[0], encoders.submit_update(rid, CID_U[1], 10), match="already")
    rejected(
        sim,
        VALIDATORS[0],
        encode_call(encoders.attest(rid, CID_AGG, accuracy=1, loss=0, contributions={A: 1})),
        match="open",
    )
    sim.tick(3)  # past the submit deadline: one update of min 1 -> aggregating
    r = sim.state.round(rid)
    assert r.status == "aggregating"
    rejected(sim, selected[1], encoders.submit_update(rid, CID_U[1], 10), match="aggregating")

    def att(who, contributions, rej=None, cid=CID_AGG):
        call = encoders.attest(
            rid, cid, accuracy=0.5, loss=1.5, contributions=contributions, rejected=rej
        )
        return rejected(sim, who, encode_call(call), match=".")

    assert "not a validator" in att("alice", {selected[0]: 1})
    assert "judge exactly" in att(VALIDATORS[0], {selected[0]: 1, selected[1]: 1})
    assert "judge exactly" in att(VALIDATORS[0], {}, {})
    assert "both accepted and rejected" in att(VALIDATORS[0], {selected[0]: 1}, {selected[0]: "x"})
    assert "base model" in att(VALIDATORS[0], {}, {selected[0]: "malformed"})
    # hand-built scores that do not sum to 10^6
    from decentralml_jupyter.protocol import Attest, Contribution

    short = Attest(rid, CID_AGG, 1, 1, (Contribution(selected[0], 999_999),))
    rejected(sim, VALIDATORS[0], encode_call(short), match="sum to 999999")
    ok(
        sim,
        VALIDATORS[0],
        encode_call(
            encoders.attest(rid, CID_AGG, accuracy=0.5, loss=1.5, contributions={selected[0]: 1})
        ),
    )
    assert "already attested" in att(VALIDATORS[0], {selected[0]: 1})
    rejected(sim, VALIDATORS[1], b"dfml\x01\x22\x04", match="malformed")  # truncated attest
    check_books(sim.state)


def test_mismatched_attestations_fail_the_round_and_refund(sim: Sim) -> None:
    mid = training_model(sim)
    rid = start(sim, mid, reward=900)
    selected = submit_all(sim, rid)
    even = dict.fromkeys(selected, 1)
    # three validators, three different results: no digest reaches k = 2
    assert attest(sim, VALIDATORS[0], rid, even).ok
    assert attest(sim, VALIDATORS[1], rid, even, cid=CID_AGG2).ok
    third = {w: 1 for w in selected[1:]}
    assert attest(sim, VALIDATORS[2], rid, third, {selected[0]: "bad update"}).ok
    assert sim.state.round(rid).status == "aggregating"
    check_books(sim.state)
    sim.tick(9)  # the round started in this block; attestations are refused from block +10
    assert sim.state.round(rid).status == "aggregating"
    sim.tick()
    r = sim.state.round(rid)
    assert r.status == "failed" and "quorum" in r.note and r.escrow == 0
    assert r.rewards == {} and r.aggregate_cid is None
    assert sim.state.model(mid).global_cid == CID_W and sim.state.model(mid).round == 0
    refund = [p for p in sim.state.pending_payouts() if p.reason == "round_refund"]
    assert [(p.dest, p.amount) for p in refund] == [(A, 900)]
    check_books(sim.state)
    assert all(o.ok for o in sim.settle_all())
    check_books(sim.state)
    # selected workers may unstake again once the round has ended
    ok(sim, selected[0], encoders.unstake(mid, 1))


def test_too_few_updates_fail_at_the_submit_deadline(sim: Sim) -> None:
    mid = training_model(sim)
    rid = start(sim, mid, reward=300, clients=3, min_clients=2)
    first = sim.state.round(rid).selected[0]
    ok(sim, first, encoders.submit_update(rid, CID_U[0], 5))  # the other two never show up
    sim.tick(4)
    assert sim.state.round(rid).status == "open"
    sim.tick()  # the end of the last block that takes updates
    r = sim.state.round(rid)
    assert r.status == "failed" and "1 updates by the deadline, 2 needed" in r.note
    assert [(p.dest, p.amount, p.reason) for p in sim.state.pending_payouts()] == [
        (A, 300, "round_refund")
    ]
    check_books(sim.state)


def test_quorum_that_rejects_every_update_slashes_and_refunds(sim: Sim) -> None:
    """A quorum rejecting every update judged the round itself bad (e.g. hostile hints):
    nobody is slashed, the round fails and its whole budget goes back to the starter."""
    mid = training_model(sim, validators=VALIDATORS[:2], policy=RewardPolicy("equal", 0, 500_000))
    rid = start(sim, mid, reward=200, clients=2, min_clients=1)
    stakes_before = sim.state.stakes(model_id=mid)
    selected = submit_all(sim, rid)
    bad = dict.fromkeys(selected, "non-finite values")
    assert attest(sim, VALIDATORS[0], rid, {}, bad, cid=CID_W).ok
    assert sim.state.round(rid).status == "aggregating"  # two validators: k = 2
    assert attest(sim, VALIDATORS[1], rid, {}, bad, cid=CID_W).ok
    r = sim.state.round(rid)
    assert (r.status, r.note) == ("failed", "validators rejected every update")
    assert r.metrics["accuracy"] == 0.91 and r.escrow == 0 and r.number is None
    assert {u.worker: (u.status, u.reason) for u in r.updates} == {
        w: ("rejected", "non-finite values") for w in selected
    }
    assert r.slashes == {} and sim.state.slashes() == [] and r.rewards == {}
    assert sim.state.stakes(model_id=mid) == stakes_before  # nobody lost stake
    assert sim.state.model(mid).round == 0 and sim.state.model(mid).global_cid == CID_W
    assert [(p.dest, p.amount, p.reason) for p in sim.state.pending_payouts()] == [
        (A, 200, "round_refund")
    ]
    check_books(sim.state)


def test_equal_policy_and_remainder_to_the_largest_contributor(sim: Sim) -> None:
    mid = training_model(sim, policy=RewardPolicy("equal", 100, 0))
    spec = encoders.round_spec(3, 3, reward=99)
    pool = sim.state.model(mid).pool
    rejected(sim, "alice", encoders.start_round(mid, spec), [sim.pay("alice", pool, 99)], "100")
    rid = start(sim, mid, reward=101, clients=3, min_clients=3)
    a, b, c = submit_all(sim, rid)
    weights = {a: 1, b: 5, c: 1}
    assert attest(sim, VALIDATORS[0], rid, weights).ok
    assert attest(sim, VALIDATORS[1], rid, weights).ok
    r = sim.state.round(rid)
    assert r.rewards == {a: 33, b: 35, c: 33} and r.slashes == {}
    assert sum(r.rewards.values()) == 101
    check_books(sim.state)


# ------------------------------------------------------------------------------- governance
def test_start_round_by_proposal_is_funded_at_proposing(sim: Sim) -> None:
    mid = training_model(sim)
    pool = sim.state.model(mid).pool
    action = StartRoundProposal(encoders.round_spec(2, 1, submit_blocks=3, reward=70))
    rejected(sim, "bob", encoders.propose(mid, action, 10), match="no unused transfer")
    pid = ok(sim, "bob", encoders.propose(mid, action, 10), [sim.pay("bob", pool, 70)]).entity_id
    assert sim.state.pool(mid).round_escrow == 70
    check_books(sim.state)
    ok(sim, "alice", encoders.vote(pid, True))
    sim.tick(11)
    p = sim.state.proposal(pid)
    r = sim.state.open_round(mid)
    assert p.status == "passed" and p.note == f"started round {r.round_id}"
    assert (r.starter, r.proposal_id, r.escrow) == (ACCOUNTS["bob"], pid, 70)
    # started in the tick of block b: updates from block b + 1 for submit_blocks blocks
    assert r.submit_deadline == r.start_block + 1 + 3
    assert sim.state.created_by(r.start_block, -1) == [("round", r.round_id)]
    check_books(sim.state)
    sim.tick(4)  # nobody submits: the proposer gets the budget back
    assert sim.state.round(r.round_id).status == "failed"
    assert [(p.dest, p.amount) for p in sim.state.pending_payouts()] == [(ACCOUNTS["bob"], 70)]

    # a proposal that does not pass refunds its budget at the tally
    pid = ok(sim, "bob", encoders.propose(mid, action, 10), [sim.pay("bob", pool, 70)]).entity_id
    ok(sim, "alice", encoders.vote(pid, False))
    sim.tick(11)
    assert sim.state.proposal(pid).status == "rejected"
    assert sim.state.pool(mid).round_escrow == 0
    assert sum(p.amount for p in sim.state.pending_payouts() if p.reason == "round_refund") == 140
    check_books(sim.state)


def test_passed_start_round_that_cannot_start_is_void_and_refunded(sim: Sim) -> None:
    mid = training_model(sim)
    pool = sim.state.model(mid).pool
    action = StartRoundProposal(encoders.round_spec(2, 1, reward=10))
    pid = ok(sim, "bob", encoders.propose(mid, action, 10), [sim.pay("bob", pool, 10)]).entity_id
    ok(sim, "alice", encoders.vote(pid, True))
    start(sim, mid, submit_blocks=20)  # the owner opens a round first, live at the tally
    sim.tick(11)
    p = sim.state.proposal(pid)
    assert p.status == "void" and "already has round" in p.note
    assert [(x.dest, x.amount) for x in sim.state.pending_payouts()] == [(ACCOUNTS["bob"], 10)]
    check_books(sim.state)


def test_retiring_a_model_fails_its_live_round(sim: Sim) -> None:
    mid = training_model(sim)
    rid = start(sim, mid, reward=40, submit_blocks=20)  # still open when the vote ends
    pass_proposal(sim, mid, RetireModel())
    r = sim.state.round(rid)
    assert r.status == "failed" and r.note == "model retired"
    assert [(p.dest, p.amount) for p in sim.state.pending_payouts()] == [(A, 40)]
    check_books(sim.state)


# ------------------------------------------------------------------------------- snapshots
def test_rounds_survive_snapshots_and_replay(sim: Sim) -> None:
    mid = training_model(sim)
    rid = start(sim, mid)
    selected = submit_all(sim, rid)
    raw = sim.state.to_bytes()
    n = len(sim.log)
    weights = dict.fromkeys(selected[:2], 1)
    rej = {selected[2]: "poisoned"}
    assert attest(sim, VALIDATORS[0], rid, weights, rej).ok
    assert attest(sim, VALIDATORS[1], rid, weights, rej).ok
    sim.tick()
    final = sim.state.state_hash()
    assert replay(sim.log).state_hash() == final
    restored = replay(sim.log[n:], State.from_bytes(raw))
    assert restored.state_hash() == final
    assert restored.round(rid) == sim.state.round(rid)


def test_snapshots_of_an_older_format_are_refused_and_the_indexer_replays(
    sim: Sim, tmp_path
) -> None:
    """Format 1 (before per-asset books, pool signatories and losses) cannot be converted:
    its books may count value no event backs; format 2 lacks each round's ``next_round_id``;
    format 3 lacks the attestations' own metric. ``from_bytes`` refuses them and the indexer,
    finding one in its database, starts over from genesis instead of resuming."""
    import json
    import sqlite3

    from decentralml_jupyter.protocol import SnapshotError
    from decentralml_jupyter.protocol.indexer import Indexer

    mid = training_model(sim)
    start(sim, mid)
    current = sim.state.to_bytes()
    d = json.loads(current)
    assert d["format"] == 8
    # format 7 lacks the delegations of updates
    d7 = json.loads(current)
    d7["format"] = 7
    del d7["delegates"]
    with pytest.raises(SnapshotError, match="unsupported snapshot format 7"):
        State.from_bytes(json.dumps(d7).encode())
    # format 6 lacks deposits and prediction markets
    d6 = json.loads(current)
    d6["format"] = 6
    del d6["markets"]
    with pytest.raises(SnapshotError, match="unsupported snapshot format 6"):
        State.from_bytes(json.dumps(d6).encode())
    # format 5 lacks the attestations' verdict tables
    d5 = json.loads(current)
    d5["format"] = 5
    with pytest.raises(SnapshotError, match="unsupported snapshot format 5"):
        State.from_bytes(json.dumps(d5).encode())
    # format 4 lacks the strategies' parameters and server state
    d4 = json.loads(current)
    d4["format"] = 4
    for m in d4["models"]:
        del m["strategy_params"], m["state_cid"]
    with pytest.raises(SnapshotError, match="unsupported snapshot format 4"):
        State.from_bytes(json.dumps(d4).encode())
    d3 = json.loads(current)
    d3["format"] = 3
    with pytest.raises(SnapshotError, match="unsupported snapshot format 3"):
        State.from_bytes(json.dumps(d3).encode())
    # format 2: the same, but its rounds do not record the round their plan opened next
    d2 = json.loads(current)
    d2["format"] = 2
    for r in d2["rounds"]:
        del r["next_round_id"]
    with pytest.raises(SnapshotError, match="unsupported snapshot format 2"):
        State.from_bytes(json.dumps(d2).encode())
    # what a format-1 snapshot from before rounds looked like
    d["format"] = 1
    for k in ("rounds", "updates", "attestations", "rewards", "slashes", "pools", "losses"):
        del d[k]
    for k in ("round", "update", "attestation", "reward", "slash"):
        del d["next"][k]
    d["held"] = [[m, pool, v] for m, pool, _, v in d["held"]]
    old = json.dumps(d).encode()
    with pytest.raises(SnapshotError, match="unsupported snapshot format 1"):
        State.from_bytes(old)

    db = tmp_path / "index.sqlite"
    for snapshot, resumes in ((current, True), (old, False)):
        with sqlite3.connect(db) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), "
                "block_number INTEGER, block_hash TEXT, state BLOB)"
            )
            conn.execute(
                "INSERT OR REPLACE INTO snapshot VALUES (1, ?, ?, ?)",
                (sim.state.last_block, sim.state.last_block_hash, snapshot),
            )
        conn.close()
        indexer = Indexer(None, db)  # type: ignore[arg-type]  # no chain call until a sync
        try:
            if resumes:
                assert indexer.block_number == sim.state.last_block
                assert indexer.state.state_hash() == sim.state.state_hash()
            else:  # replays from genesis on its next sync
                assert (indexer.block_number, indexer.block_hash) == (0, None)
                assert indexer.state.state_hash() == State().state_hash()
        finally:
            indexer.close()


@pytest.mark.parametrize("validators, k", [(2, 2), (3, 2), (4, 3), (5, 3), (6, 4)])
def test_quorum_is_the_pool_threshold(validators: int, k: int) -> None:
    sim = Sim()
    vals = tuple(
        ss58(blake2b(f"v{i}".encode(), digest_size=32).digest()) for i in range(validators)
    )
    mid = training_model(sim, validators=vals)
    rid = start(sim, mid, clients=2, min_clients=2)
    selected = submit_all(sim, rid)
    assert sim.state.round(rid).quorum == k
    for i in range(k):
        assert sim.state.round(rid).status == "aggregating"
        assert attest(sim, vals[i], rid, dict.fromkeys(selected, 1)).ok
    assert sim.state.round(rid).status == "finalized"


def test_announced_keys_are_kept_replaced_and_snapshotted():
    from decentralml_jupyter.protocol import CallContext, State, encoders
    from decentralml_jupyter.protocol.calls import decode_call

    alice = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
    s = State()
    k1, k2 = "0x" + "11" * 32, "0x" + "22" * 32
    assert s.apply(CallContext(1, "0x01", 0, 0, alice), encoders.announce_key(k1)).ok
    s.tick(1, "0x01")
    assert s.public_keys() == {alice: k1}
    assert s.apply(
        CallContext(2, "0x02", 0, 0, alice), encoders.announce_key(bytes(32 * [0x22]))
    ).ok
    s.tick(2, "0x02")
    assert s.public_keys([alice, "nobody"]) == {alice: k2}
    before = s.state_hash()
    bad = s.apply(CallContext(3, "0x03", 0, 0, alice), encoders.announce_key("0x" + "00" * 32))
    assert not bad.ok and "zero" in bad.reason and s.state_hash() == before
    assert State.from_bytes(s.to_bytes()).public_keys() == {alice: k2}
    assert decode_call(encoders.announce_key(k1)).public_key == k1


# ------------------------------------------------------------------------------- plans
def start_plan(sim: Sim, mid: int, rounds: int, reward: int = 100, **kw):
    spec = encoders.round_spec(
        kw.pop("clients", 3),
        kw.pop("min_clients", 2),
        submit_blocks=kw.pop("submit_blocks", 5),
        aggregate_blocks=kw.pop("aggregate_blocks", 5),
        **kw,
    )
    spec = spec.__class__(**{**spec.__dict__, "reward": reward})
    pool = sim.state.model(mid).pool
    pay = [sim.pay("alice", pool, reward * rounds)] if reward else []
    return sim.call("alice", encoders.start_rounds(mid, spec, rounds), pay)


def finalize(sim: Sim, rid: int) -> None:
    selected = submit_all(sim, rid)
    weights = dict.fromkeys(selected, 1)
    assert attest(sim, VALIDATORS[0], rid, weights).ok
    assert attest(sim, VALIDATORS[1], rid, weights).ok


def test_a_plan_opens_each_next_round_in_the_block_that_ends_the_last(sim: Sim) -> None:
    mid = training_model(sim)
    out = start_plan(sim, mid, 3, reward=100)
    assert out.ok and out.entity == "round"
    rid = out.entity_id
    first = sim.state.round(rid)
    assert (first.rounds_left, first.escrow) == (2, 100)
    assert sim.state.pool(mid).round_escrow == 300  # the whole plan's budget is held
    check_books(sim.state)
    seen = []
    for left in (2, 1, 0):
        r = sim.state.open_round(mid)
        assert r.rounds_left == left and r.reward == 100
        seen.append(r.round_id)
        finalize(sim, r.round_id)
        done = sim.state.round(r.round_id)
        assert done.status == "finalized" and done.rounds_left == 0
        nxt = sim.state.open_round(mid)
        if left:  # opened by the quorum's attestation, in the same block, from the new model
            assert nxt.start_block == done.ended_block and nxt.base_cid == CID_AGG
            assert nxt.round_id == r.round_id + 1
        else:
            assert nxt is None
        check_books(sim.state)
        sim.tick()
    assert seen == [rid, rid + 1, rid + 2] and sim.state.model(mid).round == 3
    rewards = [p for p in sim.state.pending_payouts() if p.reason == "round_reward"]
    assert sum(p.amount for p in rewards) == 300
    assert sim.state.pool(mid).round_escrow == 0


def test_a_plan_links_each_round_to_the_next_it_opened(sim: Sim) -> None:
    mid = training_model(sim)
    single = start(sim, mid, reward=100)
    finalize(sim, single)
    sim.tick()
    assert sim.state.round(single).next_round_id is None  # a lone round has no next
    assert sim.state.round(single).to_json()["next_round_id"] is None
    first = start_plan(sim, mid, 3, reward=100).entity_id
    ids = [first]
    while (r := sim.state.round(ids[-1])).status in ("open", "aggregating"):
        assert r.next_round_id is None  # recorded only once the plan opens the next
        finalize(sim, r.round_id)
        done = sim.state.round(r.round_id)
        if done.next_round_id is not None:
            ids.append(done.next_round_id)
        sim.tick()
    assert len(ids) == 3 and ids[0] == single + 1
    links = [sim.state.round(i).next_round_id for i in ids]
    assert links == [ids[1], ids[2], None]  # 1 -> 2 -> 3, the last ends the plan
    assert [sim.state.round(i).to_json()["next_round_id"] for i in ids] == links
    assert all(sim.state.round(i).status == "finalized" for i in ids)
    restored = State.from_bytes(sim.state.to_bytes())
    assert [restored.round(i).next_round_id for i in ids] == links


def test_a_plan_goes_on_after_a_failed_round_and_refunds_what_cannot_run(sim: Sim) -> None:
    mid = training_model(sim)
    start_block = sim.block
    rid = start_plan(sim, mid, 3, reward=50, clients=3, min_clients=3, submit_blocks=8).entity_id
    # the model is voted out while the plan runs: the tally lands during its second round
    pid = ok(sim, "alice", encoders.propose(mid, RetireModel(), 10)).entity_id
    ok(sim, "alice", encoders.vote(pid, True))
    sim.tick(8)  # nobody submits: the first round fails at its deadline, the next one opens
    failed = sim.state.round(rid)
    assert failed.status == "failed" and "updates by the deadline" in failed.note
    second = sim.state.open_round(mid)
    assert second.round_id == rid + 1 and second.rounds_left == 1
    assert second.start_block == failed.ended_block  # opened in the tick, takes calls next block
    assert failed.next_round_id == second.round_id
    assert second.submit_deadline == start_block + 8 + 8 > start_block + 10
    check_books(sim.state)
    # the model retires: its live round fails and the rest of the plan is refunded
    sim.tick(3)
    assert sim.state.proposal(pid).status == "passed"
    r = sim.state.round(rid + 1)
    assert r.status == "failed" and "plan stopped" in r.note and r.rounds_left == 0
    assert r.note.startswith("model retired")
    assert r.next_round_id is None  # the plan stopped: no next round was opened
    assert sim.state.open_round(mid) is None
    refunds = [p.amount for p in sim.state.pending_payouts() if p.reason == "round_refund"]
    assert sorted(refunds) == [50, 50, 50]  # each failed round's budget, and the third's
    check_books(sim.state)


def test_a_plan_needs_its_whole_budget_and_its_owner(sim: Sim) -> None:
    mid = training_model(sim)
    spec = encoders.round_spec(2, 1, reward=10)
    pool = sim.state.model(mid).pool
    # refused, each plan's transfer into the pool is owed back (``rejected`` checks it)
    short = encoders.start_rounds(mid, spec, 4)
    rejected(sim, "alice", short, [sim.pay("alice", pool, 30)], match="transfer")
    other = encoders.start_rounds(mid, spec, 4)
    rejected(sim, "bob", other, [sim.pay("bob", pool, 40)], match="owner")
    zero = sim.call("alice", encoders.start_rounds(mid, spec, 0), [])
    assert not zero.ok
    assert sim.state.open_round(mid) is None
    assert [(p.dest, p.amount, p.reason) for p in sim.state.pending_payouts()] == [
        (A, 30, "refund"),
        (ACCOUNTS["bob"], 40, "refund"),
    ]
    assert sim.state.pool(mid).round_escrow == 0
    check_books(sim.state)


def test_plans_survive_snapshots_and_replay(sim: Sim) -> None:
    mid = training_model(sim)
    rid = start_plan(sim, mid, 2).entity_id
    raw, n = sim.state.to_bytes(), len(sim.log)
    finalize(sim, rid)
    sim.tick()
    assert sim.state.round(rid + 1).status == "open"
    restored = replay(sim.log[n:], State.from_bytes(raw))
    assert restored.state_hash() == sim.state.state_hash()
    assert replay(sim.log).state_hash() == sim.state.state_hash()
