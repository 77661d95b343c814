"""Many small uploads: ``KuboStore.put`` one by one against ``put_many`` (one add request).

What a worker host of 250 federated-learning clients uploads each round: 250 updates of about
10 kB. On a storage service started for it alone (loopback, a temporary home); each
repetition stores objects never stored before (nothing is deduplicated). Prints milliseconds
per object (median of ``--repeat``) and the ratio, measured in one run; not a test.

    python benchmarks/bench_put_many.py [--objects 250] [--size 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from decentralml_jupyter import procs
from decentralml_jupyter.storage import KuboStore, compute_cid, storage_down, storage_up


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--objects", type=int, default=250)
    ap.add_argument("--size", type=int, default=10_000, help="bytes per object")
    ap.add_argument("--repeat", type=int, default=3, help="measurements (median of)")
    args = ap.parse_args()
    la = os.getloadavg()
    print(
        f"{args.objects} objects of {args.size} bytes, median of {args.repeat}; "
        f"{os.cpu_count()} CPU cores, load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    times: dict[str, list[float]] = {"put, one by one": [], "put_many": []}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DFML_HOME"] = str(Path(tmp) / "home")
        port = procs.free_port()
        up = storage_up(port=port, repo=Path(tmp) / "repo")
        try:
            with KuboStore(up["url"], timeout=60) as store:
                store.put(os.urandom(args.size))  # the connection, opened before timing
                for _ in range(args.repeat):
                    for name in times:  # fresh objects each time: nothing deduplicated
                        blobs = [os.urandom(args.size) for _ in range(args.objects)]
                        t = time.perf_counter()
                        if name == "put_many":
                            cids = store.put_many(blobs)
                        else:
                            cids = [store.put(b) for b in blobs]
                        times[name].append(time.perf_counter() - t)
                        assert cids == [compute_cid(b) for b in blobs]
        finally:
            storage_down(port)
    ms = {name: statistics.median(t) * 1e3 / args.objects for name, t in times.items()}
    for name, value in ms.items():
        print(f"  {name:18} {value:7.3f} ms per object  ({value * args.objects:8.1f} ms in all)")
    print(f"  put_many is {ms['put, one by one'] / ms['put_many']:.1f}x faster per object")
    la = os.getloadavg()
    print(f"load average after: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
