"""Across hosts: the dev network with its roles in network namespaces of the test's own, joined
by veth links (Debian's iproute2), with 100 ms of latency and 5% packet loss between every
role and the hub: `tc netem` where the kernel has it; else a relay in the hub that holds every
chunk 50 ms each way (delay_relay.py) and nftables dropping 5% of the packets each link
receives. A round finalizes; a validator cut off for a while rejoins and catches up. Nothing
shares a loopback: every role reaches the chain and storage over its own link.

Skipped, with the reason, where network namespaces cannot be made (no root, no iproute2).
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from decentralml_jupyter.cli import run
from tests.conftest import approve_and_start, free_port, wait_until

UNIT = 10**12
NET = "10.251"  # only ever inside the namespaces this test makes
VALIDATORS = ("Dev1", "Dev2", "Dev3")
WORKERS = ("Dev4", "Dev5", "Dev6")


def _sh(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True)


def _why_no_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        _sh("ip", "netns", "add", "dfml-probe")
        _sh("ip", "netns", "del", "dfml-probe")
    except FileNotFoundError:
        return "no iproute2 (apt-get install iproute2)"
    except subprocess.CalledProcessError as exc:
        return f"cannot make a network namespace here: {exc.stderr.strip()}"
    return None


class Hosts:
    """A hub namespace (chain, storage) with a link to the test's own namespace and one to
    each role's namespace: every role is a host of its own."""

    def __init__(self, tag: str):
        self.tag = tag
        self.ns: dict[str, str] = {}
        self.links: dict[str, tuple[str, str]] = {}  # role -> (its address, the hub's address)
        self.netem: str | None = None  # why netem could not add latency and loss, if so
        self.nft: str | None = None  # why nftables could not add loss, if so

    def make(self, roles: list[str]) -> None:
        self.ns["hub"] = f"dfml{self.tag}hub"
        _sh("ip", "netns", "add", self.ns["hub"])
        _sh("ip", "-n", self.ns["hub"], "link", "set", "lo", "up")
        self._link("test", None, 0)
        for i, role in enumerate(roles, start=1):
            self.ns[role] = f"dfml{self.tag}{role}"
            _sh("ip", "netns", "add", self.ns[role])
            _sh("ip", "-n", self.ns[role], "link", "set", "lo", "up")
            self._link(role, self.ns[role], i)

    def _link(self, role: str, ns: str | None, i: int) -> None:
        mine, hub = f"d{self.tag}{i}a", f"d{self.tag}{i}b"
        _sh("ip", "link", "add", mine, "type", "veth", "peer", "name", hub)
        _sh("ip", "link", "set", hub, "netns", self.ns["hub"])
        if ns is not None:
            _sh("ip", "link", "set", mine, "netns", ns)
        side = [] if ns is None else ["-n", ns]
        _sh("ip", *side, "addr", "add", f"{NET}.{i}.2/24", "dev", mine)
        _sh("ip", *side, "link", "set", mine, "up")
        _sh("ip", "-n", self.ns["hub"], "addr", "add", f"{NET}.{i}.1/24", "dev", hub)
        _sh("ip", "-n", self.ns["hub"], "link", "set", hub, "up")
        self.links[role] = (f"{NET}.{i}.2", f"{NET}.{i}.1")
        if ns is not None:  # latency and loss between the roles and the hub
            try:
                _sh("ip", "netns", "exec", self.ns["hub"], "tc", "qdisc", "add", "dev", hub,
                    "root", "netem", "delay", "100ms", "loss", "5%")  # fmt: skip
            except subprocess.CalledProcessError as exc:
                self.netem = exc.stderr.strip() or "tc netem failed"
                self._drop(self.ns["hub"], hub)
                self._drop(ns, mine)

    def _drop(self, ns: str, dev: str) -> None:
        """5% loss of what ``dev`` receives in ``ns`` (nftables), when netem is missing."""
        table = f"inet dfml{self.tag}"
        rules = [
            f"add table {table}",
            f"add chain {table} loss {{ type filter hook input priority 0 ; }}",
            f"add rule {table} loss iifname {dev} numgen random mod 100 < 5 counter drop",
        ]
        try:
            for rule in rules:
                _sh("ip", "netns", "exec", ns, "nft", rule)
        except (FileNotFoundError, subprocess.CalledProcessError) as exc:
            self.nft = getattr(exc, "stderr", "") or str(exc)

    def dropped(self) -> int:
        """Packets the hub's loss rules dropped so far."""
        table = ["inet", f"dfml{self.tag}"]
        out = _sh("ip", "netns", "exec", self.ns["hub"], "nft", "list", "table", *table).stdout
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))

    def hub_for(self, role: str) -> str:
        return self.links[role][1]

    def cut(self, role: str, up: bool) -> None:
        i = list(self.links).index(role)
        _sh("ip", "-n", self.ns["hub"], "link", "set", f"d{self.tag}{i}b", "up" if up else "down")

    def remove(self) -> None:
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:  # each by its own pid
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def _indexed(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT block_number FROM snapshot").fetchone()
    return row[0] if row else 0


def test_a_round_across_hosts_and_a_validator_that_rejoins(tmp_path):
    from decentralml_jupyter import fl
    from decentralml_jupyter.chain import devchain

    why = _why_no_namespaces()
    if why:
        pytest.skip(why)
    hosts = Hosts(str(os.getpid())[-5:])
    procs: list[subprocess.Popen] = []
    port, st_port = free_port(), free_port()
    try:
        hosts.make([*(v.lower() for v in VALIDATORS), "workers"])
        hub = hosts.links["test"][1]
        devchain.up(port=port, accounts=6, netns=hosts.ns["hub"], bind="0.0.0.0", reach=hub)
        storage_cmd = [sys.executable, "-m", "decentralml_jupyter.storage.server"]
        storage_cmd += ["--port", str(st_port), "--repo", str(tmp_path / "ipfs"), "--host"]
        storage_cmd += ["0.0.0.0"]
        procs.append(
            _start(["ip", "netns", "exec", hosts.ns["hub"], *storage_cmd], tmp_path / "s.log")
        )
        url, storage = f"ws://{hub}:{port}", f"http://{hub}:{st_port}"
        wait_until(lambda: requests.post(f"{storage}/api/v0/version", timeout=2).ok, 60, "storage")

        def relay(there: str, to: int) -> int:
            """A delaying relay in the hub, listening on a role's link (when no netem)."""
            listen = free_port()
            cmd = [sys.executable, str(Path(__file__).with_name("delay_relay.py"))]
            cmd += ["--listen", f"{there}:{listen}", "--to", f"127.0.0.1:{to}"]
            cmd += ["--delay", "0.05"]
            log = tmp_path / f"relay-{there}-{to}.log"
            procs.append(_start(["ip", "netns", "exec", hosts.ns["hub"], *cmd], log))
            return listen

        def agent(role: str, module: str, keys: list[str], extra: list[str]) -> None:
            there = hosts.hub_for(role)
            ports = (port, st_port)
            if hosts.netem:  # latency in user space instead
                ports = (relay(there, port), relay(there, st_port))
            cmd = [sys.executable, "-m", f"decentralml_jupyter.agents.{module}"]
            cmd += ["--url", f"ws://{there}:{ports[0]}", "--storage", f"http://{there}:{ports[1]}"]
            for key in keys:
                cmd += ["--key", key]
            cmd += ["--index-db", str(tmp_path / f"index-{role}.sqlite"), *extra]
            log = tmp_path / f"{role}.log"
            procs.append(_start(["ip", "netns", "exec", hosts.ns[role], *cmd], log))

        for v in VALIDATORS:
            agent(v.lower(), "validator", [f"//{v}"], ["--backup-grace", "5"])
        agent("workers", "worker", [f"//{w}" for w in WORKERS], ["--workers", "3"])
        clock = [sys.executable, "-m", "decentralml_jupyter.agents.clock", "--url", url]
        procs.append(_start([*clock, "--interval", "1"], tmp_path / "clock.log"))

        def dfml(*args, key="//Alice"):
            return run(["--url", url, "--storage", storage, "--key", key, *args])

        path = tmp_path / "hosts.keras"
        fl.mlp(64, 10, hidden=(16,)).save(path)
        validators = [x for v in VALIDATORS for x in ("--validator", v)]
        mid = str(dfml("model", "submit", str(path), *validators)["model_id"])
        approve_and_start(dfml, mid, 3, deadline=10)

        def a_round(what: str) -> dict:
            rid = dfml(
                "round", "start", mid, "--clients", "3", "--min-clients", "2",
                "--reward", str(5 * UNIT), "--deadline", "40", "--aggregate-deadline", "60",
            )["round_id"]  # fmt: skip
            final = dfml("round", "watch", str(rid), "--timeout", "400")
            assert final["status"] == "finalized", (what, final)
            return final

        first = a_round("across hosts")
        assert len(first["rewards"]) >= 2
        # Dev1 is cut off from the hub while the next round runs: the other two finalize it
        hosts.cut("dev1", up=False)
        second = a_round("with a validator cut off")
        time.sleep(40)  # long enough for its requests to time out: it has to reconnect
        chain_head = dfml("chain", "status")["block"]
        behind = _indexed(tmp_path / "index-dev1.sqlite")
        assert behind < chain_head
        hosts.cut("dev1", up=True)
        # it rejoins: its index catches up with the chain, and it works on the next round
        third = a_round("after the validator rejoined")
        wait_until(
            lambda: _indexed(tmp_path / "index-dev1.sqlite") >= third["ended_block"],
            180,
            "the cut-off validator to catch up",
        )
        assert second["round_id"] < third["round_id"]
        if hosts.netem:
            print(f"no netem ({hosts.netem}): 50 ms relays each way, loss by nftables")
            assert hosts.nft is None, f"no loss either: {hosts.nft}"
            assert hosts.dropped() > 0  # the links really lost packets
    finally:
        _stop(procs)
        devchain.down(port)
        hosts.remove()
