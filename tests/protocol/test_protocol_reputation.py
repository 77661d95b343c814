"""Reputation: each worker's record per model, derived from the chain alone, so that every
indexer (here: a replay of the same calls into a fresh state, and a snapshot) derives the
same."""

from __future__ import annotations

from protocol_sim import Sim, replay
from test_protocol_rounds import VALIDATORS, attest, start, submit_all, training_model

from decentralml_jupyter.protocol import State


def test_reputation_counts_verdicts_scores_rewards_and_slashes(sim: Sim) -> None:
    mid = training_model(sim)
    records = []
    for k in range(3):
        rid = start(sim, mid, clients=3, min_clients=3)
        picked = submit_all(sim, rid)
        bad = picked[0] if k < 2 else None  # the first selected is rejected twice
        shares = {w: 1.0 + i for i, w in enumerate(picked) if w != bad}
        reasons = {bad: "update norm too large"} if bad else None
        for v in VALIDATORS[:2]:
            assert attest(sim, v, rid, shares, reasons).ok
        records.append((picked, bad, sim.state.round(rid)))
        sim.settle_all()
        sim.tick()
    rep = {r.account: r for r in sim.state.reputation(mid)}
    for who, r in rep.items():
        rounds = [rnd for picked, _, rnd in records if who in picked]
        accepted = [rnd for rnd in rounds if who in rnd.rewards]
        assert r.accepted == len(accepted) and r.rejected == len(rounds) - len(accepted)
        assert r.score == sum(
            u.contribution for rnd in accepted for u in rnd.updates if u.worker == who
        )
        assert r.rewarded == sum(rnd.rewards[who] for rnd in accepted)
        assert r.slashed == sum(rnd.slashes.get(who, 0) for rnd in rounds)
    assert sum(r.rejected for r in rep.values()) == 2 and sum(r.slashed > 0 for r in rep.values())
    # one account, another model, no model: filters
    some = next(iter(rep))
    assert sim.state.reputation(account=some) == [rep[some]]
    assert sim.state.reputation(mid + 1) == []
    # every indexer derives the same: a replay, a restored snapshot
    assert replay(sim.log).reputation() == sim.state.reputation()
    assert State.from_bytes(sim.state.to_bytes()).reputation() == sim.state.reputation()


def equal_round(sim: Sim, mid: int, clients: int) -> tuple[str, ...]:
    """A round of ``clients`` on model ``mid`` whose updates all score the same, finalized by
    two validators and paid; the workers it selected."""
    rid = start(sim, mid, clients=clients, min_clients=clients)
    picked = submit_all(sim, rid)
    for v in VALIDATORS[:2]:
        assert attest(sim, v, rid, {w: 1.0 for w in picked}).ok
    sim.settle_all()
    sim.tick()
    return picked


def test_governance_can_require_a_minimum_reputation(sim: Sim) -> None:
    from protocol_sim import pass_proposal, stake
    from test_protocol_rounds import WORKERS

    from decentralml_jupyter.protocol import SetEligibleWorkers
    from decentralml_jupyter.protocol.calls import MinReputation

    mid = training_model(sim, workers=WORKERS[:4])
    picked = equal_round(sim, mid, clients=3)
    earned = {r.account: r.score for r in sim.state.reputation(mid)}
    assert set(earned) == set(picked) and all(s > 0 for s in earned.values())
    stake(sim, WORKERS[5], mid, 100)  # a newcomer: no record
    floor = min(earned.values())
    pass_proposal(sim, mid, SetEligibleWorkers(MinReputation(floor)))
    assert sim.state.model(mid).eligibility == {"type": "min_reputation", "score": floor}
    assert sorted(sim.state.eligible_workers(mid)) == sorted(picked)
    # a round now selects among them only; one asking for more is refused with the reason
    rid2 = start(sim, mid, clients=3, min_clients=3)
    assert set(sim.state.round(rid2).selected) == set(picked)


def test_the_reputation_reward_policy_weighs_shares_by_prior_reputation(sim: Sim) -> None:
    from protocol_sim import check_books
    from test_protocol_rounds import WORKERS

    from decentralml_jupyter.protocol import RewardPolicy

    policy = RewardPolicy("reputation", 0, 100_000)
    mid = training_model(sim, workers=WORKERS[:3], policy=policy)
    first = equal_round(sim, mid, clients=2)
    rid2 = start(sim, mid, reward=10_000, clients=3, min_clients=3)
    everyone = submit_all(sim, rid2)
    for v in VALIDATORS[:2]:
        assert attest(sim, v, rid2, {w: 1.0 for w in everyone}).ok
    rnd = sim.state.round(rid2)
    assert sum(rnd.rewards.values()) == 10_000  # the whole pot, never more
    (newcomer,) = set(everyone) - set(first)
    # equal scores: the two with a round's half share each behind them get 1.5x the newcomer's
    for w in first:
        assert rnd.rewards[w] >= 1.49 * rnd.rewards[newcomer]
    sim.settle_all()
    check_books(sim.state)
