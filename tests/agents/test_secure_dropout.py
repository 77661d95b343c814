"""A secure round survives a worker killed mid-round, on the real dev network: four workers
(each its own process) are selected, one is killed as the round starts, the other three
submit masked updates and then reveal their own mask seeds and their seeds shared with the
dead one; the validators unmask the three updates' sum and finalize. The dead worker's own
seed is never revealed."""

from __future__ import annotations

import os

import pytest

from tests.agents.test_own_data_devnet import VALIDATORS, train_plans
from tests.conftest import dev_network, wait_until

WORKERS = 4


@pytest.mark.chain
def test_a_secure_round_finalizes_without_a_worker_killed_mid_round(tmp_path):
    from decentralml_jupyter import Session, fl
    from decentralml_jupyter.procs import is_running

    with dev_network(
        "--workers", str(WORKERS), "--worker-processes", str(WORKERS),
        "--validators", str(VALIDATORS), "--clock", "1",
    ) as (dfml, info, url, storage):  # fmt: skip
        path = tmp_path / "digits.keras"
        fl.mlp(64, 10, hidden=(32,)).save(path)
        mid = str(dfml("model", "submit", str(path), "--strategy", "fedavg:secure")["model_id"])
        victim = info["workers"][-1]

        def kill(_rounds):
            os.kill(victim["pid"], 9)
            wait_until(lambda: not is_running(victim["pid"]), 30, "the worker to die")

        train_plans(
            dfml, [mid], epochs=2, rounds=1, deadline=25, workers=WORKERS,
            extra=("--min-clients", "3"), on_started=kill,
        )  # fmt: skip
        with Session(url, storage) as s:
            [rnd] = s.rounds(int(mid))
        assert victim["address"] in rnd.selected and victim["address"] not in rnd.submitted
        assert len(rnd.submitted) == WORKERS - 1 and rnd.status == "finalized"
        assert set(rnd.reveals) == set(rnd.submitted)  # never the dead worker's own seed
        assert all(set(r["dropped"]) == {victim["address"]} for r in rnd.reveals.values())
        assert rnd.metrics["accuracy"] > rnd.metrics["base_accuracy"]  # the sum was read
