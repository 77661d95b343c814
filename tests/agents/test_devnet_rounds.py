"""Federated rounds on the real dev network: validators in their own processes, workers alone
or sharing a process (which then signs for them as their proxy), updates on the real storage
service, results on the real dev chain.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from decentralml_jupyter.cli import run
from tests.conftest import free_port

UNIT = 10**12


def wait_until(predicate, timeout: float = 180.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """5 workers in 3 processes (1 + 2 + 2; the last worker sends scaled updates, through its
    host's proxy) and 3 validators; a trained-ready model."""
    from decentralml_jupyter import fl

    url, storage = f"ws://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"

    def dfml(*args, key="//Alice"):
        return run(["--url", url, "--storage", storage, "--key", key, *args])

    info = dfml(
        "devnet",
        "up",
        "--workers",
        "5",
        "--validators",
        "3",
        "--attackers",
        "1",
        "--attack",
        "scale",
        "--worker-processes",
        "3",
        "--clock",
        "1",
    )
    try:
        path = tmp_path_factory.mktemp("model") / "digits.keras"
        fl.mlp(64, 10, hidden=(32,)).save(path)
        sub = dfml("model", "submit", str(path), "--slash-permill", "500")
        mid = str(sub["model_id"])
        wait_until(lambda: len(dfml("stakes", "--model", mid)) == 5)  # workers staked
        pid = dfml("propose", mid, "ApproveModel", "--deadline", "30")["proposal_id"]
        dfml("vote", str(pid), "aye", key="//Dev4")
        dfml("chain", "advance", "31")  # let the voting period pass
        wait_until(lambda: dfml("model", "show", mid)["status"] == "approved")
        dfml("model", "start", mid)
        yield dfml, info, mid, sub
    finally:
        dfml("devnet", "down")


def _hosts(info) -> dict[int, list[str]]:
    """Each worker process's members' addresses, its host (the lead) first."""
    hosts: dict[int, list[str]] = {}
    for w in info["workers"]:
        hosts.setdefault(w["pid"], []).append(w["address"])
    return hosts


def test_workers_sharing_a_process_act_through_its_proxy_and_delegate(net):
    dfml, info, _, _ = net
    from decentralml_jupyter.chain import Chain

    hosts = {pid: [dict(address=a) for a in h] for pid, h in _hosts(info).items()}
    assert sorted(len(h) for h in hosts.values()) == [1, 2, 2]
    with Chain(info["chain"]["url"]) as chain:
        for members in hosts.values():
            lead = members[0]["address"]
            assert chain.proxies(lead) == []
            for other in members[1:]:
                assert chain.proxies(other["address"]) == [lead]
        # and each member delegated its updates to its host, in the protocol's state
        expected = {o["address"]: h[0]["address"] for h in hosts.values() for o in h[1:]}
        wait_until(lambda: _indexed(chain).delegates() == expected)


def _indexed(chain):
    from decentralml_jupyter.protocol.indexer import Indexer

    idx = Indexer(chain, None)
    try:
        return idx.sync()
    finally:
        idx.close()


def _protocol_calls(chain, block_number: int) -> list:
    """The protocol calls that executed in one block, with their signers, as read from it."""
    from decentralml_jupyter.protocol import decode_call
    from decentralml_jupyter.protocol.indexer import extract_calls

    block_hash = chain.block_hash(block_number)
    ((events, extrinsics),) = chain.read_blocks([block_hash], want_extrinsics=lambda ev: True)
    return [
        (ctx.signer, decode_call(raw))
        for ctx, raw in extract_calls(extrinsics, events, block_number, block_hash)
    ]


def test_a_round_trains_aggregates_pays_and_slashes(net, tmp_path):
    dfml, info, mid, sub = net
    attacker = next(w["address"] for w in info["workers"] if w["attack"])
    honest = [w["address"] for w in info["workers"] if not w["attack"]]
    before = dfml("model", "show", mid)["round"]  # whatever ran before this test
    start = dfml(
        "round",
        "start",
        mid,
        "--clients",
        "5",
        "--epochs",
        "2",
        "--reward",
        str(100 * UNIT),
        "--deadline",
        "60",
        "--aggregate-deadline",
        "60",
    )
    rid = str(start["round_id"])
    final = dfml("round", "watch", rid, "--timeout", "300")
    assert final["status"] == "finalized", final
    assert set(final["submitted"]) == set(honest) | {attacker}
    # a host of two sent both its members' updates in one submit_updates, signed by the host
    from decentralml_jupyter.chain import Chain
    from decentralml_jupyter.protocol import SubmitUpdates

    pairs = [h for h in _hosts(info).values() if len(h) == 2]
    with Chain(info["chain"]["url"]) as chain:
        at = {u.worker: u.block_number for u in _indexed(chain).round(int(rid)).updates}
        for lead, member in pairs:
            calls = _protocol_calls(chain, at[member])
            bulk = [c for who, c in calls if who == lead and isinstance(c, SubmitUpdates)]
            assert bulk and {e.account for c in bulk for e in c.updates} == {lead, member}
    # the scaled update was caught and slashed; honest workers share the whole pot
    assert final["slashes"].get(attacker, 0) > 0
    assert attacker not in final["rewards"] or final["rewards"][attacker] == 0
    assert sum(final["rewards"].values()) == 100 * UNIT + final["slashes"][attacker]
    assert max(final["rewards"].values()) > 0
    # the model advanced to the attested aggregate, which beats the initial weights
    model = dfml("model", "show", mid)
    assert model["global_cid"] == final["aggregate_cid"] and model["round"] == before + 1
    assert final["metrics"]["accuracy"] > 0.3

    # validators pay the rewards out of the multisig pool
    def paid():
        rows = [p for p in dfml("payouts") if p["reason"] == "round_reward"]
        return rows if rows and all(p["status"] == "paid" for p in rows) else None

    rewards = wait_until(paid, timeout=120)
    # the round's rewards were approved as one multisig call: paid in one block
    assert len(rewards) == sum(1 for amount in final["rewards"].values() if amount > 0)
    assert len({p["paid_block"] for p in rewards}) == 1
    # the trained model can be fetched and used
    out = tmp_path / "trained.keras"
    fetched = dfml("model", "fetch", mid, "--out", str(out))
    assert fetched["cid"] == final["aggregate_cid"] and out.exists()
    from decentralml_jupyter import fl

    data = fl.load_dataset("digits")
    np.save(tmp_path / "x.npy", data.x_test[:50])
    preds = dfml("model", "predict", mid, "--input", str(tmp_path / "x.npy"))["predictions"]
    assert len(preds) == 50 and np.mean(np.array(preds) == data.y_test[:50]) > 0.3


def test_a_secure_round_reveals_only_the_sum(net, tmp_path):
    dfml, info, _, _ = net
    from decentralml_jupyter import fl

    path = tmp_path / "secure.keras"
    fl.mlp(64, 10, hidden=(32,)).save(path)
    sub = dfml("model", "submit", str(path), "--strategy", "fedavg:secure")
    mid = str(sub["model_id"])
    wait_until(lambda: len(dfml("stakes", "--model", mid)) == 5)
    pid = dfml("propose", mid, "ApproveModel", "--deadline", "30")["proposal_id"]
    dfml("vote", str(pid), "aye", key="//Dev4")
    dfml("chain", "advance", "31")
    wait_until(lambda: dfml("model", "show", mid)["status"] == "approved")
    dfml("model", "start", mid)
    start = dfml(
        "round",
        "start",
        mid,
        "--clients",
        "4",
        "--reward",
        str(10 * UNIT),
        "--deadline",
        "60",
        "--aggregate-deadline",
        "60",
    )
    final = dfml("round", "watch", str(start["round_id"]), "--timeout", "300")
    assert final["status"] == "finalized", final
    # what a validator sees of each worker is masked noise: fixed-point integers that decode
    # to nothing like weights; only their sum is the average
    base = fl.weights_from_bytes(_get(dfml, tmp_path, sub["weights_cid"]))
    table = tmp_path / "r.csv"
    dfml("round", "history", mid, "--csv", str(table))
    import pandas as pd

    cids = pd.read_csv(table).update_cid.dropna().tolist()
    assert len(cids) == 4
    from decentralml_jupyter.fl.privacy import decode_fixed

    one = fl.weights_from_bytes(_get(dfml, tmp_path, cids[0]))
    assert one[0].dtype == np.uint64
    assert np.abs(decode_fixed(one[0])).mean() > 1000 * np.abs(base[0]).mean()
    agg = fl.weights_from_bytes(_get(dfml, tmp_path, final["aggregate_cid"]))
    assert agg[0].dtype == base[0].dtype and all(np.isfinite(w).all() for w in agg)
    # nobody can be slashed in a secure round; rewards follow the public example counts when
    # the round improved the model (a scaling attacker among the clients, averaged in unseen,
    # can make it worse than its base: then nobody is paid and the budget goes back)
    assert not final["slashes"] and "base_accuracy" in final["metrics"]
    if final["improved"]:
        assert set(final["rewards"]) == set(final["submitted"])
    else:
        assert final["rewards"] == {} and "no improvement" in final["note"], final


def _get(dfml, tmp_path, cid: str) -> bytes:
    out = tmp_path / f"{cid}.bin"
    dfml("storage", "get", cid, "--out", str(out))
    return out.read_bytes()


def test_a_plan_runs_its_rounds_back_to_back(net):
    from decentralml_jupyter.agents.validator import primaries
    from decentralml_jupyter.chain import Chain
    from decentralml_jupyter.protocol import encoders
    from decentralml_jupyter.protocol.client import ProtocolClient, ProtocolRejected

    dfml, info, mid, _ = net
    before = dfml("model", "show", mid)["round"]
    # Arrange the case the end of this test checks: the first round's rewards' first primary
    # validator is a primary of the second round too, so it attests that round and its reward
    # approvals ride in the attestation's extrinsic. Ids are sequential: each refund of a
    # refused funded call takes one payout id, moving the rewards' first primary on.
    with ProtocolClient(Chain(info["chain"]["url"])) as proto:
        state = proto.state()
        model = state.model(int(mid))
        second_round = len(state.rounds()) + 2
        next_payout = len(state.payouts()) + 1
        while primaries(model.validators, next_payout)[0] not in primaries(
            model.validators, second_round
        ):
            too_many = encoders.round_spec(64, 64, reward=UNIT)  # 5 eligible: refused
            with pytest.raises(ProtocolRejected, match="eligible workers"):
                proto.submit(
                    "//Alice",
                    encoders.start_round(int(mid), too_many),
                    [(model.pool, UNIT, None)],
                )
            next_payout += 1
        wait_until(lambda: not proto.state().pending_payouts(), 120)
    start = dfml(
        "round",
        "start",
        mid,
        "--clients",
        "5",
        "--rounds",
        "2",
        "--reward",
        str(10 * UNIT),
        "--deadline",
        "60",
        "--aggregate-deadline",
        "60",
    )
    assert start["rounds"] == 2
    final = dfml("round", "watch", str(start["round_id"]), "--plan", "--timeout", "300")
    plan = final["plan"]
    assert [p["status"] for p in plan] == ["finalized", "finalized"], plan
    assert plan[0]["round_id"] == start["round_id"] and final["round_id"] == plan[1]["round_id"]
    assert dfml("model", "show", mid)["round"] == before + 2
    with ProtocolClient(Chain(info["chain"]["url"])) as proto:
        first, second = (proto.state().round(p["round_id"]) for p in plan)
    # no start call between them: the quorum's block ended one round and opened the next
    assert second.start_block == first.ended_block
    assert second.base_cid == first.aggregate_cid and second.reward == 10 * UNIT
    # round status links a plan's rounds, which is how the notebook dashboard follows them
    status = [dfml("round", "status", str(p["round_id"])) for p in plan]
    assert [s["next_round_id"] for s in status] == [plan[1]["round_id"], None]
    assert [s["rounds_left"] for s in status] == [0, 0]  # both ended

    # The first round's rewards: while the second round ran, the payout's first primary
    # approved them in the extrinsic of its attestation, not in a block of their own.
    def paid_first():
        with ProtocolClient(Chain(info["chain"]["url"])) as proto:
            state = proto.state()
        rows = [p for p in state.payouts() if p.created_block == first.ended_block]
        return rows if rows and all(p.paid_block for p in rows) else None

    rewards = wait_until(paid_first, timeout=120)
    model = dfml("model", "show", mid)
    assert min(p.id for p in rewards) == next_payout  # as arranged
    first_hand = primaries(model["validators"], next_payout)[0]
    assert first_hand in {a.validator for a in second.attestations}
    chain = Chain(info["chain"]["url"])
    events = chain.block(second.ended_block).events
    approvals = {
        e["extrinsic_index"]
        for e in events
        if e["module"] == "Multisig"
        and e["event"] == "NewMultisig"
        and chain.address(e["attributes"]["approving"]) == first_hand
    }
    remarks = {
        e["extrinsic_index"]
        for e in events
        if e["module"] == "System"
        and e["event"] == "Remarked"
        and chain.address(e["attributes"]["sender"]) == first_hand
    }
    assert approvals and approvals == remarks, (approvals, remarks)


def test_a_dead_worker_and_an_offline_validator_do_not_stop_a_round(net, tmp_path):
    from decentralml_jupyter.agents.validator import primaries
    from decentralml_jupyter.chain import Chain
    from decentralml_jupyter.protocol.client import ProtocolClient

    dfml, info, mid, _ = net
    victim = next(w for w in info["workers"] if not w["attack"])
    before = dfml("model", "show", mid)["round"]
    os.kill(victim["pid"], signal.SIGKILL)
    start = dfml(
        "round",
        "start",
        mid,
        "--clients",
        "5",
        "--min-clients",
        "3",
        "--deadline",
        "15",
        "--aggregate-deadline",
        "60",
    )
    # the round waits for the dead worker until its deadline: time to stop one of the round's
    # primary validators, so that the backup has to step in
    validators = {v["address"]: v for v in info["validators"]}
    first, second = primaries(validators, start["round_id"])
    offline = validators[first]
    os.kill(offline["pid"], signal.SIGKILL)
    final = dfml("round", "watch", str(start["round_id"]), "--timeout", "300")
    assert final["status"] == "finalized", final
    assert victim["address"] in final["selected"] and victim["address"] not in final["submitted"]
    (backup,) = set(validators) - {first, second}
    with ProtocolClient(Chain(info["chain"]["url"])) as proto:
        attested = {a.validator for a in proto.state().round(start["round_id"]).attestations}
    assert attested == {second, backup}
    assert dfml("model", "show", mid)["round"] == before + 1
    # the rounds as a table: one row per selected worker
    csv = tmp_path / "rounds.csv"
    dfml("round", "history", mid, "--csv", str(csv))
    import pandas as pd

    table = pd.read_csv(csv)
    last = table[table.round_id == start["round_id"]]
    assert len(last) == 5
    assert last.set_index("worker").loc[victim["address"], "update_status"] == "missing"
    assert (table.groupby("round_id").accuracy.nunique() == 1).all()
    status = dfml("devnet", "status")
    assert not next(w for w in status["workers"] if w["name"] == victim["name"])["running"]
    # leave the shared network as this test found it: `devnet up` restarts what it killed
    repaired = dfml("devnet", "up")
    assert set(repaired["restarted"]) >= {"validator-" + offline["name"]}
    assert all(w["running"] for w in (*repaired["workers"], *repaired["validators"]))
