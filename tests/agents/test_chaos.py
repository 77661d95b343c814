"""Chaos: a dev network runs a plan of rounds while a seeded schedule kills -9 the chain, the
storage service, a validator, a worker host and the clock at random points, and `devnet up`
on the same base path brings back whatever is gone.

Every round must end (finalized, or failed with its refund), every due payout must be
executed, no pool's books may exceed its balance on chain, and every agent and the clock must
be back. A short schedule runs in CI; a longer one is marked slow.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from decentralml_jupyter.cli import run
from tests.conftest import free_port, wait_until

UNIT = 10**12
VICTIMS = ("chain", "storage", "validator", "worker", "clock")


def _retry(fn, timeout: float = 240.0):
    """``fn()`` once the network answers again (a killed service is coming back)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception:  # noqa: BLE001 - whatever a half-restarted network says
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _pid_of(victim: str, net: dict, rng: random.Random) -> int:
    if victim == "chain":
        return net["chain"]["pid"]
    if victim == "storage":
        return net["storage"]["pid"]
    if victim == "clock":
        return net["clock"]["pid"]
    group = net["validators"] if victim == "validator" else net["workers"]
    return rng.choice(group)["pid"]


def _books_within_chain(url: str) -> None:
    from decentralml_jupyter.chain import Chain
    from decentralml_jupyter.protocol.client import ProtocolClient
    from decentralml_jupyter.protocol.indexer import Indexer

    chain = Chain(url)
    with ProtocolClient(chain, Indexer(chain)) as proto:
        state = proto.state()
        for (pool, asset), held in state.holdings().items():
            assert asset is None
            assert held <= chain.balance(pool).free, (pool, held)


def chaos(tmp_path, seed: int, rounds: int, passes: int) -> None:
    from decentralml_jupyter import fl

    url, storage = f"ws://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"

    def dfml(*args, key="//Alice"):
        return run(["--url", url, "--storage", storage, "--key", key, *args])

    up = ("devnet", "up", "--workers", "3", "--validators", "3", "--clock", "1")
    up += ("--base-path", str(tmp_path / "net"), "--worker-processes", "2")
    net = dfml(*up)
    try:
        path = tmp_path / "chaos.keras"
        fl.mlp(64, 10, hidden=(16,)).save(path)
        mid = str(dfml("model", "submit", str(path))["model_id"])
        wait_until(lambda: len(dfml("stakes", "--model", mid)) == 3, what="the workers' stakes")
        pid = dfml("propose", mid, "ApproveModel", "--deadline", "10")["proposal_id"]
        dfml("vote", str(pid), "aye", key="//Dev4")
        dfml("chain", "advance", "11")
        wait_until(lambda: dfml("model", "show", mid)["status"] == "approved", what="approval")
        dfml("model", "start", mid)
        start = dfml(
            "round", "start", mid, "--clients", "3", "--min-clients", "2", "--rounds",
            str(rounds), "--reward", str(10 * UNIT), "--deadline", "20",
            "--aggregate-deadline", "25",
        )  # fmt: skip
        rng = random.Random(seed)
        killed = []
        # every role once per pass, in a seeded order, at seeded moments
        schedule = [v for _ in range(passes) for v in rng.sample(VICTIMS, len(VICTIMS))]
        live_kills = 0
        for victim in schedule:
            time.sleep(rng.uniform(1.0, 4.0))
            rounds_now = _retry(lambda: dfml("round", "history", mid))
            live_kills += any(r["status"] in ("open", "aggregating") for r in rounds_now)
            pid = _pid_of(victim, net, rng)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                raise AssertionError(f"the {victim} (pid {pid}) had died by itself") from None
            killed.append(victim)
            time.sleep(rng.uniform(0.5, 3.0))
            net = _retry(lambda: dfml(*up))  # brings back what is gone
            assert net["restarted"], f"{victim} was killed, nothing was restarted"
        # every round of the plan ends: finalized, or failed with its budget refunded
        plan = [start["round_id"]]

        def plan_done():
            rows = [dfml("round", "status", str(r)) for r in plan]
            while rows[-1]["status"] in ("finalized", "failed") and rows[-1].get("next_round_id"):
                plan.append(rows[-1]["next_round_id"])
                rows.append(dfml("round", "status", str(plan[-1])))
            ended = all(r["status"] in ("finalized", "failed") for r in rows)
            return rows if ended and not rows[-1].get("rounds_left") else None

        rows = wait_until(plan_done, timeout=600, what=f"the plan to end (killed: {killed})")
        assert len(rows) == rounds
        print(f"chaos seed {seed}: killed {killed} ({live_kills} during rounds);", end=" ")
        print("rounds:", [r["status"] for r in rows])
        # the schedule hit rounds in flight, not a network at rest
        assert live_kills >= min(3, len(schedule)), (live_kills, killed)
        payouts = dfml("payouts")
        for r in rows:
            if r["status"] == "failed":
                assert any(
                    p["reason"] == "round_refund" and p["created_block"] == r["ended_block"]
                    for p in payouts
                ), r
        # every payout due is executed by the validators
        wait_until(
            lambda: all(p["status"] == "paid" for p in dfml("payouts") if p["status"] != "void"),
            timeout=300,
            what="the due payouts",
        )
        _books_within_chain(url)
        status = dfml("devnet", "status")
        for who in (*status["workers"], *status["validators"]):
            assert who["running"], who
        assert status["chain"]["running"] and status["storage"]["running"]
        from decentralml_jupyter import procs

        assert procs.is_running(status["clock"]["pid"], status["clock"].get("start_time"))
    finally:
        run(["--url", url, "--storage", storage, "devnet", "down"])


def test_a_plan_survives_kills_of_every_role(tmp_path):
    chaos(tmp_path, seed=7, rounds=6, passes=1)


@pytest.mark.slow
def test_a_plan_survives_a_long_kill_schedule(tmp_path):
    chaos(tmp_path, seed=11, rounds=15, passes=3)
