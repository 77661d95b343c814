"""The project's background processes (dev chain, storage service, agents): start them
detached with a log, tell whether a recorded pid is still the same process, and stop exactly
that pid. A recycled pid is never signalled: a record names the process's start time too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (None if there is no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # fields after the parenthesised command, which may itself contain spaces or parentheses
    return stat.rsplit(")", 1)[1].split()[19]


def is_running(pid: int | None, started: str | None = None) -> bool:
    """Whether ``pid`` runs (a zombie does not), and is the process that started at ``started``.

    A zombie child of this process is reaped on the way.
    """
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    if started is not None and fields[19] != started:
        return False
    if fields[0] == "Z":
        # a zombie leader whose other threads still run (node's workers) still holds its
        # sockets: it is gone only when every thread is
        if any(_state(t) != "Z" for t in Path(f"/proc/{pid}/task").glob("*/stat")):
            return True
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def _state(stat_path: Path) -> str:
    try:
        return stat_path.read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def spawn(
    cmd: Sequence[str], log: Path, *, cwd: Path | None = None, env: dict | None = None
) -> subprocess.Popen:
    """Start ``cmd`` detached (its own session: it outlives the shell or kernel that started
    it), with stdout and stderr appended to ``log``."""
    with open(log, "ab") as f:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )


def stop(pid: int, started: str | None = None, grace: float = 10.0) -> bool:
    """SIGTERM ``pid`` (only it, never its group), SIGKILL after ``grace`` seconds.

    Returns whether it was running. Does nothing to a pid that is no longer the process that
    started at ``started``.
    """
    if not is_running(pid, started):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + grace
    while is_running(pid, started) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_running(pid, started):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        while is_running(pid, started):
            time.sleep(0.05)
    return True
