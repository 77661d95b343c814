"""The project's background processes (dev chain, storage service, agents): start them
detached with a log, tell whether a recorded pid is still the same process, and stop exactly
that pid. A recycled pid is never signalled: a record names the process's start time too.

Processes are read through psutil, so this works on Linux and macOS alike.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

# A start time is wall-clock seconds (psutil's create_time), which moves with clock
# adjustments; a recycled pid within this tolerance of its predecessor's start does not happen.
_START_TOLERANCE = 1.0


def start_time(pid: int) -> str | None:
    """When ``pid`` started, as text for a record (None if there is no such process)."""
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return None


def _started_at(started: str) -> float:
    """A recorded start time in seconds since the epoch. Records written before psutil
    held Linux's clock ticks since boot (no decimal point)."""
    if "." in started:
        return float(started)
    return psutil.boot_time() + int(started) / os.sysconf("SC_CLK_TCK")


def is_running(pid: int | None, started: str | None = None) -> bool:
    """Whether ``pid`` runs (a zombie does not), and is the process that started at ``started``.

    A zombie child of this process is reaped on the way.
    """
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if started is not None and abs(proc.create_time() - _started_at(started)) > (
            _START_TOLERANCE
        ):
            return False
        if proc.status() != psutil.STATUS_ZOMBIE:
            return True
        # a zombie leader whose other threads still run (node's workers) still holds its
        # sockets: it is gone only when every thread is
        if proc.num_threads() > 1:
            return True
    except psutil.ZombieProcess:  # macOS gives no details of a zombie
        pass
    except psutil.Error:  # gone, or not ours to inspect
        return False
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return False


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


# Ports for the services a test, tutorial or benchmark starts come from below the OS's
# ephemeral range (Linux's starts at 32768, macOS's and Windows' at 49152): a port from there,
# as binding port 0 gives, can be taken between being chosen and being bound, by any outgoing
# connection or by a Jupyter kernel's own sockets.
_PORTS = range(20000, 32768)


def free_port(avoid: set[int] | frozenset[int] = frozenset()) -> int:
    """A port of 127.0.0.1 that nothing is bound to now and is none of ``avoid``, chosen at
    random below the ephemeral range, so that the OS hands it to nobody before a service
    binds it."""
    start = random.SystemRandom().randrange(len(_PORTS))  # then every port once, in turn
    for i in range(len(_PORTS)):
        port = _PORTS[(start + i) % len(_PORTS)]
        if port in avoid:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise OSError(f"no free port on 127.0.0.1 between {_PORTS[0]} and {_PORTS[-1]}")
