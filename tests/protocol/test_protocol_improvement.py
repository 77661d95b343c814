"""Rewards for improvement, and a quorum that agrees across machines.

A round pays its contributors only when its new model is no worse than the round's base on
the model's metric (within the model's tolerance); otherwise nobody is paid or slashed, the
budget goes back to the starter, and the model's rule says whether the new model is adopted.
What validators compute by evaluating a model (metrics, scores, the base's metric) is reported
beside the exact verdict and combined by the quorum's lower median."""

from __future__ import annotations

from protocol_sim import CID_A, CID_W, Sim, check_books, ok, pass_proposal, rejected, replay
from test_protocol_rounds import CID_AGG, VALIDATORS, start, submit_all, training_model

from decentralml_jupyter.protocol import calls as C
from decentralml_jupyter.protocol import encode_call, encoders


def _attest(sim, who, rid, scores, *, acc=0.9, loss=0.3, base=None, metric=None, rej=None):
    call = encoders.attest(
        rid, CID_AGG, accuracy=acc, loss=loss, contributions=scores, rejected=rej,
        base_metric=base, metric=metric,
    )  # fmt: skip
    return ok(sim, who, encode_call(call))


def _round(sim, mid, reward=1000):
    rid = start(sim, mid, reward=reward)
    return rid, submit_all(sim, rid)


def test_an_improving_round_pays_and_its_reports_are_combined_by_median(sim: Sim) -> None:
    mid = training_model(sim)
    rid, (a, b, c) = _round(sim, mid)
    # the two validators' scores and metrics differ in the last digits: still one verdict
    _attest(sim, VALIDATORS[0], rid, {a: 500_001, b: 299_999, c: 200_000}, acc=0.9000004,
            base=0.80000001)  # fmt: skip
    _attest(sim, VALIDATORS[1], rid, {a: 500_000, b: 300_000, c: 200_000}, acc=0.9, base=0.8)
    r = sim.state.round(rid)
    assert r.status == "finalized" and r.improved is True
    assert r.metrics["accuracy"] == 0.9 and r.metrics["base_accuracy"] == 0.8
    got = {u.worker: u.contribution for u in r.updates}
    lower = {a: 500_000, b: 299_999, c: 200_000}  # each the lower of the two reports
    assert sum(got.values()) == 10**6 and all(abs(got[w] - lower[w]) <= 1 for w in lower)
    assert sum(r.rewards.values()) == 1000
    check_books(sim.state)


def test_a_worse_round_is_adopted_unpaid_by_default_and_refunds(sim: Sim) -> None:
    mid = training_model(sim)
    rid, selected = _round(sim, mid, reward=900)
    worst = selected[0]
    scores = {w: 1 for w in selected[1:]}
    for v in VALIDATORS[:2]:
        _attest(sim, v, rid, scores, acc=0.7, base=0.8, rej={worst: "norm"})
    r = sim.state.round(rid)
    assert r.status == "finalized" and r.improved is False
    assert "no improvement: accuracy 0.8 -> 0.7" in r.note and "adopted without" in r.note
    assert r.rewards == {} and r.slashes == {}  # a slash would only enrich the starter
    assert sim.state.model(mid).global_cid == CID_AGG and sim.state.model(mid).round == 1
    refund = [p for p in sim.state.pending_payouts() if p.reason == "round_refund"]
    assert [p.amount for p in refund] == [900]
    check_books(sim.state)
    assert all(o.ok for o in sim.settle_all())
    check_books(sim.state)


def test_the_owners_rule_can_reject_and_tolerate(sim: Sim) -> None:
    rule = {"tolerance": 0.05, "unimproved": "reject"}
    mid_remark = encoders.register_model(
        "m", CID_A, CID_W, validators=VALIDATORS, metric="loss", improvement=rule,
        reward_policy=C.RewardPolicy("proportional", 0, 100_000),
    )  # fmt: skip
    mid = ok(sim, "alice", mid_remark).entity_id
    assert sim.state.model(mid).improvement == {"tolerance": 0.05, "unimproved": "reject"}
    from protocol_sim import stake
    from test_protocol_rounds import WORKERS

    stake(sim, "alice", mid, 1000)
    pass_proposal(sim, mid, C.ApproveModel())
    ok(sim, "alice", encoders.start_training(mid))
    for w in WORKERS[:4]:
        stake(sim, w, mid, 100)
    sim.tick()
    # loss 0.33 against 0.30 is worse by 0.03: within the tolerance, an improvement
    rid, selected = _round(sim, mid)
    for v in VALIDATORS[:2]:
        _attest(sim, v, rid, dict.fromkeys(selected, 1), loss=0.33, base=0.30)
    assert sim.state.round(rid).improved is True and sim.state.round(rid).rewards
    # 0.40 against 0.33 is not: the round fails, the model stays, the budget goes back
    rid, selected = _round(sim, mid)
    for v in VALIDATORS[:2]:
        _attest(sim, v, rid, dict.fromkeys(selected, 1), loss=0.40, base=0.33)
    r = sim.state.round(rid)
    assert r.status == "failed" and "not adopted" in r.note and r.rewards == {}
    assert sim.state.model(mid).round == 1
    # governance changes the rule
    action = encoders.action_from_params("SetImprovementRule", {"unimproved": "adopt"})
    pass_proposal(sim, mid, action)
    assert sim.state.model(mid).improvement == {"tolerance": 0.0, "unimproved": "adopt"}
    assert rejected(sim, "alice", encoders.propose(mid, C.SetImprovementRule(), 0))
    check_books(sim.state)
    assert replay(sim.log).state_hash() == sim.state.state_hash()


def test_a_minority_cannot_move_a_median_outside_the_others_reports(sim: Sim) -> None:
    """Three validators, a quorum of two: the first two reports finalize; a hostile one that
    reports wild scores for the same exact verdict moves nothing beyond the honest range."""
    mid = training_model(sim, validators=VALIDATORS)
    rid, (a, b, c) = _round(sim, mid)
    _attest(sim, VALIDATORS[0], rid, {a: 999_998, b: 1, c: 1}, acc=0.99, base=0.1)  # hostile
    _attest(sim, VALIDATORS[1], rid, {a: 400_000, b: 300_000, c: 300_000}, acc=0.9, base=0.8)
    r = sim.state.round(rid)
    assert r.status == "finalized"
    got = {u.worker: u.contribution for u in r.updates}
    # each score is the lower of the two reports, then rescaled: never the hostile extreme
    assert got[a] < 999_998 and got[b] > 1 and sum(got.values()) == 10**6
    assert r.metrics["accuracy"] == 0.9 and r.metrics["base_accuracy"] == 0.1


def test_dp_rounds_report_the_budget_each_worker_spent(sim: Sim) -> None:
    """Each update sent in a DP round is one Gaussian release of its worker's data: round
    status shows what one costs, the model what every contributor spent in all (the most of
    them is the model's epsilon), at delta 1e-5."""
    from decentralml_jupyter.fl.privacy import DEFAULT_DELTA, dp_epsilon

    mid = training_model(sim)
    assert sim.state.model(mid).privacy is None  # no DP round yet
    spent = {}
    for z in (1.5, 1.5, 3.0):
        rid = start(sim, mid, clip_norm=1.0, noise_multiplier=z)
        for w in submit_all(sim, rid):
            spent.setdefault(w, []).append(z)
        r = sim.state.round(rid)
        assert r.dp["epsilon"] == round(dp_epsilon([z]), 4) and r.dp["delta"] == DEFAULT_DELTA
        for v in VALIDATORS[:2]:
            _attest(sim, v, rid, dict.fromkeys(r.submitted, 1))
    privacy = sim.state.model(mid).privacy
    expected = {w: round(dp_epsilon(zs), 4) for w, zs in spent.items()}
    assert privacy["workers"] == expected and privacy["delta"] == DEFAULT_DELTA
    assert privacy["epsilon"] == max(expected.values())
    # a DP round without noise gives no guarantee, and says so
    rid = start(sim, mid, clip_norm=1.0, noise_multiplier=0.0)
    submit_all(sim, rid)
    assert sim.state.model(mid).privacy["epsilon"] is None
