"""Validators configured differently still agree: on the real dev network, one validator runs
TensorFlow with oneDNN and all its threads, the other with oneDNN off and one thread, so their
evaluations may differ in a float's last bits. The quorum compares only what exact rules
decide (the aggregate, the accepted and rejected updates, the server state), and every round
finalizes, with the metrics the lower median of what the two reported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.agents.test_own_data_devnet import WORKERS, own_data_network, train_plans
from tests.conftest import wait_until

ROUNDS = 4


@pytest.mark.chain
def test_validators_with_different_threads_and_onednn_finalize_every_round(tmp_path):
    from decentralml_jupyter import Session
    from decentralml_jupyter.procs import is_running

    with own_data_network(tmp_path) as (data, features, dfml, info, url, storage):
        # the second validator again, as another machine would run it
        second = info["validators"][1]
        os.kill(second["pid"], 15)
        wait_until(lambda: not is_running(second["pid"]), 30, "the validator to stop")
        env = dict(
            os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_NUM_INTRAOP_THREADS="1",
            TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
        )  # fmt: skip
        cmd = [
            sys.executable, "-m", "decentralml_jupyter.agents.validator", "--url", url,
            "--storage", storage, "--key", f"//{second['name']}",
            "--data", str(data / "validator.csv"), "--target", "target",
            "--index-db", str(tmp_path / "index-other.sqlite"),
        ]  # fmt: skip
        with open(tmp_path / "other-validator.log", "wb") as log:
            other = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            feature_args = [a for f in features for a in ("--feature", f)]
            sub = dfml(
                "model", "submit", str(tmp_path / "diabetes.keras"), "--metric", "mae",
                "--strategy", "fedadam", "--strategy-param", "eta=0.05", *feature_args,
            )  # fmt: skip
            mid = str(sub["model_id"])
            train_plans(dfml, [mid], epochs=3, rounds=ROUNDS)
            with Session(url, storage) as s:
                rounds = s.rounds(int(mid))
            assert len(rounds) == ROUNDS
            for r in rounds:
                reports = sorted(a.loss for a in r.attestations)
                assert len(r.attestations) == 2 and r.metrics["loss"] == reports[0]
                assert len(r.submitted) == WORKERS
            assert other.poll() is None  # it judged every round, and is still running
            differing = sum(len({(a.loss, a.accuracy) for a in r.attestations}) > 1 for r in rounds)
            print(f"rounds whose two validators reported different metrics: {differing}")
        finally:
            other.terminate()
            other.wait(30)
