"""The Binder demo's build and start steps, run here as Binder runs them.

postBuild runs against the project's own environment (its guard skips the reinstall there);
start brings a dev network up on free ports and then execs the given command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

BINDER = Path(__file__).resolve().parents[2] / "binder"


def test_binder_files_are_there_and_executable():
    assert (BINDER / "environment.yml").read_text().count("nodejs=20") == 1
    for script in ("postBuild", "start"):
        assert os.access(BINDER / script, os.X_OK), f"binder/{script} must be executable"


def test_postbuild_is_idempotent_here():
    env = dict(os.environ, PYTHON=sys.executable)
    for _ in range(2):  # a second run changes nothing and still succeeds
        cmd = ["bash", str(BINDER / "postBuild")]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert "already installed" in done.stdout  # the project venv was left alone
        assert "postBuild: done" in done.stdout


@pytest.mark.chain
def test_start_brings_a_devnet_up_then_execs(tmp_path):
    from decentralml_jupyter.agents import devnet

    url, storage = f"ws://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "devnet.json"
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        DFML_URL=url,
        DFML_STORAGE=storage,
        DFML_WORKERS="1",
        DFML_START_LOG=str(log),
    )
    try:
        done = subprocess.run(
            [str(BINDER / "start"), sys.executable, "-c", "print('exec ok')"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "exec ok"  # the given command ran, in place of start
        status = devnet.status(url)
        assert status["chain"]["running"] and len(status["workers"]) == 1
        assert json.loads(log.read_text())["chain"]["url"] == url
    finally:
        devnet.down(url)
