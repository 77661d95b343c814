"""The verbs no tutorial runs through `%dfml`, run through IPython's shell on the real chain:
pools, task create / submissions / accept, payout approve, round history, chain install, and
the dev network and agent verbs' answers when there is nothing to act on."""

from __future__ import annotations

import pytest

from decentralml_jupyter.errors import DfmlError

UNIT = 10**12
CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


@pytest.fixture()
def proto_ip(chain_ip, storage_url, tmp_path, monkeypatch):
    monkeypatch.setenv("DFML_HOME", str(tmp_path / "home"))  # a fresh index
    chain_ip.run_line_magic("config", f'DFMLMagics.storage = "{storage_url}"')
    return chain_ip


def test_tasks_payouts_and_pools_through_magics(proto_ip, tmp_path):
    from decentralml_jupyter import fl

    m = proto_ip.run_line_magic
    path = tmp_path / "verbs.keras"
    fl.mlp(64, 10, hidden=(8,)).save(path)
    mid = m("dfml", f"model submit {path} --validator Dev1 --validator Dev2")["model_id"]
    task = m("dfml", f"task create {mid} model_engineer --reward {UNIT} --duration 40")["task_id"]
    m("dfml", f"--key //Ferdie task assign {task}")
    sub = m("dfml", f"--key //Ferdie task submit {task} --result {CID}")["submission_id"]
    assert [r["status"] for r in m("dfml", f"task submissions --task {task}")] == ["pending"]
    m("dfml", f"task accept {sub}")
    owed = [p for p in m("dfml", "payouts --pending") if p["reason"] == "task_reward"]
    payout = next(p for p in owed if p["model_id"] == mid)
    pools = {p["model_id"]: p for p in m("dfml", "pools")}
    assert pools[mid]["pending_payouts"] == UNIT and pools[mid]["on_chain"] >= UNIT
    approved = m("dfml", f"--key //Dev1 payout approve {payout['id']}")  # 1 of 2: pending
    assert approved["receipt"]["success"] is True
    assert next(p for p in m("dfml", "payouts") if p["id"] == payout["id"])["status"] == "pending"
    m("dfml", f"--key //Dev2 payout approve {payout['id']}")  # 2 of 2: executed
    paid = next(p for p in m("dfml", "payouts") if p["id"] == payout["id"])
    assert paid["status"] == "paid"
    assert m("dfml", f"round history {mid}") == []


def test_install_and_agent_verbs(proto_ip, capsys):
    m = proto_ip.run_line_magic
    # the dev chain was installed by the test set-up, with the sqlite3 module that chain
    # persistence (--base-path) needs: the verb must say so
    assert m("dfml", "chain install")["persistence"] is True
    assert m("dfml", "worker --help") is None  # help is printed, nothing is started
    shown = capsys.readouterr().out
    assert "run a worker in the foreground" in shown and "--data PATH" in shown
    with pytest.raises(DfmlError, match="no dev network"):
        m("dfml", "devnet status")
