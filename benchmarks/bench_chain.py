"""Dev chain throughput and start-up: transfers and remarks per second in both block modes,
and the time from `dfml chain up` to the first block, warm (and cold with --cold).

Printed, not a test: `python benchmarks/bench_chain.py [-n 200] [--cold]`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from decentralml_jupyter import procs
from decentralml_jupyter.chain import Chain, devchain


def time_up(env: dict | None = None) -> float:
    """Seconds from launching `dfml chain up` to a chain that answers with its first block."""
    url = f"ws://127.0.0.1:{procs.free_port()}"
    cmd = [sys.executable, "-m", "decentralml_jupyter.cli", "--url", url]
    t0 = time.perf_counter()
    subprocess.run([*cmd, "chain", "up"], check=True, capture_output=True, env=env)
    elapsed = time.perf_counter() - t0
    subprocess.run([*cmd, "chain", "down"], check=True, capture_output=True, env=env)
    return elapsed


def throughput(mode: str, kind: str, n: int) -> tuple[float, float]:
    """(pipelined tx/s, sequential tx/s with a receipt each) for ``kind`` in ``mode``."""
    port = procs.free_port()
    devchain.up(port=port, block_mode=mode)
    try:
        with Chain(f"ws://127.0.0.1:{port}") as chain:
            alice = chain.keypair("//Alice")

            def make(i: int):
                if kind == "transfer":
                    return chain.transfer_call("Bob", 10**10 + i)
                return chain.remark_call(b"dfml\x01bench" + i.to_bytes(4, "little"))

            nonce = chain.nonce(alice)
            signed = [chain.sign(alice, make(i), nonce=nonce + i) for i in range(n)]
            t0 = time.perf_counter()
            for ext in signed:
                chain.substrate.submit_extrinsic(ext, wait_for_inclusion=False)
            while chain.nonce(alice) < nonce + n:
                time.sleep(0.02)
            pipelined = n / (time.perf_counter() - t0)
            m = max(5, n // 10)
            if mode == "batch":
                sequential = float("nan")  # each receipt waits for the batch timer
            else:
                t0 = time.perf_counter()
                for i in range(m):
                    chain.submit(alice, make(i))
                sequential = m / (time.perf_counter() - t0)
            return pipelined, sequential
    finally:
        devchain.down(port)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=200, help="transactions per measurement")
    ap.add_argument("--cold", action="store_true", help="also time a first install (npm, ~1 min)")
    args = ap.parse_args()
    devchain.install()
    print(f"dev chain benchmark, {args.n} transactions per measurement, {os.cpu_count()} cores")
    print(f"{'mode':8} {'call':9} {'pipelined tx/s':>15} {'with receipt tx/s':>18}")
    results = {}
    for mode in ("instant", "batch"):
        for kind in ("transfer", "remark"):
            pipe, seq = throughput(mode, kind, args.n)
            results[(mode, kind)] = pipe
            print(f"{mode:8} {kind:9} {pipe:15.1f} {seq:18.1f}")
    for kind in ("transfer", "remark"):
        ratio = results[("batch", kind)] / results[("instant", kind)]
        print(f"batch/instant ratio ({kind}): {ratio:.2f}x")
    warm = min(time_up() for _ in range(3))
    print(f"chain up -> first block, warm: {warm:.2f} s")
    if args.cold:
        with tempfile.TemporaryDirectory() as home:
            cold = time_up(dict(os.environ, DFML_HOME=home))
        print(f"chain up -> first block, cold (first install): {cold:.1f} s")
        print(f"cold / warm: {cold / warm:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
