"""The drt and prediction-market reward policies on the real dev network: workers in two
processes (so most deposits travel through a host's proxy), a poisoner among them, three
validators, the storage service; every value checked against what the chain holds.
"""

from __future__ import annotations

import numpy as np
import pytest

from decentralml_jupyter.cli import run
from decentralml_jupyter.errors import DfmlError
from tests.conftest import free_port, wait_until

UNIT = 10**12
WORKERS = 4


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    from decentralml_jupyter import fl

    url, storage = f"ws://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"

    def dfml(*args, key="//Alice"):
        return run(["--url", url, "--storage", storage, "--key", key, *args])

    info = dfml(
        "devnet", "up", "--workers", str(WORKERS), "--validators", "3", "--attackers", "1",
        "--attack", "scale", "--worker-processes", "2", "--clock", "1",
    )  # fmt: skip
    try:
        tmp = tmp_path_factory.mktemp("incentives")
        path = tmp / "digits.keras"
        fl.mlp(64, 10, hidden=(32,)).save(path)
        yield dfml, info, url, storage, path, tmp
    finally:
        dfml("devnet", "down")


def training(dfml, path, *options) -> str:
    from tests.conftest import approve_and_start

    mid = str(dfml("model", "submit", str(path), *options)["model_id"])
    approve_and_start(dfml, mid, WORKERS)
    return mid


def books_within_chain(url, storage) -> None:
    """What the books say each pool holds never exceeds the pool's balance on chain."""
    from decentralml_jupyter import Session

    with Session(url, storage) as s:
        state = s.state()
        for (pool, asset), held in state.holdings().items():
            assert asset is None
            assert held <= s.chain.balance(pool).free, (pool, held)


def paid(dfml, reason: str, model: str) -> list[dict]:
    rows = [p for p in dfml("payouts") if p["reason"] == reason and str(p["model_id"]) == model]
    return rows if rows and all(p["status"] == "paid" for p in rows) else []


@pytest.mark.chain
def test_drt_deposits_travel_with_updates_and_come_back_or_go_to_contributors(net):
    dfml, info, url, storage, path, _ = net
    attacker = next(w["address"] for w in info["workers"] if w["attack"])
    with pytest.raises(DfmlError, match="needs a deposit"):
        dfml("model", "submit", str(path), "--reward-policy", "drt")
    mid = training(dfml, path, "--reward-policy", "drt", "--deposit", str(5 * UNIT))
    assert dfml("model", "show", mid)["deposit"] == 5 * UNIT
    rid = dfml(
        "round", "start", mid, "--clients", str(WORKERS), "--epochs", "2", "--reward",
        str(100 * UNIT), "--deadline", "60", "--aggregate-deadline", "60",
    )["round_id"]  # fmt: skip
    final = dfml("round", "watch", str(rid), "--timeout", "300")
    assert final["status"] == "finalized", final
    assert len(final["submitted"]) == WORKERS
    from decentralml_jupyter import Session

    with Session(url, storage) as s:
        rnd = s.round(rid)
        # every update carried the deposit: the protocol takes none without its transfer in
        # the same batch
        assert {u.deposit for u in rnd.updates} == {5 * UNIT}
        status = {u.worker: u.deposit_status for u in rnd.updates}
    assert status[attacker] == "taken"
    assert {v for w, v in status.items() if w != attacker} <= {"refund_due", "refunded"}
    # the poisoner's deposit and slash went to the contributors, never to the owner
    assert sum(final["rewards"].values()) == 100 * UNIT + final["slashes"][attacker] + 5 * UNIT
    # after the wait, the accepted deposits come back through the pool's payouts
    refunds = wait_until(lambda: paid(dfml, "deposit_refund", mid), 180, "deposit refunds")
    assert {p["dest"] for p in refunds} == set(final["submitted"]) - {attacker}
    assert all(p["amount"] == 5 * UNIT for p in refunds)
    wait_until(lambda: paid(dfml, "round_reward", mid), 120, "rewards paid")
    books_within_chain(url, storage)
    rep = {r["account"]: r for r in dfml("reputation", "--model", mid)}
    assert rep[attacker]["rejected"] == 1


@pytest.mark.chain
def test_a_prediction_market_pays_its_bounty_after_the_reveal_or_forfeits_it(net):
    dfml, info, url, storage, path, tmp = net
    from decentralml_jupyter import fl

    data = fl.load_dataset("digits")
    test_set = tmp / "test.npz"
    np.savez(test_set, x=data.x_test.astype(np.float32), y=data.y_test)
    mid = training(dfml, path, "--reward-policy", "prediction-market")
    saved = tmp / "commitment.json"
    committed = dfml("round", "commit", "--test-set", str(test_set), "--model", mid,
                     "--out", str(saved))  # fmt: skip
    assert set(committed) == {"commitment", "test_set", "saved"}  # no CID, no salt printed
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(DfmlError, match="both a bounty and a test-set commitment"):
        dfml("round", "start", mid, "--bounty", str(50 * UNIT))
    plan = dfml(
        "round", "start", mid, "--clients", str(WORKERS), "--epochs", "2", "--rounds", "2",
        "--reward", str(10 * UNIT), "--bounty", str(50 * UNIT), "--test-commitment",
        committed["commitment"], "--deadline", "60", "--aggregate-deadline", "60",
    )  # fmt: skip
    market_id = plan["market_id"]
    [market] = dfml("round", "markets", "--model", mid)
    assert market["status"] == "running" and market["bounty"] == 50 * UNIT
    # too early: its rounds are still running
    with pytest.raises(DfmlError, match="after its last round"):
        dfml("round", "reveal", mid, "--commitment-file", str(saved))
    dfml("round", "watch", str(plan["round_id"]), "--plan", "--timeout", "600")
    wait_until(
        lambda: dfml("round", "markets", "--model", mid)[0]["status"] == "revealing", 60, "end"
    )
    # a wrong salt is refused by the chain's rules; the right one lands
    import json

    cid = json.loads(saved.read_text())["cid"]
    with pytest.raises(DfmlError, match="do not match"):
        dfml("round", "reveal", mid, "--test-cid", cid, "--salt", "0x" + "00" * 16)
    dfml("round", "reveal", mid, "--commitment-file", str(saved))
    settled = wait_until(
        lambda: next(
            (m for m in dfml("round", "markets", "--model", mid)
             if m["market_id"] == market_id and m["status"] not in ("revealing", "scoring")),
            None,
        ),
        180,
        "the validators' scores",
    )  # fmt: skip
    assert settled["status"] == "paid", settled
    assert len(settled["scored_by"]) >= 2 and settled["test_cid"] == cid
    gains = settled["gains"]
    assert gains and max(gains.values()) > 0  # training from scratch: accuracy rises
    assert sum(settled["paid"].values()) == 50 * UNIT
    contributors = {w for r in dfml("round", "history", mid) for w in r["rewards"]}
    assert set(settled["paid"]) <= contributors
    wait_until(lambda: paid(dfml, "market_reward", mid), 120, "the bounty paid on chain")

    # a second plan whose owner never reveals: the bounty goes to its contributors
    again = dfml("round", "commit", "--test-set", str(test_set), "--out", str(tmp / "c2.json"))
    plan = dfml(
        "round", "start", mid, "--clients", str(WORKERS), "--epochs", "1", "--reward",
        str(10 * UNIT), "--bounty", str(30 * UNIT), "--test-commitment", again["commitment"],
        "--deadline", "60", "--aggregate-deadline", "60",
    )  # fmt: skip
    dfml("round", "watch", str(plan["round_id"]), "--timeout", "300")
    mine = plan["market_id"]
    wait_until(
        lambda: (
            next(m for m in dfml("round", "markets") if m["market_id"] == mine)["status"]
            == "revealing"
        ),
        60,
        "the plan's end",
    )
    dfml("chain", "advance", "21")  # past reveal_blocks (20)
    forfeited = wait_until(
        lambda: next(
            (m for m in dfml("round", "markets") if m["market_id"] == mine
             and m["status"] == "forfeited"),
            None,
        ),
        120,
        "the forfeit",
    )  # fmt: skip
    assert "did not reveal" in forfeited["note"]
    assert sum(forfeited["paid"].values()) == 30 * UNIT
    assert set(forfeited["paid"]) <= set(dfml("round", "status", str(plan["round_id"]))["rewards"])
    books_within_chain(url, storage)
