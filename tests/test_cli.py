"""The `dfml` verbs as a user types them, against the real dev chain and storage service."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from decentralml_jupyter.cli import run
from decentralml_jupyter.errors import DfmlError, UsageError

UNIT = 10**12


@pytest.fixture()
def dfml(devchain_url, storage_url, tmp_path, monkeypatch):
    monkeypatch.setenv("DFML_HOME", str(tmp_path / "home"))  # a fresh index per test

    def call(*args: str, key: str = "//Alice"):
        return run(["--url", devchain_url, "--storage", storage_url, "--key", key, *args])

    return call


def test_storage_put_get_roundtrip(dfml, tmp_path, capsys):
    src = tmp_path / "a.bin"
    src.write_bytes(b"federated" * 400_000)
    put = dfml("storage", "put", str(src))
    lines = [x for x in capsys.readouterr().err.splitlines() if "uploading a.bin" in x]
    assert len(lines) >= 2 and lines[-1].endswith("3.4 of 3.4 MiB")  # reported up to the end
    assert put["size"] == src.stat().st_size and put["cid"].startswith("Qm")
    out = tmp_path / "b.bin"
    got = dfml("storage", "get", put["cid"], "--out", str(out))
    assert got["cid"] == put["cid"] and out.read_bytes() == src.read_bytes()
    assert dfml("storage", "status")["running"]


def test_model_stake_govern_through_the_cli(dfml, tmp_path):
    from decentralml_jupyter import fl
    from decentralml_jupyter.fl._tf import keras

    model = fl.mlp(64, 10, hidden=(16,))
    path = tmp_path / "digits.keras"
    model.save(path)

    sub = dfml(
        "model",
        "submit",
        str(path),
        "--license",
        "apache-2.0",
        "--jurisdiction",
        "EU",
        "--validator",
        "Dev1",
        "--validator",
        "Dev2",
        "--validator",
        "Dev3",
    )
    assert sub["receipt"]["success"] and sub["model_id"] >= 1
    mid = sub["model_id"]
    shown = dfml("model", "show", str(mid))
    assert shown["name"] == "digits" and shown["status"] == "proposed"
    assert shown["pool"] == sub["pool"] and shown["licence"] == "apache-2.0"
    assert any(m["id"] == mid for m in dfml("model", "list"))
    # the weights on storage are exactly the model's
    w = tmp_path / "w.bin"
    dfml("storage", "get", sub["weights_cid"], "--out", str(w))
    restored = fl.weights_from_bytes(w.read_bytes())
    assert all((a == b).all() for a, b in zip(restored, model.get_weights(), strict=True))
    # and the architecture on storage rebuilds the same Keras model
    spec = tmp_path / "spec.bin"
    dfml("storage", "get", sub["architecture_cid"], "--out", str(spec))
    rebuilt = fl.model_from_spec(spec.read_bytes())
    assert isinstance(rebuilt, keras().Model)
    assert [w.shape for w in rebuilt.get_weights()] == [w.shape for w in model.get_weights()]

    staked = dfml("stake", str(mid), str(25 * UNIT), key="//Bob")
    assert staked["stake"]["amount"] == 25 * UNIT
    assert dfml("account", "balance", sub["pool"])["free"] >= 25 * UNIT
    rows = dfml("stakes", "--model", str(mid))
    assert [r["amount"] for r in rows] == [25 * UNIT]

    prop = dfml("propose", str(mid), "ApproveModel", "--deadline", "10")
    pid = prop["proposal_id"]
    dfml("vote", str(pid), "aye", key="//Bob")
    # open now (other tests' proposals may be open too: look for this one)
    assert pid in [p["id"] for p in dfml("proposals", "--open")]
    dfml("chain", "advance", "11")
    final = next(p for p in dfml("proposals") if p["id"] == pid)
    assert final["status"] == "passed" and final["ayes"] == 25 * UNIT
    assert dfml("model", "show", str(mid))["status"] == "approved"

    with pytest.raises(DfmlError, match="rejected"):
        dfml("unstake", str(mid), str(10**6 * UNIT), key="//Bob")
    errs = dfml("errors", "--account", "Bob")
    assert errs and "unstake" in errs[-1]["call"]


def test_bad_arguments_say_what_to_do(dfml):
    with pytest.raises(UsageError, match="amount"):
        dfml("stake", "1", "-5")
    with pytest.raises(UsageError, match="model id"):
        dfml("stake", "one", "5")
    with pytest.raises(UsageError, match="not a Keras model"):
        dfml("model", "submit", __file__)
    with pytest.raises(UsageError, match="K=V"):
        dfml("propose", "1", "SetStrategy", "--param", "fedprox")


def test_json_errors_follow_the_contract(devchain_url, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "decentralml_jupyter.cli",
            "--json",
            "--url",
            devchain_url,
            "model",
            "show",
            "424242",
        ],
        capture_output=True,
        text=True,
        env={"DFML_HOME": str(tmp_path), "PATH": ""},
    )
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert set(doc) == {"error", "hint"} and "424242" in doc["error"] and doc["hint"]


def test_task_verbs_list_submissions(dfml, tmp_path):
    from decentralml_jupyter import fl

    path = tmp_path / "tasks.keras"
    fl.mlp(64, 10, hidden=(8,)).save(path)
    mid = dfml("model", "submit", str(path), "--validator", "Dev1", "--validator", "Dev2")
    mid = str(mid["model_id"])
    task = dfml(
        "task",
        "create",
        mid,
        "data_annotator",
        "--reward",
        str(UNIT),
        "--max-assignments",
        "2",
        "--duration",
        "40",
    )["task_id"]
    dfml("task", "assign", str(task), key="//Eve")
    sub = dfml(
        "task",
        "submit",
        str(task),
        "--result",
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
        key="//Eve",
    )["submission_id"]
    rows = dfml("task", "submissions", "--task", str(task))
    assert [(r["id"], r["status"]) for r in rows] == [(sub, "pending")]
    dfml("task", "accept", str(sub))
    assert dfml("task", "submissions", "--task", str(task))[0]["status"] == "accepted"
    assert any(t["id"] == task for t in dfml("task", "list", "--model", mid))


def test_incentive_verbs_refuse_bad_input_before_sending_anything(dfml, tmp_path):
    """drt without a deposit, a deposit without drt, a market half given, a test set that is
    not an .npz of x and y, a reveal without its CID and salt: each a clear error, nothing
    stored or sent; a commitment file is never overwritten and prints no CID or salt."""
    import numpy as np

    from decentralml_jupyter import fl

    model = tmp_path / "m.keras"
    fl.mlp(4, 3, hidden=(4,)).save(model)
    errors_before = len(dfml("errors"))
    with pytest.raises(UsageError, match="drt policy needs a deposit"):
        dfml("model", "submit", str(model), "--reward-policy", "drt")
    with pytest.raises(UsageError, match="only taken under --reward-policy drt"):
        dfml("model", "submit", str(model), "--deposit", "5")
    with pytest.raises(UsageError, match="both a bounty and a test-set commitment"):
        dfml("round", "start", "1", "--bounty", "5")
    with pytest.raises(UsageError, match="both a bounty"):
        dfml("round", "start", "1", "--test-commitment", "0x" + "11" * 32)
    csv = tmp_path / "test.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(UsageError, match=r"an \.npz file of arrays x and y"):
        dfml("round", "commit", "--test-set", str(csv), "--out", str(tmp_path / "c.json"))
    bad = tmp_path / "bad.npz"
    np.savez(bad, features=np.zeros((20, 4)))
    with pytest.raises(DfmlError, match="x"):
        dfml("round", "commit", "--test-set", str(bad), "--out", str(tmp_path / "c.json"))
    good = tmp_path / "good.npz"
    np.savez(good, x=np.random.default_rng(0).normal(size=(40, 4)), y=np.arange(40) % 3)
    out = tmp_path / "c.json"
    made = dfml("round", "commit", "--test-set", str(good), "--out", str(out))
    saved = json.loads(out.read_text())
    assert made["commitment"] == saved["commitment"] and saved["salt"] not in json.dumps(made)
    assert saved["cid"] not in json.dumps(made)
    from decentralml_jupyter.protocol import market_commitment
    from decentralml_jupyter.storage.unixfs import compute_cid

    assert saved["cid"] == compute_cid(good.read_bytes())
    assert market_commitment(saved["cid"], saved["salt"]) == saved["commitment"]
    with pytest.raises(UsageError, match="exists"):
        dfml("round", "commit", "--test-set", str(good), "--out", str(out))
    with pytest.raises(UsageError, match="needs the test set's CID and the salt"):
        dfml("round", "reveal", "1")
    assert len(dfml("errors")) == errors_before  # nothing reached the chain
