"""A federated round on the dev network against the same round computed in-process (no chain,
no storage): the overhead of doing it for real, as a ratio measured in one run.

Printed, not a test: `python benchmarks/bench_rounds.py [--workers 10] [--rounds 2]`.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

from decentralml_jupyter import fl
from decentralml_jupyter.cli import run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 600.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError("dev network too slow")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--block-mode", choices=["instant", "batch"], default="instant")
    args = ap.parse_args()
    n, epochs = args.workers, args.epochs

    t0 = time.perf_counter()
    sim = fl.simulate(
        "digits",
        n_clients=n,
        partition="iid",
        rounds=args.rounds,
        epochs=epochs,
        hidden=(32,),
        contributions=True,
    )
    in_process = (time.perf_counter() - t0) / args.rounds

    url, storage = f"ws://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"

    def dfml(*a, key="//Alice"):
        return run(["--url", url, "--storage", storage, "--key", key, *a])

    dfml(
        "devnet",
        "up",
        "--workers",
        str(n),
        "--validators",
        "3",
        "--clock",
        "1",
        "--block-mode",
        args.block_mode,
    )
    try:
        path = Path(tempfile.mkdtemp()) / "m.keras"
        fl.mlp(64, 10, hidden=(32,)).save(path)
        mid = str(dfml("model", "submit", str(path))["model_id"])
        wait_until(lambda: len(dfml("stakes", "--model", mid)) == n)
        pid = dfml("propose", mid, "ApproveModel", "--deadline", "30")["proposal_id"]
        dfml("vote", str(pid), "aye", key=f"//Dev{4}")
        dfml("chain", "advance", "31")
        wait_until(lambda: dfml("model", "show", mid)["status"] == "approved")
        dfml("model", "start", mid)
        times, accs = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            rid = dfml(
                "round",
                "start",
                mid,
                "--clients",
                str(n),
                "--epochs",
                str(epochs),
                "--deadline",
                "200",
                "--aggregate-deadline",
                "200",
            )["round_id"]
            final = dfml("round", "watch", str(rid))
            times.append(time.perf_counter() - t)
            accs.append(final["metrics"]["accuracy"])
    finally:
        dfml("devnet", "down")
    dev = sum(times) / len(times)
    print(f"one round, {n} workers, digits MLP, {epochs} local epochs, {args.block_mode} blocks")
    print(
        f"  in-process (no chain, no storage): {in_process:6.2f} s/round, "
        f"accuracy {[round(r['accuracy'], 3) for r in sim]}"
    )
    print(
        f"  dev network (chain + IPFS + processes): {dev:6.2f} s/round, accuracy "
        f"{[round(a, 3) for a in accs]}"
    )
    print(f"  dev network / in-process: {dev / in_process:.1f}x (target 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
