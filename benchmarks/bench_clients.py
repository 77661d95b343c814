"""A thousand clients in a round: a plan of rounds on the dev network at 10 and at 1,000
clients (and any sizes between), each against the in-process simulation of the same rounds;
ratios measured in one run. Printed, not a test:

    python benchmarks/bench_clients.py [--clients 10,1000] [--processes 4] [--rounds 3]

The task is fixed: digits split among the clients (so 1,000 clients hold ~1.4 examples each
and a round trains on the same data at every size), an MLP(32), FedAvg, one local epoch.
What grows with the clients is what the protocol adds per client: a submission on the
chain, an upload and a download through storage, a check and a score by each validator,
an entry in each verdict (a table past 64) and a reward payout. Workers share a handful
of processes (``--processes``), as many workers per process as it takes; every round
selects every worker. Round time is the median of rounds 2.. of one plan
(``round start --rounds N``), from the end of one round to the end of the next. Peak
memory is each process's high-water mark.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_rounds  # noqa: E402  (its dev network and in-process runs)

TARGET = 3.0  # a round at the largest size takes at most this many times one at the smallest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", default="10,1000", help="comma-separated client counts")
    ap.add_argument("--processes", type=int, default=4, help="worker processes at most")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--reward", type=int, default=10, help="tokens each round pays")
    args = ap.parse_args()
    if args.rounds < 2:
        ap.error("--rounds must be at least 2 (round 1 is warm-up)")
    sizes = [int(c) for c in args.clients.split(",")]
    print(
        f"digits MLP{bench_rounds.HIDDEN}, IID, FedAvg, {args.epochs} local epoch(s), 3 "
        f"validators, every worker selected, {os.cpu_count()} CPU cores; seconds per round "
        f"are the median of rounds 2..{args.rounds} of one plan"
    )
    rows = {}
    for n in sizes:
        base = bench_rounds.in_process(n, args.rounds, args.epochs)
        per_process = math.ceil(n / min(args.processes, n))
        dev = bench_rounds.dev_network(
            n, per_process, args.rounds, args.epochs, "batch", args.reward * 10**12, True
        )
        rows[n] = (base, dev)
        print(f"\n{n} clients ({dev['hosts']} worker processes, {per_process} workers each)")
        print(
            f"  dev network: {dev['round_s']:7.2f} s/round ({dev['blocks']:.0f} blocks; set-up "
            f"{dev['setup_s']:.0f} s; rewards paid {dev['payout_s']:.1f} s after the last round)"
        )
        print(
            f"  in-process:  {base['round_s']:7.2f} s/round; dev network / in-process "
            f"{dev['round_s'] / base['round_s']:.1f}x"
        )
        print(
            "  peak RSS MiB: "
            + ", ".join(f"{k} {v:.0f}" for k, v in dev["rss"].items())
            + f"; accuracy {dev['accuracy']} (in-process {base['accuracy']})"
        )
    small, large = min(sizes), max(sizes)
    if small != large:
        dev_ratio = rows[large][1]["round_s"] / rows[small][1]["round_s"]
        sim_ratio = rows[large][0]["round_s"] / rows[small][0]["round_s"]
        verdict = "met" if dev_ratio <= TARGET else "NOT met"
        print(
            f"\nround at {large} clients / round at {small}: dev network {dev_ratio:.1f}x "
            f"(target <= {TARGET:g}x: {verdict}); in-process {sim_ratio:.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
