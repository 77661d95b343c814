"""The economics simulator (`decentralml_jupyter.economy`, `dfml economy simulate`): who gains
and who loses under each reward policy, the validators' judgement it mirrors, the CLI's JSON and
errors, determinism. In-process, no chain: every test here runs in seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from decentralml_jupyter import economy
from decentralml_jupyter.cli import main
from decentralml_jupyter.errors import UsageError
from decentralml_jupyter.fl.types import ClientUpdate

SEEDS = (0, 1, 2)
MARKETS = ("drt", "prediction-market")  # the policies under which attacks must not pay
COST = economy.Economics().fee + economy.Economics().compute  # one honest update


def final(result: economy.Simulation) -> dict[str, float]:
    return {kind: values[-1] for kind, values in result.balances.items()}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("policy", economy.POLICIES)
def test_honest_workers_gain_and_free_riders_never_profit(policy, seed):
    r = economy.simulate(policy, honest=8, adversarial=4, free_riders=2, rounds=15, seed=seed)
    assert r.rounds == 15 and all(len(v) == 15 for v in r.balances.values())
    got = final(r)
    assert got["honest"] > 0, got
    # at no round is a free rider ahead: it pays a fee per update and earns nothing
    assert max(r.balances["free_rider"]) < 0, r.balances["free_rider"]
    fees = economy.Economics().fee * np.arange(1, 16)
    assert np.all(np.asarray(r.balances["free_rider"]) <= -fees + 1e-9)
    if policy in MARKETS:
        assert got["adversarial"] < 0, got
        for kind, values in r.adversarial_kinds.items():
            assert values[-1] < -15 * COST, (kind, values[-1])  # worse than its costs alone


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("policy", economy.POLICIES)
def test_free_riders_alone_with_honest_workers_earn_nothing(policy, seed):
    """Free riders as many as honest workers: still no reward, so no profit."""
    r = economy.simulate(policy, honest=4, adversarial=0, free_riders=4, rounds=10, seed=seed)
    assert max(r.balances["free_rider"]) < 0
    assert final(r)["honest"] > 0
    if policy in ("proportional", "equal"):  # accepted, never slashed, never paid: the fees
        assert final(r)["free_rider"] == pytest.approx(-economy.Economics().fee * 10)


def test_policies_differ_where_they_should():
    runs = {p: economy.simulate(p, 6, 4, 2, rounds=12, seed=3) for p in economy.POLICIES}
    # the same workers, data and judgement: the same model under every policy
    assert len({tuple(r.accuracy) for r in runs.values()}) == 1
    # proportional pays label flippers nothing (their contribution is zero); equal pays them
    flip = {p: r.adversarial_kinds["label_flip"][-1] for p, r in runs.items()}
    assert flip["proportional"] == pytest.approx(-12 * COST)
    assert flip["equal"] > flip["proportional"]
    # scalers are rejected: slashed under proportional (beyond their costs), deposits taken
    scale = {p: r.adversarial_kinds["scale"][-1] for p, r in runs.items()}
    assert scale["proportional"] < -12 * COST
    deposit = economy.Economics().deposit
    for p in MARKETS:
        assert scale[p] == pytest.approx(-12 * (COST + deposit))


def test_drt_settles_deposits_after_the_wait_and_the_market_at_the_reveal():
    econ = economy.Economics(wait=4)
    drt = economy.simulate("drt", 5, 2, 1, rounds=10, seed=0, economics=econ)
    scale = drt.adversarial_kinds["scale"]
    # rejected every round, but its deposits are taken only once their wait is over
    assert scale[:4] == pytest.approx([-COST * (r + 1) for r in range(4)])
    assert scale[4] == pytest.approx(-COST * 5 - econ.deposit)
    market = economy.simulate("prediction-market", 5, 2, 1, rounds=10, seed=0)
    # nothing is paid before the test set is revealed after the last round
    assert market.balances["honest"][:9] == pytest.approx([-COST * (r + 1) for r in range(9)])
    assert market.balances["honest"][-1] > 0
    assert market.owner_spent <= market.economics.round_reward * 10 + 1e-6


def _total_costs(r: economy.Simulation) -> float:
    """Every fee and every training the workers of ``r`` paid."""
    e, n = r.economics, r.agents
    trained = sum(n.get(k, 0) for k in ("honest", "noisy", *economy.ADVERSARIAL_KINDS))
    updates = sum(n.values())
    return r.rounds * (updates * e.fee + trained * e.compute + n.get("lazy", 0) * 0.2 * e.compute)


def _net(r: economy.Simulation) -> float:
    """The workers' net balance, all together."""
    counts = {g: 0 for g in r.balances}
    for kind, count in r.agents.items():
        counts[economy.GROUP[kind]] += count
    return sum(counts[g] * values[-1] for g, values in r.balances.items())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("policy", MARKETS)
def test_by_the_chains_rules_honest_workers_gain_and_nobody_else_profits(policy, seed):
    r = economy.simulate(policy, 8, 4, 2, rounds=15, seed=seed, lazy=1, rules="chain")
    assert r.rules == "chain" and r.to_json()["rules"] == "chain"
    assert final(r)["honest"] > 0
    fees = economy.Economics().fee * np.arange(1, 16)
    assert np.all(np.asarray(r.balances["free_rider"]) <= -fees + 1e-9)
    for kind, values in r.adversarial_kinds.items():
        assert values[-1] <= -15 * COST + 1e-9, (kind, values[-1])  # never better than costs
    # nothing is burned and nothing made: the workers together got what the owner paid, less
    # what they spent (slashes and taken deposits move between workers)
    # (balances are rounded to 6 decimals)
    assert _net(r) == pytest.approx(r.owner_spent - _total_costs(r), abs=1e-4)


def test_the_chains_drt_takes_only_rejected_deposits_and_its_market_pays_on_top():
    kw = {"honest": 6, "adversarial": 4, "free_riders": 2, "rounds": 12, "seed": 3}
    prop = economy.simulate("proportional", **kw)
    drt = economy.simulate("drt", **kw, rules="chain")
    market = economy.simulate("prediction-market", **kw, rules="chain")
    paper = economy.simulate("drt", **kw)
    deposit = economy.Economics().deposit
    # label flippers and free riders pass the checks: their deposits come back, and they lose
    # what they lose under proportional (the paper's drt also takes those whose gain is < 0)
    for r in (drt, market):
        assert r.adversarial_kinds["label_flip"] == pytest.approx(
            prop.adversarial_kinds["label_flip"]
        )
        assert r.balances["free_rider"] == pytest.approx(prop.balances["free_rider"])
    assert paper.adversarial_kinds["label_flip"][-1] < drt.adversarial_kinds["label_flip"][-1]
    # scalers are rejected: slashed as under proportional and, under drt, their deposit taken
    # at each verdict (not after a wait), to the honest contributors
    scale = np.asarray(drt.adversarial_kinds["scale"]) - prop.adversarial_kinds["scale"]
    assert scale == pytest.approx([-deposit * (r + 1) for r in range(12)])
    assert market.adversarial_kinds["scale"] == pytest.approx(prop.adversarial_kinds["scale"])
    assert final(drt)["honest"] > final(prop)["honest"]
    assert drt.owner_spent == pytest.approx(prop.owner_spent)
    # the market's rounds pay as proportional's; the bounty comes on top, at the reveal
    assert market.balances["honest"][:-1] == pytest.approx(prop.balances["honest"][:-1])
    assert final(market)["honest"] > final(prop)["honest"]
    bounty = market.owner_spent - prop.owner_spent
    assert 0 < bounty <= economy.Economics().round_reward * 12 + 1e-6


def _verdict(accepted, rejected, improved, no_work=()):
    update = [np.zeros((1, 1), np.float32)]
    return economy.Verdict(
        update, [_update(a, update) for a in accepted], dict.fromkeys(rejected, "norm"),
        {a: 1 / len(accepted) for a in accepted}, dict.fromkeys(accepted, 0.0), set(no_work),
        improved,
    )  # fmt: skip


def test_the_chains_drt_gives_deposits_to_contributors_never_the_owner():
    econ = economy.Economics()
    ids = ["a", "b", "c"]

    def books():
        rng = np.random.default_rng(0)
        agents = {a: economy._Agent(a, "honest", None, None, rng, stake=econ.stake) for a in ids}
        return economy._Books(agents)

    # no improvement: the budget goes back, nobody is slashed, the taken deposit is shared
    b = books()
    economy._drt_chain(b, _verdict(["a", "b"], ["c"], improved=False), econ)
    assert b.owner_spent == 0 and b.agents["c"].stake == econ.stake
    assert [b.agents[a].balance for a in ids] == pytest.approx(
        [econ.deposit / 2, econ.deposit / 2, -econ.deposit]
    )
    # every update rejected: the round failed, every deposit and the budget go back
    b = books()
    economy._drt_chain(b, _verdict([], ids, improved=False), econ)
    assert b.owner_spent == 0 and all(b.agents[a].balance == 0 for a in ids)
    # an improving round: the pot holds the budget, the slash and the deposit
    b = books()
    economy._drt_chain(b, _verdict(["a", "b"], ["c"], improved=True), econ)
    slash = econ.stake * econ.slash_permill / 1_000_000
    assert b.owner_spent == econ.round_reward
    assert b.agents["c"].balance == pytest.approx(-econ.deposit - slash)
    assert b.agents["a"].balance == pytest.approx((econ.round_reward + slash + econ.deposit) / 2)
    # every accepted update did no work: the simulator pays them no budget, but a taken
    # deposit still goes to them, as the chain's scores would send it (nothing vanishes)
    b = books()
    economy._drt_chain(b, _verdict(["a", "b"], ["c"], improved=True, no_work="ab"), econ)
    assert b.owner_spent == 0
    assert [b.agents[a].balance for a in "ab"] == pytest.approx([econ.deposit / 2] * 2)


def test_the_model_learns_and_attacks_slow_it():
    clean = economy.simulate("proportional", 10, 0, 0, rounds=15, seed=0)
    assert clean.accuracy[-1] > 0.9
    flipped = economy.simulate("proportional", 4, 8, 0, rounds=15, seed=0, kinds=["label_flip"])
    assert flipped.accuracy[-1] < clean.accuracy[-1]


def _update(cid, weights, n=50):
    return ClientUpdate(cid, [np.asarray(w, np.float32) for w in weights], n)


def test_judge_is_the_validators_judgement():
    from decentralml_jupyter.fl.data import load_dataset

    ds = load_dataset("digits", seed=0)
    rng = np.random.default_rng(0)
    base = [np.zeros((64, 10), np.float32), np.zeros(10, np.float32)]
    good = []
    for i in range(4):
        idx = rng.choice(len(ds.x_train), 200, replace=False)
        w = economy._sgd(base, ds.x_train[idx], ds.y_train[idx], 3, rng)
        good.append(_update(f"good-{i}", w))
    scaled = _update("scaled", [g * 10 for g in good[0].weights])
    nan = _update("nan", [np.full((64, 10), np.nan), np.zeros(10)])
    rider = _update("rider", base)
    v = economy.judge(base, [*good, scaled, nan, rider], ds.x_val, ds.y_val)
    assert set(v.rejected) == {"scaled", "nan"}
    assert "median" in v.rejected["scaled"] and "non-finite" in v.rejected["nan"]
    assert {u.client_id for u in v.accepted} == {*(u.client_id for u in good), "rider"}
    assert v.no_work == {"rider"} and v.improved
    assert sum(v.shares.values()) == pytest.approx(1.0)
    assert v.gains["rider"] < 0 < min(v.gains[u.client_id] for u in good)  # it dilutes
    # every update rejected: the model stays, nobody to pay
    empty = economy.judge(base, [nan], ds.x_val, ds.y_val)
    assert empty.weights is base and not empty.accepted and not empty.improved


def test_deterministic_given_the_seed():
    a = economy.simulate("drt", 5, 2, 1, rounds=6, seed=7).to_json()
    b = economy.simulate("drt", 5, 2, 1, rounds=6, seed=7).to_json()
    c = economy.simulate("drt", 5, 2, 1, rounds=6, seed=8).to_json()
    assert json.dumps(a) == json.dumps(b)
    assert a["accuracy"] != c["accuracy"]


def test_fast_enough_for_a_notebook():
    start = time.perf_counter()
    r = economy.simulate("prediction-market", 14, 4, 2, rounds=50, seed=0)
    assert len(r.accuracy) == 50
    assert time.perf_counter() - start < 30  # about 1 s here; generous for shared machines


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"policy": "bribes"}, "unknown policy"),
        ({"honest": -1}, "honest must be"),
        ({"free_riders": 1.5}, "free_riders must be"),
        ({"rounds": 0}, "at least one round"),
        ({"seed": -1}, "seed must be"),
        ({"honest": 0, "adversarial": 0, "free_riders": 0}, "one worker"),
        ({"kinds": ["sybil"]}, "unknown adversarial kinds"),
        ({"economics": economy.Economics(deposit=-1)}, "deposit must be"),
    ],
)
def test_bad_arguments_are_usage_errors(kwargs, message):
    args = {"policy": "drt", "rounds": 2, **kwargs}
    with pytest.raises(UsageError, match=message):
        economy.simulate(**args)


def _cli(capsys, *args: str) -> tuple[int, dict]:
    rc = main(["--json", "economy", "simulate", *args])
    out = capsys.readouterr().out
    return rc, json.loads(out)


def test_cli_prints_the_contract_json(capsys):
    rc, doc = _cli(
        capsys, "--policy", "drt", "--honest", "4", "--adversarial", "2",
        "--free-riders", "1", "--rounds", "4", "--seed", "3", "--set", "deposit=2",
    )  # fmt: skip
    assert rc == 0
    assert {"policy", "rounds", "balances", "accuracy"} <= set(doc)
    assert doc["policy"] == "drt" and doc["rounds"] == 4
    assert set(doc["balances"]) == {"honest", "adversarial", "free_rider"}
    assert all(len(v) == 4 for v in doc["balances"].values()) and len(doc["accuracy"]) == 4
    assert doc["economics"]["deposit"] == 2.0
    assert (
        doc
        == economy.simulate("drt", 4, 2, 1, 4, 3, economics=economy.Economics(deposit=2)).to_json()
    )
    assert doc["rules"] == "paper"
    rc, doc = _cli(capsys, "--policy", "drt", "--rules", "chain", "--rounds", "3", "--seed", "1")
    assert rc == 0 and doc == economy.simulate("drt", rounds=3, seed=1, rules="chain").to_json()
    rc, doc = _cli(capsys, "--policy", "equal", "--rounds", "2", "--lazy", "1", "--noisy", "1")
    assert rc == 0 and {"lazy", "noisy"} <= set(doc["balances"])
    assert doc["agents"] == {
        "honest": 10, "lazy": 1, "noisy": 1, "label_flip": 2, "scale": 2, "free_rider": 2
    }  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["--policy", "nope"], "invalid choice"),
        (["--policy", "drt", "--honest", "-2"], "not a whole number (0 or more)"),
        (["--policy", "drt", "--rounds", "x"], "not a whole number"),
        (["--honest", "3"], "--policy"),
        (["--policy", "drt", "--set", "bribe=3"], "no such setting"),
        (["--policy", "drt", "--set", "wait=soon"], "not a number"),
        (["--policy", "drt", "--kinds", "label_flip,sybil"], "unknown adversarial kinds"),
        (["--policy", "drt", "--rules", "whitepaper"], "invalid choice"),
    ],
)
def test_cli_bad_arguments_say_what_is_wrong(capsys, args, message):
    rc, doc = _cli(capsys, *args)
    assert rc == 1 and message in doc["error"] and doc["hint"]


def test_dfml_economy_simulate_as_a_command():
    done = subprocess.run(
        [sys.executable, "-m", "decentralml_jupyter.cli", "--json", "economy", "simulate",
         "--policy", "prediction-market", "--honest", "3", "--adversarial", "1",
         "--free-riders", "1", "--rounds", "3"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["policy"] == "prediction-market" and len(doc["accuracy"]) == 3


def test_plot_draws_balances_and_accuracy():
    import matplotlib

    matplotlib.use("Agg")
    r = economy.simulate("drt", 3, 1, 1, rounds=3, seed=0, lazy=1)
    fig = economy.plot(r)
    money, acc = fig.axes
    labels = {line.get_label() for line in money.get_lines()}
    assert {"honest", "lazy", "adversarial", "free rider"} <= labels
    assert list(acc.get_lines()[0].get_ydata()) == r.accuracy
    assert economy.plot(r.to_json()).axes[0].get_title() == "balances"
