"""`dfml chain up | status | down` as a user runs them: real processes, real ports."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from decentralml_jupyter.chain import Chain, devchain
from decentralml_jupyter.errors import ChainError, SetupError
from tests.conftest import free_port

UNIT = 10**12


def dfml(*args: str, env=None) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "decentralml_jupyter.cli", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return proc.returncode, json.loads(proc.stdout)


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_up_status_down_through_the_cli():
    url = f"ws://127.0.0.1:{free_port()}"
    code, up = dfml("--url", url, "chain", "up", "--accounts", "1")
    try:
        assert code == 0, up
        assert up["url"] == url and up["spec_name"] == "statemine" and up["block"] >= 1
        assert _pid_alive(up["pid"])
        code, st = dfml("--url", url, "chain", "status")
        assert code == 0 and st["running"] and st["pid"] == up["pid"]
        assert st["block"] == up["block"]
        code, again = dfml("--url", url, "chain", "up")
        assert code == 1 and "already running" in again["error"] and "chain down" in again["hint"]
    finally:
        code, down = dfml("--url", url, "chain", "down")
    assert code == 0 and down["stopped"]
    assert not _pid_alive(up["pid"])
    code, st = dfml("--url", url, "chain", "status")
    assert code == 0 and not st["running"] and st["pid"] is None


def _transfer_and_restart(port: int, base_path, cycles: int = 2) -> list[dict]:
    """Each cycle: start, read Dev1's balance and the head, transfer 11 units to Dev1, stop."""
    seen = []
    for _ in range(cycles + 1):
        devchain.up(port=port, base_path=base_path, accounts=1)
        try:
            with Chain(f"ws://127.0.0.1:{port}") as c:
                seen.append({"balance": c.balance("Dev1").free, "head": c.block_number()})
                receipt = c.transfer("//Alice", "Dev1", 11 * UNIT)
                seen[-1]["after"] = c.balance("Dev1").free
                seen[-1]["head_after"] = receipt.block_number
                seen[-1]["hash_after"] = receipt.block_hash
                seen[-1]["hash_check"] = c.block_hash(receipt.block_number)
        finally:
            devchain.down(port)
    return seen


def test_base_path_keeps_state_across_restarts(tmp_path):
    seen = _transfer_and_restart(free_port(), tmp_path / "chain")
    for prev, cur in zip(seen, seen[1:], strict=False):
        assert cur["balance"] == prev["after"] == prev["balance"] + 11 * UNIT
        assert cur["head"] == prev["head_after"]  # resumes at the block it stopped at
    assert seen[-1]["hash_check"] == seen[-1]["hash_after"]
    assert (tmp_path / "chain" / "chain.sqlite").exists()


def _saved_head(db) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT max(number) FROM block").fetchone()[0]
    finally:
        conn.close()


def test_base_path_resumes_after_kill_9(tmp_path):
    """kill -9 mid-run, twice: each `up` resumes at the last block Chopsticks saved, with the
    balances and nonces of that block, and the chain goes on from there."""
    port, base = free_port(), tmp_path / "chain"
    url = f"ws://127.0.0.1:{port}"
    transfers: list[int] = []  # block of every transfer Alice -> Dev1 (11 units each)
    remarks: list[int] = []  # block of every remark by Bob
    saved = 0  # the highest block in the database after the kill
    try:
        for cycle in range(3):
            info = devchain.up(port=port, base_path=base, accounts=1)
            with Chain(url) as c:
                head = c.block_number()
                assert info["block"] == head
                if cycle:
                    assert head >= saved >= transfers[0]  # at most the newest blocks are lost
                    transfers = [b for b in transfers if b <= head]
                    remarks = [b for b in remarks if b <= head]
                    expected = devchain.DEV_BALANCE + 11 * UNIT * len(transfers)
                    assert c.balance("Dev1").free == expected
                    assert c.nonce("//Alice") == len(transfers)
                    assert c.nonce("//Bob") == len(remarks)
                    assert c.balance("//Charlie").free == devchain.DEV_BALANCE  # funding kept
                for i in range(3):
                    transfers.append(c.transfer("//Alice", "Dev1", 11 * UNIT).block_number)
                    remarks.append(c.remark("//Bob", b"remark %d" % i).block_number)
                assert transfers[-1] == head + 5  # new blocks build on the resumed head
                assert c.balance("Dev1").free == devchain.DEV_BALANCE + 11 * UNIT * len(transfers)
                if cycle == 2:
                    break
                pid = devchain.running_record(port)["pid"]
                os.kill(pid, signal.SIGKILL)
            while _pid_alive(pid):
                time.sleep(0.05)
            saved = _saved_head(base / "chain.sqlite")
    finally:
        devchain.down(port)


def test_saved_chain_follows_parents_from_the_base(tmp_path):
    conn = sqlite3.connect(tmp_path / "db")
    conn.execute("CREATE TABLE block (hash, number, parentHash, storageDiff)")
    rows = [("b1", 1, "g"), ("b2", 2, "b1"), ("b3", 3, "b2"), ("b4", 4, "b3"), ("x5", 5, "gone")]
    conn.executemany("INSERT INTO block VALUES (?, ?, ?, '{}')", rows)
    # x5's parent was never saved: the highest block that leads back to the base is b4
    assert devchain._saved_chain(conn, "b2", 2) == ["b3", "b4"]
    assert devchain._saved_chain(conn, "b4", 4) == []
    conn.close()


def test_without_base_path_state_is_thrown_away():
    seen = _transfer_and_restart(free_port(), None, cycles=1)
    assert seen[1]["balance"] == seen[0]["balance"]
    assert seen[1]["head"] == seen[0]["head"] < seen[0]["head_after"]


def test_port_in_use_is_reported(devchain_url):
    port = int(devchain_url.rsplit(":", 1)[1])
    with pytest.raises(ChainError, match="already running"):
        devchain.up(port=port)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ChainError, match="in use"):
            devchain.up(port=s.getsockname()[1])


def test_missing_node_is_a_clear_setup_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SetupError) as err:
        devchain.install()
    assert "node" in str(err.value) and "install" in err.value.hint


def test_old_node_is_refused(tmp_path, monkeypatch):
    for tool, text in (("node", "v16.20.0"), ("npm", "8.0.0")):
        exe = tmp_path / tool
        exe.write_text(f"#!/bin/sh\necho {text}\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ["PATH"])
    with pytest.raises(SetupError, match="too old"):
        devchain.install()


def test_proxies_made_at_start_act_with_no_transaction(tmp_path):
    """``up(proxies=...)``: each delegate is its real's proxy from the first block (no
    ``add_proxy`` sent), acts for it, and the real can still remove it; with ``base_path``, a
    restart keeps them. Dev network worker hosts start this way (devnet._host_proxies)."""
    from decentralml_jupyter.agents.devnet import _groups, _host_proxies
    from decentralml_jupyter.chain.keys import load_keypair

    addr = {n: load_keypair(f"//{n}").ss58_address for n in ("Dev1", "Dev2", "Dev3", "Dev4")}
    # validators Dev1; workers Dev2..Dev4 in one host led by Dev2
    proxies = _host_proxies(1, _groups(3, 1))
    assert proxies == {addr["Dev3"]: addr["Dev2"], addr["Dev4"]: addr["Dev2"]}
    assert _host_proxies(1, _groups(3, 3)) == {}  # a host of one signs for itself
    port = free_port()
    for _ in range(2):  # the second start resumes from the first's database
        devchain.up(port=port, accounts=4, proxies=proxies, base_path=tmp_path / "chain")
        try:
            with Chain(f"ws://127.0.0.1:{port}") as c:
                found = c.proxies_of(list(addr.values()))
                assert found[addr["Dev3"]] == found[addr["Dev4"]] == [addr["Dev2"]]
                assert found[addr["Dev2"]] == found[addr["Dev1"]] == []
                assert c.nonce("//Dev3") == 0  # Dev3 never signed anything
                receipt = c.submit("//Dev2", c.proxy_call(addr["Dev3"], c.remark_call(b"hi")))
                assert receipt.events_of("Proxy", "ProxyExecuted")
                assert receipt.events_of("System", "Remarked")
        finally:
            devchain.down(port)
    devchain.up(port=port, accounts=4, proxies=proxies)
    try:
        with Chain(f"ws://127.0.0.1:{port}") as c:
            c.submit("//Dev4", c.call("Proxy", "remove_proxies", {}))
            assert c.proxies(addr["Dev4"]) == [] and c.proxies(addr["Dev3"]) == [addr["Dev2"]]
    finally:
        devchain.down(port)


def test_the_suite_keeps_its_services_state_out_of_the_users_cache(devchain_url, tmp_path_factory):
    from pathlib import Path

    from decentralml_jupyter import config

    port = int(devchain_url.rsplit(":", 1)[1])
    users = Path.home() / ".cache" / "decentralml-jupyter"
    ours = config.home()
    assert ours.is_relative_to(tmp_path_factory.getbasetemp())  # this run's, pruned by pytest
    assert (ours / "run" / f"chain-{port}.json").exists()
    assert not (users / "run" / f"chain-{port}.json").exists()
    # the chain came from the install `make setup` made, linked rather than installed again
    assert devchain.install_dir().is_symlink()
    assert not devchain.install_dir().resolve().is_relative_to(ours)
