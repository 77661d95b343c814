"""The dev network: the dev chain, the storage service, the validators in validator processes
(default: one each), the workers in worker processes, and a block clock, with pids and logs in
one directory, stopped by pid.

Validators are the dev accounts Dev1..DevK, workers DevK+1..DevK+N; each worker holds one
partition of the dataset. ``worker_processes`` processes (default: one per CPU core, at most
one per worker) share the workers; a process of several signs for them as their proxy, one
transaction per step (the dev chain starts with those proxies made, as it starts with the
accounts funded). ``validator_processes`` processes (default: one per validator) share the
validators: a process of several holds one TensorFlow runtime and judges each round once, and
each of its validators signs its own attestations and approvals.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from urllib.parse import urlparse

from .. import config, procs
from ..chain import devchain
from ..errors import DfmlError, UsageError
from ..storage import storage_down, storage_status, storage_up


def _state_file(port: int) -> Path:
    return config.run_dir() / f"devnet-{port}.json"


def load(port: int) -> dict | None:
    f = _state_file(port)
    return json.loads(f.read_text()) if f.exists() else None


def _start(cmd: list[str], log: Path) -> dict:
    """Start one process; its entry keeps how to start it again (``devnet up`` repairs)."""
    proc = procs.spawn(cmd, log, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return {"pid": proc.pid, "start_time": procs.start_time(proc.pid), "cmd": cmd, "log": str(log)}


def _alive(p: dict) -> bool:
    return procs.is_running(p.get("pid"), p.get("start_time"))


def _agent_cmd(module: str, url: str, storage: str, keys: list[str], extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", f"decentralml_jupyter.agents.{module}"]
    cmd += ["--url", url, "--storage", storage]
    for key in keys:  # dev URIs only: a secret never goes on a command line
        cmd += ["--key", key]
    return [*cmd, *extra]


def _groups(count: int, hosts: int) -> list[range]:
    """``count`` agents (0..count-1) over ``hosts`` processes, consecutive ones together:
    sizes differ by at most one. No processes for no agents."""
    if hosts == 0:
        return []
    bounds = [count * h // hosts for h in range(hosts + 1)]
    return [range(bounds[h], bounds[h + 1]) for h in range(hosts)]


def _hosts(role: str, value: int | None, default: int, agents: int) -> int:
    """How many processes host the ``agents`` of ``role``: ``value`` (its --ROLE-processes)
    or ``default``, from 1 to ``agents``."""
    hosts = default if value is None else value
    if agents and not 1 <= hosts <= agents:
        raise UsageError(
            f"--{role}-processes must be between 1 and --{role}s ({agents}), got {hosts}"
        )
    return hosts


def up(
    url: str = config.DEFAULT_URL,
    storage: str = config.DEFAULT_STORAGE,
    *,
    workers: int = 4,
    validators: int = 3,
    base_path: str | None = None,
    dataset: str = "digits",
    partition: str = "iid",
    seed: int = 0,
    attackers: int = 0,
    attack: str = "label_flip",
    clock: float = 3.0,
    block_mode: str = "batch",
    worker_processes: int | None = None,
    validator_processes: int | None = None,
    data: str | None = None,
    target: str | None = None,
    progress=None,
) -> dict:
    """Start everything; returns CLI.md's devnet JSON once the chain and storage answer.

    On a dev network already recorded on this port, whatever of it is not running (after a
    crash, a kill -9, a reboot) is started again as it was, and the rest is left alone: the
    chain resumes from its database when the network was started with ``base_path``, storage
    from its repository, every agent from its index. The result then names what was
    ``restarted``.

    ``data`` (a folder) gives every agent its own data instead of a bundled dataset: worker i
    (from 0) reads ``DATA/worker-<i>.<csv|parquet|npz>`` or the folder ``DATA/worker-<i>/``,
    the validators ``DATA/validator.<ext>`` (one held-out set, so that they agree), with
    ``target`` the label column of tables. ``workers`` 0 starts validators only: participants
    join later (``dfml worker``, ``%dfml worker join``) with funded accounts Dev<K+1>...

    ``validator_processes`` (default: ``validators``, one process each) hosts the validators
    in fewer processes, consecutive ones together (the Binder demo runs them in one).
    """
    if workers < 0 or validators < 1:
        raise UsageError("a dev network needs 0 or more workers and at least 1 validator")
    if attackers > workers:
        raise UsageError("--attackers cannot exceed --workers")
    sources = _data_files(Path(data), workers) if data else None
    # one worker process per core by default: a process per worker would hold a TensorFlow
    # runtime each (~0.75 GiB) and send one extrinsic each, for no more parallelism; a worker
    # on its own data runs in a process of its own
    cores = os.cpu_count() or 1
    hosts = _hosts("worker", worker_processes, min(workers, cores), workers)
    if sources is not None or workers == 0:
        hosts = workers
    # one process per validator by default; fewer hold fewer TensorFlow runtimes
    v_hosts = _hosts("validator", validator_processes, validators, validators)
    port = urlparse(url).port or 9944
    previous = load(port)
    if previous is not None and "params" in previous:
        if previous.get("persistent") or any(_alive(p) for p in _processes(previous)):
            return _repair(url, previous, progress)
    work = Path(base_path) if base_path else config.home() / f"devnet-{port}"
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    # funded accounts for the agents, and at least four for participants who join later
    accounts = validators + max(workers, JOINERS)
    chain = devchain.up(
        port=port,
        base_path=str(work / "chain") if base_path else None,
        accounts=accounts,
        block_mode=block_mode,
        progress=progress,
        proxies=_host_proxies(validators, _groups(workers, hosts)),
    )
    try:
        st_port = urlparse(storage).port or 5001
        store = storage_up(port=st_port, repo=work / "ipfs")
        record: dict = {
            "url": url,
            "storage": store["url"],
            "work_dir": str(work),
            "persistent": base_path is not None,
            "params": {"accounts": accounts, "block_mode": block_mode},
            "validators": [],
            "workers": [],
            "clock": None,
        }
        common = ["--dataset", dataset, "--seed", str(seed)]
        tables = ["--target", target] if target else []
        own = ["--data", sources["validator"], *tables] if sources else []
        for members in _groups(validators, v_hosts):
            names = [f"Dev{1 + j}" for j in members]
            cmd = _agent_cmd(
                "validator",
                url,
                store["url"],
                [f"//{name}" for name in names],
                [*common, *own, "--index-db", str(work / f"index-{names[0]}.sqlite")],
            )
            log = f"validator-{names[0]}.log" if len(names) == 1 else f"validators-{names[0]}.log"
            started = _start(cmd, logs / log)
            record["validators"] += [{"name": name, **started} for name in names]
        # consecutive workers share a host process: sizes differ by at most one
        for members in _groups(workers, hosts):
            names = [f"Dev{validators + 1 + j}" for j in members]
            attacks = ["none" if j < workers - attackers else attack for j in members]
            extra = [
                *common,
                "--index",
                str(members[0]),
                "--workers",
                str(workers),
                "--partition",
                partition,
                "--index-db",
                str(work / f"index-{names[0]}.sqlite"),
            ]
            for att in attacks:
                extra += ["--attack", att]
            if sources:
                extra += ["--data", sources[f"worker-{members[0]}"], *tables]
            log = f"worker-{names[0]}.log" if len(names) == 1 else f"workers-{names[0]}.log"
            keys = [f"//{name}" for name in names]
            started = _start(_agent_cmd("worker", url, store["url"], keys, extra), logs / log)
            for j, name, att in zip(members, names, attacks, strict=True):
                record["workers"].append(
                    {
                        "name": name,
                        **started,
                        "index": j,
                        "attack": None if att == "none" else att,
                    }
                )
        if clock > 0:
            record["clock"] = _start(
                [
                    sys.executable,
                    "-m",
                    "decentralml_jupyter.agents.clock",
                    "--url",
                    url,
                    "--interval",
                    str(clock),
                ],
                logs / "clock.log",
            )
    except BaseException:
        _stop_all(load(port) or {})
        devchain.down(port)
        raise
    _state_file(port).write_text(json.dumps(record))
    return status(url) | {"chain": chain}


def _host_proxies(validators: int, groups: list[range]) -> dict[str, str]:
    """member -> its host's lead, for every worker host of several: the dev chain starts
    with each member's proxy made (as it starts with the accounts funded), so that a host of
    hundreds needs no ``add_proxy`` from each (the dev chain checks ~5 transactions a second:
    ten minutes for a thousand workers). Workers anywhere else make their own (`Worker`)."""
    from ..chain.keys import load_keypair

    out = {}
    for members in groups:
        names = [f"//Dev{validators + 1 + j}" for j in members]
        lead = load_keypair(names[0]).ss58_address
        out |= {load_keypair(name).ss58_address: lead for name in names[1:]}
    return out


JOINERS = 4  # funded accounts beyond the agents', for participants who join later
DATA_SUFFIXES = (".csv", ".parquet", ".npz")


def _data_files(folder: Path, workers: int) -> dict[str, str]:
    """``worker-<i>`` and ``validator`` -> the file (or folder) each reads in ``folder``."""
    if not folder.is_dir():
        raise UsageError(f"--data {folder} is not a folder", hint="make one with worker-0.csv, ...")
    found: dict[str, str] = {}
    for name in ["validator", *(f"worker-{i}" for i in range(workers))]:
        candidates = [folder / f"{name}{sfx}" for sfx in DATA_SUFFIXES] + [folder / name]
        present = [c for c in candidates if c.exists()]
        if not present:
            raise UsageError(
                f"--data {folder} has no {name}.csv/.parquet/.npz nor a folder {name}/",
                hint="worker i (from 0) reads worker-<i>.<ext>, the validators validator.<ext>",
            )
        if len(present) > 1:
            raise UsageError(f"--data {folder} has several files for {name}: {present}")
        found[name] = str(present[0].resolve())
    return found


def _repair(url: str, record: dict, progress=None) -> dict:
    """Start again whatever of a recorded dev network is not running; leave the rest alone."""
    port = urlparse(url).port or 9944
    work = Path(record["work_dir"])
    restarted: list[str] = []
    chain = None
    if devchain.running_record(port) is None:
        if not record.get("persistent"):
            raise DfmlError(
                f"the dev network's chain on {url} is gone, and it kept no state (it was "
                "started without --base-path)",
                hint="dfml devnet down, then devnet up again (with --base-path to survive this)",
            )
        params = record["params"]
        chain = devchain.up(
            port=port,
            base_path=str(work / "chain"),
            accounts=params["accounts"],
            block_mode=params["block_mode"],
            progress=progress,
        )
        restarted.append("chain")
    if not storage_status(record["storage"])["running"]:
        storage_up(port=urlparse(record["storage"]).port or 5001, repo=work / "ipfs")
        restarted.append("storage")
    entries = [*record["validators"], *record["workers"]]
    if record.get("clock"):
        entries.append(record["clock"])
    for p in _processes(record):
        if _alive(p):
            continue
        old = (p.get("pid"), p.get("start_time"))
        fresh = _start(p["cmd"], Path(p["log"]))
        for entry in entries:  # workers sharing a host process share its pid
            if (entry.get("pid"), entry.get("start_time")) == old:
                entry.update(pid=fresh["pid"], start_time=fresh["start_time"])
        restarted.append(Path(p["log"]).stem)
    _state_file(port).write_text(json.dumps(record))
    out = status(url) | {"restarted": restarted}
    return out | {"chain": chain} if chain else out


def _processes(record: dict) -> list[dict]:
    """Every process once (workers sharing a host process share its pid)."""
    out = [*record.get("validators", []), *record.get("workers", [])]
    if record.get("clock"):
        out.append(record["clock"])
    unique = {}
    for p in out:
        unique.setdefault((p.get("pid"), p.get("start_time")), p)
    return list(unique.values())


def _stop_all(record: dict, timeout: float = 15.0) -> None:
    running = [p for p in _processes(record) if _alive(p)]
    for p in running:  # all at once: each takes a moment to wind down
        os.kill(p["pid"], signal.SIGTERM)
    for p in running:
        procs.stop(p["pid"], p.get("start_time"), grace=timeout)


def _addresses(names: list[dict]) -> list[dict]:
    from ..chain.keys import load_keypair

    return [
        {**n, "address": load_keypair(f"//{n['name']}").ss58_address, "running": _alive(n)}
        for n in names
    ]


def status(url: str = config.DEFAULT_URL) -> dict:
    port = urlparse(url).port or 9944
    record = load(port)
    if record is None:
        raise DfmlError(f"no dev network was started on {url}", hint="start one: dfml devnet up")
    return {
        "chain": devchain.status(url),
        "storage": storage_status(record["storage"]),
        "workers": _addresses(record["workers"]),
        "validators": _addresses(record["validators"]),
        "clock": record.get("clock"),
        "logs": str(Path(record["work_dir"]) / "logs"),
    }


def validator_addresses(url: str) -> list[str]:
    """The running dev network's validators on ``url`` (none if there is none)."""
    record = load(urlparse(url).port or 9944)
    return [v["address"] for v in _addresses(record["validators"])] if record else []


def down(url: str = config.DEFAULT_URL) -> dict:
    port = urlparse(url).port or 9944
    record = load(port)
    if record is not None:
        _stop_all(record)
        storage_down(record["storage"])
        _state_file(port).unlink(missing_ok=True)
    devchain.down(port)
    return {"stopped": True}
