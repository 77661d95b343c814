"""Storage throughput: put and get MB/s through the Kubo RPC (dev service, in-process Kubo),
against a plain file copy of the same bytes (gets take a file's leaves from one cat stream;
the block-by-block rows read every block by block/get, as gets did before); and the latency
of a small object (a 10 kB update, the size of the digits MLP's) against the RPC's cheapest
call. In one run; prints
tables; not a test.

Usage: python benchmarks/bench_storage.py [--size-mb 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from decentralml_jupyter import procs
from decentralml_jupyter.storage import KuboStore, compute_cid, storage_down, storage_up


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def small_objects(store: KuboStore, n: int = 50) -> dict[str, float]:
    """Median milliseconds per call for `n` distinct 10 kB objects (no cache helps)."""
    blobs = [np.random.default_rng(i).bytes(10_000) for i in range(n)]

    def median_ms(fn, items) -> float:
        times = []
        for item in items:
            t0 = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - t0)
        return 1000 * sorted(times)[len(times) // 2]

    cids: list[str] = []
    return {
        "RPC round trip (version)": median_ms(lambda _: store.version(), range(n)),
        "put 10 kB": median_ms(lambda b: cids.append(store.put(b)), blobs),
        "get 10 kB": median_ms(store.get, cids),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mb * 1_000_000

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        os.environ["DFML_HOME"] = str(tmpdir / "home")  # a throw-away service and repo
        port = procs.free_port()
        src, dst = tmpdir / "src.bin", tmpdir / "dst.bin"
        src.write_bytes(np.random.default_rng(0).bytes(size))
        up = storage_up(port=port, repo=tmpdir / "repo")
        try:
            store = KuboStore(up["url"], timeout=30)
            cid = store.put_file(src).cid  # first add, then repeated adds of stored blocks
            rows = {
                "file copy (shutil.copyfile)": (
                    best_of(args.repeat, lambda: shutil.copyfile(src, dst)),
                    best_of(args.repeat, lambda: shutil.copyfile(src, dst)),
                ),
                "local CID only (no I/O to a node)": (
                    best_of(args.repeat, lambda: compute_cid(open(src, "rb"))),
                    float("nan"),
                ),
                "Kubo RPC, dev service": (
                    best_of(args.repeat, lambda: store.put_file(src)),
                    best_of(args.repeat, lambda: store.get_file(cid, dst)),
                ),
                "Kubo RPC, get block by block": (  # every block by block/get, 4 ahead
                    float("nan"),
                    best_of(
                        args.repeat,
                        lambda: KuboStore(up["url"], timeout=30, stream_reads=False).get_file(
                            cid, dst
                        ),
                    ),
                ),
                "Kubo RPC, block by block, no prefetch": (
                    float("nan"),
                    best_of(
                        args.repeat,
                        lambda: KuboStore(
                            up["url"], timeout=30, prefetch=1, stream_reads=False
                        ).get_file(cid, dst),
                    ),
                ),
            }
            assert dst.read_bytes() == src.read_bytes()
            small = small_objects(store)
        finally:
            storage_down(port)

    mb = size / 1e6
    copy_put, copy_get = rows["file copy (shutil.copyfile)"]
    print(f"storage benchmark: {args.size_mb} MB, best of {args.repeat}, {os.cpu_count()} CPUs")
    print(f"{'path':36} {'put MB/s':>10} {'get MB/s':>10} {'put/copy':>9} {'get/copy':>9}")
    for name, (put_s, get_s) in rows.items():
        put_rate, get_rate = mb / put_s, mb / get_s
        print(
            f"{name:36} {put_rate:10.1f} {get_rate:10.1f} "
            f"{copy_put / put_s:9.3f} {copy_get / get_s:9.3f}"
        )
    rtt = small["RPC round trip (version)"]
    print(f"\nsmall objects, median of 50: {'ms':>6} {'/ RPC round trip':>17}")
    for name, ms in small.items():
        print(f"{name:28} {ms:6.2f} {ms / rtt:17.1f}")


if __name__ == "__main__":
    main()
