"""Each tutorial in notebooks/ runs top to bottom against its own fresh dev network.

The whole set takes about 12 minutes on the 2-core CI machine; all nine run in `make test`,
since CI has room for them and every tutorial must keep working.
"""

from __future__ import annotations

import pytest

from .conftest import outputs_text

pytestmark = pytest.mark.chain


def test_01_quickstart_trains_and_plots(run_notebook):
    nb, summary = run_notebook("01-quickstart", workers=3, validators=2, rounds=2, epochs=2)
    assert [r["status"] for r in summary["rounds"]] == ["finalized", "finalized"]
    # digits has 10 classes (chance: 0.1); federated training must improve on round 1
    assert summary["accuracy"][-1] > 0.5
    assert summary["accuracy"][-1] > summary["accuracy"][0]
    text = outputs_text(nb)
    assert "round 2: finalized" in text
    assert "predicted:" in text
    assert summary["plot"].endswith("accuracy.png")


def test_02_governance_votes_with_widget_and_magic(run_notebook):
    nb, summary = run_notebook("02-governance", workers=2, validators=2)
    kinds = {p["kind"]: p["status"] for p in summary["proposals"]}
    assert kinds == {"ApproveModel": "passed", "SetStrategy": "passed", "AddValidator": "passed"}
    assert summary["status"] == "approved"
    assert summary["strategy"] == "fedmedian"
    assert len(summary["validators"]) == 3  # two, and the one admitted by vote
    assert "receipt of the widget's vote: True" in outputs_text(nb)


def test_03_robust_aggregation_slashes_and_resists(run_notebook):
    nb, summary = run_notebook("03-robust-aggregation", workers=4, attackers=1, attack="scale")
    for strategy in ("fedavg", "fedmedian"):
        got = summary["devnet"][strategy]
        assert got["status"] == "finalized"
        # the scaled update is rejected by the checks and its sender slashed, never rewarded
        assert got["slashed"] == summary["attackers"]
        assert not set(got["rewarded"]) & set(summary["attackers"])
    sim = summary["simulated_final_accuracy"]
    # without a norm check, the mean breaks under scaling and the robust strategies do not
    assert sim["scale/fedmedian"] > sim["scale/fedavg"] + 0.2
    assert sim["scale/multikrum"] > sim["scale/fedavg"] + 0.2


def test_04_privacy_dp_round_and_tradeoff(run_notebook):
    nb, summary = run_notebook("04-privacy", workers=3, validators=2)
    assert summary["dp_round"]["status"] == "finalized"
    dp = summary["recorded_dp"]
    assert (dp["clip_norm"], dp["noise_multiplier"], dp["delta"]) == (1.0, 0.1, 1e-5)
    assert dp["epsilon"] > 0  # what one update spent; the model adds up each worker's
    privacy = summary["privacy"]
    assert privacy["epsilon"] == max(privacy["workers"].values()) >= dp["epsilon"]
    # ProxyFL's private models fit their own (non-IID) data better than the FedAvg model
    assert summary["proxyfl"]["proxyfl"] > summary["proxyfl"]["fedavg"]
    tradeoff = {float(z): a for z, a in summary["tradeoff"].items()}
    # the most noise costs accuracy against clipping alone
    assert tradeoff[max(tradeoff)] < tradeoff[0.0]
    assert summary["secure_matches_plain"] and summary["mask_sum_exact"]


def test_05_tasks_pay_each_role_and_refund(run_notebook):
    nb, summary = run_notebook("05-tasks-and-roles", workers=1, validators=2)
    addr = summary["addresses"]
    paid = {
        (p["reason"], p["dest"], p["amount"]) for p in summary["payouts"] if p["status"] == "paid"
    }
    unit = 10**12
    assert ("task_reward", addr["Eve"], 2 * unit) in paid
    assert ("task_reward", addr["Bob"], 5 * unit) in paid
    assert ("task_reward", addr["Charlie"], 8 * unit) in paid
    assert ("task_refund", addr["Alice"], 2 * unit) in paid  # Ferdie's rejected slot
    assert not any(p["dest"] == addr["Ferdie"] for p in summary["payouts"])


def test_06_stakes_votes_and_unstakes_in_an_asset(run_notebook):
    nb, summary = run_notebook("06-bring-your-own-token", workers=2, validators=2)
    unit = 10**12
    assert len(summary["stakes"]) == 3
    assert {s["asset"] for s in summary["stakes"]} == {summary["asset_id"]}
    assert summary["proposal"] == "passed"  # Bob's 50 DIG against a worker's 10
    # a stake in another asset is refused before anything is sent, saying why
    assert summary["refused"].startswith("ProtocolError: ")
    assert f"takes stakes in asset {summary['asset_id']}, not asset" in summary["refused"]
    [payout] = summary["unstake_payouts"]
    assert payout["status"] == "paid" and payout["amount"] == 20 * unit
    assert payout["asset_id"] == summary["asset_id"]
    assert summary["bob_dig_after"] - summary["bob_dig_before"] == 20


def test_07_other_chain_and_storage_by_url(run_notebook):
    nb, summary = run_notebook("07-other-chains", local=True)
    assert summary["missing_pallets"] == []
    assert summary["assets"] is True
    assert summary["remark_included"] is True
    assert summary["round_trip"] is True and summary["cid"].startswith("Qm")
    assert summary["models"] == 0  # a fresh chain


def test_08_your_own_data_three_participants_and_a_validator(run_notebook):
    nb, summary = run_notebook("08-your-own-data", validators=2, rounds=5, epochs=5)
    assert [r["status"] for r in summary["rounds"]] == ["finalized"] * 5
    assert summary["data"]["label"] == "regression:1" and len(summary["data"]["features"]) == 10
    assert summary["training"]["optimizer"] == "Adam" and summary["training"]["loss"] == "mse"
    mae = summary["mae"]  # the initial model, then every round, on the validator's file
    assert mae[-1] < 0.5 * mae[0], mae
    assert len(summary["rewards"]) == 3 and all(v > 0 for v in summary["rewards"].values())
    assert [s["running"] for s in summary["left"]] == [False, False]
    text = outputs_text(nb)
    assert "lacks the model's feature column(s) bmi" in text  # refused before any stake


def test_09_incentives_simulated_then_drt_and_a_market_on_the_dev_network(run_notebook):
    nb, summary = run_notebook("09-incentives", workers=4, attackers=1, validators=3)
    sim = summary["simulated"]
    for policy in ("drt", "prediction-market"):  # honest workers gain, the others lose
        assert sim[policy]["honest"] > 0, sim
        assert sim[policy]["adversarial"] < 0 and sim[policy]["free_rider"] < 0, sim
    chain = summary["simulated_chain"]  # the same workers, paid by the protocol's rules
    for policy in ("drt", "prediction-market"):
        assert chain[policy]["honest"] > 0, chain
        assert all(chain[policy][k] < 0 for k in ("label_flip", "scale", "free_rider")), chain
    assert chain["drt"]["scale"] < chain["prediction-market"]["scale"]  # deposits taken too
    drt = summary["drt"]
    assert drt["statuses"] == ["finalized"] * 3
    [attacker] = drt["attackers"]
    assert drt["net"][attacker] < 0  # deposits taken and stake slashed, every round
    honest = [v for who, v in drt["net"].items() if who != attacker]
    # an honest worker never loses (its deposits come back, it is never slashed), and honest
    # workers gain; one whose updates never helped on the validators' data may earn nothing
    assert honest and min(honest) >= 0 and sum(honest) > 0
    assert drt["refunds"] >= 3 * len(honest)  # each honest deposit came back
    market = summary["market"]
    assert market["status"] == "paid" and sum(market["paid"].values()) == market["bounty"]
    assert attacker not in market["paid"]
    assert max(market["gains"].values()) > 0
