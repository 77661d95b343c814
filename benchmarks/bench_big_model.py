"""100 M-parameter models: storage throughput against SHA-256, and a round of 10 workers on the
dev network, with every process's peak memory. Ratios measured in one run; printed, not a test.

    python benchmarks/bench_big_model.py [--params 100000000] [--workers 10] [--repeat 3]
    python benchmarks/bench_big_model.py --storage-only   # section 1 alone, no dev network

The model is a dense classifier for the digits data (7 hidden layers of equal width, the width
chosen for ``--params``): 100 M parameters are 400 MB of float32, the size of every update.

1. Storage, on the dev network's storage service (loopback): uploads (``KuboStore.put``, what
   workers and validators call) and downloads (``get`` with ``max_bytes``, what validators
   call; ``get_buffer``, into one buffer, is what they read updates with) of a 400 MB
   update against ``hashlib.sha256`` of the same bytes, the one cost that
   content addressing cannot avoid; best of ``--repeat``, each a fresh update (no block is
   shared with one stored before). Targets: each at least half the SHA-256 rate.
2. A round: ``--workers`` workers (``--worker-processes`` processes host them) train one local
   epoch and upload their updates; the validators (``--validators``) read each update, check
   it, aggregate with FedAvg streaming the updates (one float64 accumulator), score
   contributions by leave-one-out and attest. Timed from ``round start`` to ``round watch``
   returning. Targets: the round ends (finalized) on this machine; a validator's peak RSS
   stays under 4 GB.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from decentralml_jupyter import fl, procs
from decentralml_jupyter.cli import run
from decentralml_jupyter.storage import KuboStore

LAYERS = 7  # hidden layers
RSS_TARGET_MIB = 4 * 1000**3 / (1 << 20)  # "4 GB"


def wait_until(predicate, timeout: float = 1800.0, what: str = "the dev network"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MiB."""
    import psutil

    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return psutil.Process(pid).memory_info().rss / (1 << 20)  # not Linux: the current RSS


def width_for(params: int, inputs: int, classes: int) -> int:
    """The hidden width w whose MLP (LAYERS layers of w) has about ``params`` parameters."""
    # inputs*w + (LAYERS-1)*w*w + w*classes + biases = params, for w
    a, b = LAYERS - 1, inputs + classes + LAYERS
    w = (-b + math.sqrt(b * b + 4 * a * params)) / (2 * a)
    return max(8, int(round(w / 8)) * 8)


def storage_rates(url: str, like: list[np.ndarray], repeat: int) -> dict[str, float]:
    """MB/s of sha256, put and get of updates the size of ``like``: best of ``repeat``."""
    store = KuboStore(url, timeout=120)
    rng = np.random.default_rng(1)
    best = {
        "sha256": math.inf,
        "put": math.inf,
        "get": math.inf,
        "get_buffer": math.inf,
        "get, block by block": math.inf,
    }
    size = 0
    for r in range(repeat):
        data = fl.weights_to_bytes(
            [rng.standard_normal(np.shape(w), dtype=np.float32) for w in like]
        )
        size = len(data)
        t = time.perf_counter()
        hashlib.sha256(data).digest()
        best["sha256"] = min(best["sha256"], time.perf_counter() - t)
        t = time.perf_counter()
        cid = store.put(data)
        best["put"] = min(best["put"], time.perf_counter() - t)
        t = time.perf_counter()
        got = store.get(cid, max_bytes=size)
        best["get"] = min(best["get"], time.perf_counter() - t)
        assert got == data
        del got
        t = time.perf_counter()
        store.get_buffer(cid, max_bytes=size)  # what validators read updates with
        best["get_buffer"] = min(best["get_buffer"], time.perf_counter() - t)
        if r == 0:  # the read path before the cat stream: every block by block/get
            with KuboStore(url, timeout=120, stream_reads=False) as old:
                t = time.perf_counter()
                old.get(cid, max_bytes=size)
                best["get, block by block"] = time.perf_counter() - t
        del data
    store.close()
    return {name: size / 1e6 / s for name, s in best.items()} | {"MB": size / 1e6}


def mlp_shapes(params: int, inputs: int = 64, classes: int = 10) -> list[np.ndarray]:
    """Arrays shaped as the MLP's weights for ``params`` (digits: 64 inputs, 10 classes),
    without building it in Keras."""
    width = width_for(params, inputs, classes)
    dims = [inputs] + [width] * LAYERS + [classes]
    shapes: list[tuple[int, ...]] = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        shapes += [(a, b), (b,)]
    return [np.broadcast_to(np.float32(0), s) for s in shapes]


def print_rates(rates: dict[str, float], repeat: int) -> bool:
    sha = rates["sha256"]
    print(
        f"\nstorage, {rates['MB']:.0f} MB updates, best of {repeat} "
        "(dev storage service, loopback):"
    )
    print(f"  {'sha256 (hashlib)':24} {sha:8.0f} MB/s")
    for name in ("put", "get", "get_buffer", "get, block by block"):
        print(f"  {name:24} {rates[name]:8.0f} MB/s  {rates[name] / sha:5.2f} x sha256")
    ok = True
    for name in ("put", "get", "get_buffer"):
        met = rates[name] >= 0.5 * sha
        ok &= met
        print(
            f"  target {name} >= 0.5 x sha256: {'met' if met else 'NOT met'} "
            f"({rates[name] / sha:.2f})"
        )
    return ok


def storage_only(args) -> int:
    """Section 1 against a storage service started for it alone, in a temporary home."""
    from decentralml_jupyter.storage import storage_down, storage_up

    like = mlp_shapes(args.params)
    print(
        f"{sum(int(np.prod(np.shape(w))) for w in like) / 1e6:.1f} M parameters; "
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} "
        f"{os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DFML_HOME"] = str(Path(tmp) / "home")
        port = procs.free_port()
        up = storage_up(port=port, repo=Path(tmp) / "repo")
        try:
            ok = print_rates(storage_rates(up["url"], like, args.repeat), args.repeat)
        finally:
            storage_down(port)
    la = os.getloadavg()
    print(f"load average after: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=int, default=100_000_000, help="model parameters (about)")
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--validators", type=int, default=2)
    ap.add_argument("--worker-processes", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="storage measurements (best of)")
    ap.add_argument("--lr", type=float, default=0.001, help="workers' SGD learning rate")
    ap.add_argument("--skip-round", action="store_true", help="storage measurements only")
    ap.add_argument(
        "--storage-only",
        action="store_true",
        help="section 1 only, on a storage service of its own (no chain, no agents, no Keras)",
    )
    args = ap.parse_args()
    if args.storage_only:
        return storage_only(args)

    data = fl.load_dataset("digits")
    width = width_for(args.params, data.input_dim, data.num_classes)
    model = fl.mlp(data.input_dim, data.num_classes, hidden=(width,) * LAYERS)
    params = model.count_params()
    like = model.get_weights()
    print(
        f"MLP {data.input_dim}-{width}x{LAYERS}-{data.num_classes}: {params / 1e6:.1f} M "
        f"parameters, {4 * params / 1e6:.0f} MB of float32; {os.cpu_count()} CPU cores, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    url, storage = f"ws://127.0.0.1:{procs.free_port()}", f"http://127.0.0.1:{procs.free_port()}"

    def dfml(*a, key="//Alice"):
        return run(["--url", url, "--storage", storage, "--key", key, *a])

    t0 = time.perf_counter()
    dfml(
        "devnet", "up", "--workers", str(args.workers), "--validators", str(args.validators),
        "--worker-processes", str(args.worker_processes), "--clock", "1",
    )  # fmt: skip
    ok = True
    try:
        print(f"dev network up in {time.perf_counter() - t0:.0f} s")
        ok &= print_rates(storage_rates(storage, like, args.repeat), args.repeat)
        if args.skip_round:
            return 0 if ok else 1
        ok &= one_round(dfml, url, model, args)
    finally:
        work = Path(dfml("devnet", "status")["logs"]).parent
        dfml("devnet", "down")
        shutil.rmtree(work / "ipfs", ignore_errors=True)  # every update of the run: GBs
    return 0 if ok else 1


def one_round(dfml, url: str, model, args) -> bool:
    path = Path(tempfile.mkdtemp()) / "big.keras"
    model.save(path)
    t = time.perf_counter()
    mid = str(dfml("model", "submit", str(path))["model_id"])
    size = path.stat().st_size / 1e6
    print(f"\nmodel submitted ({size:.0f} MB) in {time.perf_counter() - t:.1f} s")
    path.unlink()
    wait_until(lambda: len(dfml("stakes", "--model", mid)) == args.workers, what="stakes")
    pid = dfml("propose", mid, "ApproveModel", "--deadline", "30")["proposal_id"]
    for j in range(args.workers // 10 + 1):  # the quorum is 10 % of the stake
        dfml("vote", str(pid), "aye", key=f"//Dev{4 + j}")
    dfml("chain", "advance", "31")
    wait_until(lambda: dfml("model", "show", mid)["status"] == "approved", what="approval")
    dfml("model", "start", mid)
    t = time.perf_counter()
    rid = dfml(
        "round", "start", mid, "--clients", str(args.workers), "--epochs", "1",
        "--lr", str(args.lr), "--deadline", "1500", "--aggregate-deadline", "1500",
    )["round_id"]  # fmt: skip
    final = dfml("round", "watch", str(rid), "--timeout", "3000")
    round_s = time.perf_counter() - t
    status = final["status"]
    print(f"round of {args.workers} workers: {status} in {round_s:.1f} s (start to watch end)")
    net = dfml("devnet", "status")
    from urllib.parse import urlparse

    from decentralml_jupyter.chain import devchain

    rss = {"chain": peak_rss_mib(devchain.running_record(urlparse(url).port)["pid"])}
    if net["storage"].get("pid"):
        rss["storage service"] = peak_rss_mib(net["storage"]["pid"])
    hosts = sorted({w["pid"] for w in net["workers"]})  # several workers share a process
    for i, host in enumerate(hosts):
        rss[f"worker process {i + 1}"] = peak_rss_mib(host)
    validators = []
    for i, v in enumerate(net["validators"]):
        rss[f"validator {i + 1}"] = peak_rss_mib(v["pid"])
        validators.append(rss[f"validator {i + 1}"])
    print("peak RSS MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
    finished = status == "finalized"
    small = max(validators) < RSS_TARGET_MIB
    print(f"  target the round completes on this machine: {'met' if finished else 'NOT met'}")
    print(
        f"  target a validator's peak RSS < 4 GB: {'met' if small else 'NOT met'} "
        f"(largest {max(validators) / 1024:.2f} GiB)"
    )
    return finished and small


if __name__ == "__main__":
    sys.exit(main())
