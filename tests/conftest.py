"""Fixtures shared by the whole suite: a real dev chain, started once and always stopped."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess

import pytest

from decentralml_jupyter import procs


def unavailable(reason: str):
    """Skip a test that needs something this machine lacks; under CI (CI=true) fail instead,
    with the reason: there every declared dependency and the browser must be installed, and a
    broken install must not pass as a row of skips."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must have this: {reason}", pytrace=False)
    pytest.skip(reason)


def require(module: str, reason: str = "pip install -e '.[dev]'"):
    """``import module``, or ``unavailable`` with the reason (a declared dependency)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        unavailable(f"{module} does not import ({exc}): {reason}")


def wait_until(predicate, timeout: float = 300.0, what: str = "", every: float = 1.0):
    """``predicate()``'s first truthy value, asking every ``every`` s; an exception counts as
    not yet (a service may be restarting). Fails, naming ``what``, after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - whatever a half-started service says
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what or 'a condition'}")


def approve_and_start(dfml, mid: str, workers: int, deadline: int = 10, voter="//Dev4") -> None:
    """Once ``workers`` have staked on model ``mid``: pass its ApproveModel proposal with
    ``voter``'s vote (the chain advanced past the ``deadline``) and start its training."""
    wait_until(lambda: len(dfml("stakes", "--model", mid)) == workers, 300, "the workers' stakes")
    pid = dfml("propose", mid, "ApproveModel", "--deadline", str(deadline))["proposal_id"]
    dfml("vote", str(pid), "aye", key=voter)
    dfml("chain", "advance", str(deadline + 1))
    wait_until(lambda: dfml("model", "show", mid)["status"] == "approved", 60, "approval")
    dfml("model", "start", mid)


@contextlib.contextmanager
def dead_services():
    """(chain URL, storage URL) of services that are gone: nothing listens at the chain's
    port, and the storage port accepts connections but never answers."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        yield f"ws://127.0.0.1:{free_port()}", f"http://127.0.0.1:{silent.getsockname()[1]}"
    finally:
        silent.close()


@pytest.fixture(scope="session", autouse=True)
def _home_of_this_run(request, tmp_path_factory):
    """Everything the suite's services write (dev networks' storage, indexes, logs, pid files)
    goes to this run's temporary folder, which pytest prunes, never to the user's cache: each
    dev network on a new port would otherwise leave tens of MB there for good. The installed
    dev chain is shared from the user's cache, where `make setup` put it (linked, not copied)."""
    from decentralml_jupyter import config
    from decentralml_jupyter.chain import devchain

    installed = devchain.install_dir()
    old = os.environ.get("DFML_HOME")
    home = tmp_path_factory.mktemp("dfml-home")
    os.environ["DFML_HOME"] = str(home)
    if installed.is_dir():
        devchain.install_dir().symlink_to(installed, target_is_directory=True)
    assert config.home() == home
    try:
        yield home
    finally:
        if old is None:
            os.environ.pop("DFML_HOME", None)
        else:
            os.environ["DFML_HOME"] = old
        if request.session.testsfailed == 0:  # a failed run keeps its logs (pytest prunes)
            shutil.rmtree(home, ignore_errors=True)  # the link, never the linked install


_HANDED: set[int] = set()  # ports this test session gave out: never twice


def free_port() -> int:
    """A port free on 127.0.0.1 now and never handed to another test of this session (the OS
    may offer a port again once its probe socket closed, before the first test binds it)."""
    port = procs.free_port(avoid=_HANDED)
    _HANDED.add(port)
    return port


@pytest.fixture(scope="session")
def devchain_url():
    """A dev chain (Chopsticks, instant blocks, 4 extra funded accounts) for the session."""
    from decentralml_jupyter.chain import devchain

    port = free_port()
    info = devchain.up(port=port, accounts=4)
    try:
        yield info["url"]
    finally:
        devchain.down(port)


@pytest.fixture()
def chain(devchain_url):
    from decentralml_jupyter.chain import Chain

    c = Chain(devchain_url)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="session")
def storage_url(tmp_path_factory):
    """The dev storage service (real Kubo in-process) for the session, stopped by pid."""
    from decentralml_jupyter.storage import storage_down, storage_up

    port = free_port()
    info = storage_up(port=port, repo=tmp_path_factory.mktemp("ipfs-repo"))
    try:
        yield info["url"]
    finally:
        storage_down(port)


def stop_process_tree(proc: subprocess.Popen) -> None:
    """Stop a server we started by its pid, then any child it left (kernels), each by pid."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


@contextlib.contextmanager
def dev_network(*up_args: str):
    """A dev network on free ports (`devnet up ARGS`), brought down at the end; yields
    ``(dfml, info, url, storage)`` with ``dfml(*args, key="//Alice")`` the CLI against it."""
    from decentralml_jupyter.cli import run

    url, storage = f"ws://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"

    def dfml(*args: str, key: str = "//Alice"):
        return run(["--url", url, "--storage", storage, "--key", key, *args])

    info = dfml("devnet", "up", *up_args)
    try:
        yield dfml, info, url, storage
    finally:
        dfml("devnet", "down")
