"""The local dev chain: Chopsticks executing the real Rococo Asset Hub runtime, on 127.0.0.1.

The npm packages are installed on first use into the project's cache (never into the repository),
the raw genesis is extracted from them, and the chain runs as a detached process whose pid is
recorded so that `down` stops exactly that process.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import yaml

from .. import config, procs
from ..errors import ChainError, ChainNotReachable, SetupError, UsageError
from .rpc import rpc_call

CHOPSTICKS_VERSION = "1.5.1"
KNOWN_CHAINS_VERSION = "1.10.3"
SPEC_MODULE = "@substrate/connect-known-chains/dist/esm/specs/rococo_v2_2_asset_hub.js"
MIN_NODE_MAJOR = 20  # Chopsticks 1.5.1 declares node>=22 but runs on 20 (verified here)
SS58_FORMAT = 42
DEV_NAMES = ("Alice", "Bob", "Charlie", "Dave", "Eve", "Ferdie")
# 1,000,000 tokens of 12 decimals for every dev account: large, and far from u128 overflow.
DEV_BALANCE = 10**18
BLOCK_MODES = {"instant": "Instant", "batch": "Batch", "manual": "Manual"}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Installation:
    """Where the pinned npm packages live, and what the install found out."""

    root: Path
    chopsticks_bin: Path
    genesis: Path
    sqlite: bool  # whether sqlite3's native module loads (needed for --base-path persistence)


def dev_accounts(extra: int = 0) -> list[tuple[str, str]]:
    """(name, secret URI) of every dev account: Alice..Ferdie, then Dev1..DevN."""
    accounts = [(n, f"//{n}") for n in DEV_NAMES]
    accounts += [(f"Dev{i}", f"//Dev{i}") for i in range(1, extra + 1)]
    return accounts


# ---------------------------------------------------------------------------------------------
# Installation


def _node_major(node: str) -> int:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    return int(out.strip().lstrip("v").split(".")[0])


def _check_node() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise SetupError(
            "node and npm are needed to run the dev chain (Chopsticks) and were not found",
            hint=f"install Node.js {MIN_NODE_MAJOR} or newer with npm (apt-get install nodejs npm)",
        )
    major = _node_major(node)
    if major < MIN_NODE_MAJOR:
        raise SetupError(
            f"node {major} is too old for the dev chain (Chopsticks {CHOPSTICKS_VERSION})",
            hint=f"install Node.js {MIN_NODE_MAJOR} or newer",
        )
    return node, npm


def install_dir() -> Path:
    return config.home() / f"chopsticks-{CHOPSTICKS_VERSION}-known-chains-{KNOWN_CHAINS_VERSION}"


def _sqlite_loads(node: str, root: Path) -> bool:
    probe = subprocess.run(
        [node, "-e", "require('sqlite3')"], cwd=root, capture_output=True, text=True
    )
    return probe.returncode == 0


def _build_sqlite(node: str, npm: str, root: Path, progress: Progress) -> bool:
    # npm may skip sqlite3's install script (or find no prebuilt binary offline); build it
    # against the local node headers, which needs no network.
    if _sqlite_loads(node, root):
        return True
    progress("building sqlite3's native module for chain persistence")
    prefix = Path(node).resolve().parent.parent
    cmd = [npm, "rebuild", "sqlite3", "--build-from-source"]
    if (prefix / "include" / "node" / "node.h").exists():
        cmd.append(f"--nodedir={prefix}")
    subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    return _sqlite_loads(node, root)


def extract_genesis(spec_js: Path, out: Path) -> None:
    """Turn the packaged chain spec (a JS template literal) into a raw genesis Chopsticks reads.

    Boot nodes, telemetry and code substitutes are dropped (nothing may reach the network), and
    the raw storage keys are sorted, which Chopsticks' genesis import requires.
    """
    src = spec_js.read_text()
    body = src[src.index("`") + 1 : src.rindex("`")]
    spec = json.loads(body)
    spec["bootNodes"] = []
    spec["telemetryEndpoints"] = None
    spec["codeSubstitutes"] = {}
    top = spec["genesis"]["raw"]["top"]
    spec["genesis"]["raw"]["top"] = dict(sorted(top.items()))
    out.write_text(json.dumps(spec))


def install(progress: Progress | None = None) -> Installation:
    """Install the pinned Chopsticks and chain spec once; later calls return at once, offline."""
    progress = progress or (lambda msg: None)
    node, npm = _check_node()
    root = install_dir()
    marker = root / "installed.json"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes may start chains at once
        if not marker.exists():
            progress(f"installing Chopsticks {CHOPSTICKS_VERSION} (first use, about a minute)")
            (root / "package.json").write_text(
                json.dumps(
                    {
                        "name": "dfml-devchain",
                        "private": True,
                        "dependencies": {
                            "@acala-network/chopsticks": CHOPSTICKS_VERSION,
                            "@substrate/connect-known-chains": KNOWN_CHAINS_VERSION,
                        },
                    }
                )
            )
            proc = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=error"],
                cwd=root,
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise SetupError(
                    f"npm install of Chopsticks {CHOPSTICKS_VERSION} failed: "
                    f"{proc.stderr.strip()[-800:]}",
                    hint="check that the npm registry is reachable, then run: dfml chain install",
                )
            progress("extracting the Rococo Asset Hub genesis and runtime")
            extract_genesis(root / "node_modules" / SPEC_MODULE, root / "genesis.json")
            sqlite = _build_sqlite(node, npm, root, progress)
            marker.write_text(json.dumps({"sqlite": sqlite, "node": _node_major(node)}))
        info = json.loads(marker.read_text())
    bin_path = root / "node_modules" / "@acala-network" / "chopsticks" / "chopsticks.cjs"
    if not bin_path.exists() or not (root / "genesis.json").exists():
        marker.unlink(missing_ok=True)
        raise SetupError(
            f"the Chopsticks install in {root} is incomplete",
            hint="run: dfml chain install (it reinstalls)",
        )
    return Installation(root, bin_path, root / "genesis.json", bool(info["sqlite"]))


# ---------------------------------------------------------------------------------------------
# Processes


def _state_file(port: int) -> Path:
    return config.run_dir() / f"chain-{port}.json"


def _alive(record: dict) -> bool:
    return procs.is_running(record.get("pid"), record.get("start_time"))


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _genesis_total_issuance(genesis: Path) -> int:
    from substrateinterface.utils.hasher import xxh128

    key = "0x" + (xxh128(b"Balances") + xxh128(b"TotalIssuance")).hex()
    raw = json.loads(genesis.read_text())["genesis"]["raw"]["top"].get(key, "0x" + "00" * 16)
    return int.from_bytes(bytes.fromhex(raw[2:]), "little")


def _funding(genesis: Path, extra: int) -> dict:
    from substrateinterface import Keypair

    # amounts as strings: the YAML loader would read them as JS numbers, which lose precision
    accounts = []
    for _, uri in dev_accounts(extra):
        addr = Keypair.create_from_uri(uri, ss58_format=SS58_FORMAT).ss58_address
        accounts.append([[addr], {"providers": 1, "data": {"free": str(DEV_BALANCE)}}])
    issuance = _genesis_total_issuance(genesis) + DEV_BALANCE * len(accounts)
    return {"System": {"Account": accounts}, "Balances": {"TotalIssuance": str(issuance)}}


def chain_info(url: str, timeout: float = 5.0) -> dict:
    """Block height and runtime of the chain at ``url`` (any Substrate endpoint)."""
    header = rpc_call(url, "chain_getHeader", [], timeout=timeout)
    version = rpc_call(url, "state_getRuntimeVersion", [], timeout=timeout)
    return {
        "block": int(header["number"], 16),
        "spec_name": version["specName"],
        "spec_version": version["specVersion"],
    }


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ChainError(
                f"the dev chain exited during start-up (exit code {proc.returncode}):\n{tail}",
                hint=f"read the whole log at {log}",
            )
        try:
            return chain_info(url, timeout=2.0)
        except ChainNotReachable:
            if time.monotonic() > deadline:
                proc.terminate()
                raise ChainError(
                    f"the dev chain did not answer at {url} within {timeout:.0f} s",
                    hint=f"read the log at {log}",
                ) from None
            time.sleep(0.2)


def up(
    port: int = 9944,
    base_path: str | os.PathLike | None = None,
    accounts: int = 0,
    block_mode: str = "instant",
    timeout: float = 120.0,
    progress: Progress | None = None,
) -> dict:
    """Start the dev chain and return once it answers RPC.

    Without ``base_path`` the chain's state lives in memory and is gone after ``down``; with
    it, blocks and state are kept in ``base_path/chain.sqlite`` and the next ``up`` resumes
    from the last block.
    """
    if block_mode not in BLOCK_MODES:
        raise UsageError(
            f"unknown block mode {block_mode!r}", hint=f"use one of: {', '.join(BLOCK_MODES)}"
        )
    if accounts < 0:
        raise UsageError("--accounts must be 0 or more")
    url = f"ws://127.0.0.1:{port}"
    state_file = _state_file(port)
    if state_file.exists():
        record = json.loads(state_file.read_text())
        if _alive(record):
            raise ChainError(
                f"a dev chain is already running at {url} (pid {record['pid']})",
                hint=f"use it, or stop it first: dfml --url {url} chain down",
            )
        state_file.unlink()
    if not _port_free(port):
        raise ChainError(
            f"port {port} on 127.0.0.1 is already in use by another program",
            hint="choose another port with --port",
        )
    inst = install(progress)
    if base_path is not None:
        if not inst.sqlite:
            raise SetupError(
                "chain persistence (--base-path) needs sqlite3's native module, which could not "
                "be built",
                hint="install build tools (apt-get install build-essential python3) and run: "
                "dfml chain install --force",
            )
        work = Path(base_path).expanduser().resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix=f"dfml-chain-{port}-"))
    db = work / "chain.sqlite"
    snapshot = work / SNAPSHOT
    resume = base_path is not None and snapshot.exists()
    cfg: dict = {
        "genesis": str(inst.genesis),
        "host": "127.0.0.1",
        "port": port,
        "build-block-mode": BLOCK_MODES[block_mode],
        "runtime-log-level": 0,
    }
    if base_path is not None:
        cfg["db"] = str(db)
    if resume:
        meta = json.loads((work / "devchain.json").read_text())
        accounts = meta["accounts"]  # funded at first start; the snapshot already has them
        cfg["resume"] = meta["head_hash"]
        cfg["import-storage"] = str(_resume_storage(work, inst.genesis))
    else:
        cfg["import-storage"] = _funding(inst.genesis, accounts)
    cfg_path = work / "chopsticks.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log = work / "chain.log"
    env = dict(os.environ, LOG_LEVEL=os.environ.get("DFML_CHAIN_LOG_LEVEL", "warn"))
    proc = procs.spawn(
        ["node", str(inst.chopsticks_bin), "-c", str(cfg_path)], log, cwd=work, env=env
    )
    record = {
        "pid": proc.pid,
        "start_time": procs.start_time(proc.pid),
        "url": url,
        "port": port,
        "work_dir": str(work),
        "persistent": base_path is not None,
        "accounts": accounts,
        "block_mode": block_mode,
        "log": str(log),
    }
    state_file.write_text(json.dumps(record))
    if base_path is not None and not resume:
        (work / "devchain.json").write_text(json.dumps({"accounts": accounts, "head_hash": None}))
    try:
        info = _wait_ready(url, proc, log, timeout)
    except BaseException:
        state_file.unlink(missing_ok=True)
        _stop_pid(record)
        raise
    return {"url": url, "pid": proc.pid, **info, "base_path": str(work) if base_path else None}


SNAPSHOT = "state-snapshot.json"


def _save_snapshot(record: dict) -> None:
    """Write the head's full storage beside the block database, for the next ``up``.

    Chopsticks' own resume replays only the last saved block's changes over genesis, which
    loses older changes (seen with 1.5.1), so the whole state at the head is re-imported at
    start-up on top of the resumed head block.
    """
    url, work = record["url"], Path(record["work_dir"])
    head = rpc_call(url, "chain_getHeader", [])
    number = int(head["number"], 16)
    head_hash = rpc_call(url, "chain_getBlockHash", [number])
    # blocks are written to the database asynchronously: wait until the head is there
    deadline = time.monotonic() + 10
    while not _db_has_block(work / "chain.sqlite", head_hash) and time.monotonic() < deadline:
        time.sleep(0.1)
    pairs: list[list[str | None]] = []
    start = None
    while True:
        keys = rpc_call(url, "state_getKeysPaged", ["0x", 1000, start, head_hash], timeout=30)
        if not keys:
            break
        for change in rpc_call(url, "state_queryStorageAt", [keys, head_hash], timeout=30):
            pairs.extend(change["changes"])
        start = keys[-1]
        if len(keys) < 1000:
            break
    tmp = work / (SNAPSHOT + ".tmp")
    tmp.write_text(json.dumps(pairs))
    tmp.replace(work / SNAPSHOT)  # atomic: a crash never leaves half a snapshot
    meta_file = work / "devchain.json"
    meta = json.loads(meta_file.read_text())
    meta.update(head_hash=head_hash, head_number=number)
    meta_file.write_text(json.dumps(meta))


def _db_has_block(db: Path, block_hash: str) -> bool:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("SELECT 1 FROM block WHERE hash = ?", (block_hash,)).fetchone()
    except sqlite3.Error:
        return False
    return row is not None


def _resume_storage(work: Path, genesis: Path) -> Path:
    """The snapshot as raw pairs, with genesis keys that no longer exist set to null."""
    pairs = json.loads((work / SNAPSHOT).read_text())
    present = {k for k, _ in pairs}
    top = json.loads(genesis.read_text())["genesis"]["raw"]["top"]
    pairs += [[k, None] for k in top if k not in present]
    out = work / "resume-storage.json"
    out.write_text(json.dumps(pairs))
    return out


def _stop_pid(record: dict, timeout: float = 10.0) -> None:
    procs.stop(record["pid"], record.get("start_time"), grace=timeout)


def _record(port: int) -> dict | None:
    state_file = _state_file(port)
    return json.loads(state_file.read_text()) if state_file.exists() else None


def running_record(port: int = 9944) -> dict | None:
    """The recorded dev chain on ``port`` if its process is alive."""
    record = _record(port)
    return record if record and _alive(record) else None


def status(url: str = "ws://127.0.0.1:9944") -> dict:
    """Whether a chain answers at ``url``, its head and runtime, and our pid if we started it."""
    parsed = urlparse(url)
    local = parsed.hostname in ("127.0.0.1", "localhost")
    record = running_record(parsed.port or 9944) if local else None
    out: dict = {
        "url": url,
        "running": False,
        "block": None,
        "spec_name": None,
        "spec_version": None,
        "pid": record["pid"] if record else None,
    }
    try:
        out.update(chain_info(url), running=True)
    except ChainNotReachable:
        pass
    return out


def down(port: int = 9944) -> dict:
    """Stop the dev chain started on ``port`` (exactly its recorded pid)."""
    record = _record(port)
    if record is None:
        return {"stopped": True, "was_running": False}
    was_running = _alive(record)
    if was_running and record.get("persistent"):
        _save_snapshot(record)
    _stop_pid(record)
    _state_file(port).unlink(missing_ok=True)
    if not record.get("persistent"):
        shutil.rmtree(record["work_dir"], ignore_errors=True)
    return {"stopped": True, "was_running": was_running}
