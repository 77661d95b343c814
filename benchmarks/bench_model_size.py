"""How federated rounds scale with model size: dense MLPs of about 10k, 100k, 1M and 10M float32
parameters, 10 updates each. Printed, not a test.

Per size it measures, in one run on this machine:
  - upload: weights_to_bytes + put of one update to the real storage service (a throw-away
    dev service on a free 127.0.0.1 port), and download: get + weights_from_bytes; MB/s of
    serialized bytes (median over the updates), with serialization alone beside it;
  - aggregation of the 10 updates with FedAvg, FedMedian, trimmed mean and Multi-Krum; FedAvg
    throughput in GB/s of update bytes read (10 x 4 bytes x params), for the compiled pass
    (fl/_fedavg_kernel.py, numba, split over this machine's cores) and for the numpy path it
    replaces (which must give the same bytes: checked);
  - a numpy memory-bandwidth bound: a streaming ``np.add(a, b, out=c)`` over float32 arrays far
    larger than cache, counted as bytes read + written per second (best of its runs, which
    are interleaved with FedAvg's so both see the same machine load); the ratio FedAvg / bound
    (the target is >= 0.5);
  - round time: in-process (10 workers serialize, the validator deserializes 10 updates,
    aggregates with FedAvg and serializes the new global model) and through storage (the
    measured uploads and downloads in sequence, FedAvg, upload of the global model).

Usage: python benchmarks/bench_model_size.py [--sizes 10k,100k,1m,10m] [--updates 10]
                                             [--repeat 3] [--bound-mb 128]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from decentralml_jupyter import procs
from decentralml_jupyter.fl import (
    ClientUpdate,
    FedAvg,
    FedMedian,
    FedTrimmedAvg,
    MultiKrum,
    strategies,
    weights_from_bytes,
    weights_to_bytes,
)
from decentralml_jupyter.storage import KuboStore, storage_down, storage_up

INPUT_DIM, CLASSES = 64, 10  # digits-sized features and classes
SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}


def mlp_shapes(params: int) -> list[tuple[int, ...]]:
    """Weight shapes of ``mlp(64, 10, hidden=(h, h))`` (Keras Dense: kernel, bias per layer)
    with h chosen so the parameter count is closest to ``params``."""

    def count(h: int) -> int:
        return INPUT_DIM * h + h + h * h + h + h * CLASSES + CLASSES

    h = max(
        1,
        round(
            (-(INPUT_DIM + CLASSES + 2) + math.sqrt((INPUT_DIM + CLASSES + 2) ** 2 + 4 * params))
            / 2
        ),
    )
    h = min((h - 1, h, h + 1), key=lambda x: abs(count(x) - params))
    return [(INPUT_DIM, h), (h,), (h, h), (h,), (h, CLASSES), (CLASSES,)]


def make_updates(shapes: list[tuple[int, ...]], n: int, seed: int) -> list[ClientUpdate]:
    rng = np.random.default_rng(seed)
    base = [rng.standard_normal(s, dtype=np.float32) * 0.05 for s in shapes]
    return [
        ClientUpdate(
            f"w{i:02d}",
            [b + rng.standard_normal(b.shape, dtype=np.float32) * 0.01 for b in base],
            int(rng.integers(50, 500)),
        )
        for i in range(n)
    ]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    return min(timed(fn)[0] for _ in range(repeat))


class Bound:
    """Streaming np.add over float32 arrays much larger than cache: (2 reads + 1 write) / s."""

    def __init__(self, mb: int):
        n = mb * 1_000_000 // 4
        self.a = np.full(n, 1.0, np.float32)
        self.b = np.full(n, 2.0, np.float32)
        self.c = np.empty(n, np.float32)
        self.bytes = 3 * self.a.nbytes
        self.best = math.inf

    def sample(self) -> None:
        self.best = min(self.best, timed(lambda: np.add(self.a, self.b, out=self.c))[0])

    @property
    def gbs(self) -> float:
        return self.bytes / self.best / 1e9


def numba_version() -> str:
    kernel = strategies._fedavg_kernel()
    return kernel.numba.__version__ if kernel is not None else "missing (numpy path only)"


@contextlib.contextmanager
def numpy_fedavg():
    """FedAvg on the numpy path (as when numba is missing)."""
    saved = strategies._KERNEL
    strategies._KERNEL = False
    try:
        yield
    finally:
        strategies._KERNEL = saved


def bench_size(
    label: str, params: int, n_updates: int, repeat: int, store: KuboStore, bound: Bound
) -> dict[str, float]:
    shapes = mlp_shapes(params)
    real = sum(math.prod(s) for s in shapes)
    updates = make_updates(shapes, n_updates, seed=params)
    global_w = [np.zeros(s, np.float32) for s in shapes]
    nbytes = len(weights_to_bytes(updates[0].weights))
    mb = nbytes / 1e6

    # 1. storage: serialize + put, get + deserialize, each update once, in order.
    ups, downs, cids = [], [], []
    for u in updates:
        t, cid = timed(lambda u=u: store.put(weights_to_bytes(u.weights)))
        ups.append(t)
        cids.append(cid)
    fetched = []
    for cid in cids:
        t, w = timed(lambda cid=cid: weights_from_bytes(store.get(cid)))
        downs.append(t)
        fetched.append(w)
    for u, w in zip(updates, fetched, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(u.weights, w, strict=True))
    del fetched
    blob = weights_to_bytes(updates[0].weights)
    ser = best_of(repeat, lambda: weights_to_bytes(updates[0].weights))
    deser = best_of(repeat, lambda: weights_from_bytes(blob))

    # 2./3. aggregation, FedAvg interleaved with the bandwidth bound.
    fedavg = fedavg_np = math.inf
    for n in range(2 * repeat + 1):  # best of several: the machine may be shared
        bound.sample()
        # alternate which path runs first after the bound's sweep has emptied the caches
        for numpy_path in (n % 2 == 1, n % 2 == 0):
            with numpy_fedavg() if numpy_path else contextlib.nullcontext():
                took = best_of(1, lambda: FedAvg().aggregate(global_w, updates))
            if numpy_path:
                fedavg_np = min(fedavg_np, took)
            else:
                fedavg = min(fedavg, took)
    with numpy_fedavg():
        plain = FedAvg().aggregate(global_w, updates)
    compiled = FedAvg().aggregate(global_w, updates)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(plain, compiled, strict=True))
    slow_repeat = repeat if params < 5_000_000 else 1
    median = best_of(slow_repeat, lambda: FedMedian().aggregate(global_w, updates))
    trimmed = best_of(slow_repeat, lambda: FedTrimmedAvg(0.2).aggregate(global_w, updates))
    f = max(0, (n_updates - 3) // 4)  # tolerated Byzantine updates (Krum needs n > 2f + 2)
    krum = best_of(
        slow_repeat,
        lambda: MultiKrum(num_malicious=f, num_to_keep=n_updates - f).aggregate(global_w, updates),
    )

    # 4. round time: in-process, and through storage (measured transfers in sequence).
    def in_process_round() -> None:
        blobs = [weights_to_bytes(u.weights) for u in updates]
        received = [
            ClientUpdate(u.client_id, weights_from_bytes(b), u.num_examples)
            for u, b in zip(updates, blobs, strict=True)
        ]
        weights_to_bytes(FedAvg().aggregate(global_w, received))

    round_local = best_of(repeat, in_process_round)
    new_global = FedAvg().aggregate(global_w, updates)
    upload_global, _ = timed(lambda: store.put(weights_to_bytes(new_global)))
    round_storage = sum(ups) + sum(downs) + fedavg + upload_global

    read_gb = n_updates * 4 * real / 1e9
    return {
        "label": label,
        "params": real,
        "mb": mb,
        "up": mb / statistics.median(ups),
        "down": mb / statistics.median(downs),
        "ser": mb / ser,
        "deser": mb / deser,
        "fedavg_s": fedavg,
        "fedavg_gbs": read_gb / fedavg,
        "fedavg_np_s": fedavg_np,
        "fedavg_np_gbs": read_gb / fedavg_np,
        "median_s": median,
        "trimmed_s": trimmed,
        "krum_s": krum,
        "round_local_s": round_local,
        "round_storage_s": round_storage,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,100k,1m,10m", help=f"of {', '.join(SIZES)}")
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bound-mb", type=int, default=128, help="size of each np.add array")
    args = parser.parse_args()
    labels = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in labels if s not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose from {', '.join(SIZES)}")

    t_start = time.perf_counter()
    strategies.warm_up()  # compile (or load) the FedAvg pass outside the timings
    bound = Bound(args.bound_mb)
    bound.sample()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        os.environ["DFML_HOME"] = str(tmpdir / "home")  # a throw-away service and repository
        port = procs.free_port()
        up = storage_up(port=port, repo=tmpdir / "repo")
        try:
            with KuboStore(up["url"], timeout=60) as store:
                for label in labels:
                    rows.append(
                        bench_size(label, SIZES[label], args.updates, args.repeat, store, bound)
                    )
        finally:
            storage_down(up["url"])

    print(
        f"model-size benchmark: {args.updates} updates per size, float32 MLPs "
        f"(64 -> h -> h -> 10), {os.cpu_count()} CPUs, numpy {np.__version__}, "
        f"numba {numba_version()}"
    )
    print(
        f"numpy bound: np.add(a, b, out=c) over {args.bound_mb} MB float32 arrays, "
        f"(read + written) bytes / s = {bound.gbs:.1f} GB/s (best of the run)"
    )
    print()
    print(
        f"{'params':>10} {'MB/upd':>7} {'up MB/s':>8} {'down MB/s':>9} {'ser MB/s':>9} "
        f"{'deser MB/s':>10} {'FedAvg ms':>9} {'FedAvg GB/s':>11} {'bound GB/s':>10} "
        f"{'ratio':>6} {'numpy ms':>8} {'numpy ratio':>11}"
    )
    for r in rows:
        print(
            f"{r['params']:>10,} {r['mb']:7.2f} {r['up']:8.1f} {r['down']:9.1f} "
            f"{r['ser']:9.0f} {r['deser']:10.0f} {r['fedavg_s'] * 1e3:9.2f} "
            f"{r['fedavg_gbs']:11.2f} {bound.gbs:10.1f} {r['fedavg_gbs'] / bound.gbs:6.3f} "
            f"{r['fedavg_np_s'] * 1e3:8.2f} {r['fedavg_np_gbs'] / bound.gbs:11.3f}"
        )
    print()
    print(
        f"{'params':>10} {'FedAvg ms':>9} {'FedMedian ms':>12} {'trimmed ms':>10} "
        f"{'MultiKrum ms':>12} {'round in-process s':>18} {'round via storage s':>19}"
    )
    for r in rows:
        print(
            f"{r['params']:>10,} {r['fedavg_s'] * 1e3:9.2f} {r['median_s'] * 1e3:12.1f} "
            f"{r['trimmed_s'] * 1e3:10.1f} {r['krum_s'] * 1e3:12.1f} "
            f"{r['round_local_s']:18.3f} {r['round_storage_s']:19.3f}"
        )
    print()
    for r in rows:
        verdict = "meets" if r["fedavg_gbs"] >= 0.5 * bound.gbs else "below"
        print(
            f"{r['params']:>10,} params: FedAvg / bound = {r['fedavg_gbs'] / bound.gbs:.3f} "
            f"({verdict} the 0.5 target; numpy path {r['fedavg_np_gbs'] / bound.gbs:.3f}, "
            f"{r['fedavg_np_s'] / r['fedavg_s']:.1f}x the time); serialization is "
            f"{100 * r['up'] / r['ser']:.1f}% of upload time, deserialization "
            f"{100 * r['down'] / r['deser']:.1f}% of download"
        )
    print(f"\nwhole run: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
