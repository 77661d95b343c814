"""A federated round on the dev network against the same round computed in-process (no chain,
no storage) and against Flower's simulation of the same task: ratios measured in one run.

Printed, not a test:

    python benchmarks/bench_rounds.py [--workers 10,50,100] [--per-host 1,10] [--rounds 3]

Every number is a steady-state round (the median of rounds 2..): round 1 includes TensorFlow's
graph tracing in every process, on both sides. On the dev network a round is timed from the
`round start` call to `round watch` returning "finalized", both through the CLI, as a user
would (with ``--plan``, one `round start --rounds N` schedules them all and each round is
timed from the end of the one before); every update goes through storage and the chain, and
each round pays ``--reward`` tokens to its contributors out of the validators' multisig pool.
``--per-host`` is how many workers share one process (they submit through one proxy
transaction per block). Accuracy is every run's global model on the same test split, from
the same initial weights.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from decentralml_jupyter import fl, procs
from decentralml_jupyter.cli import run
from decentralml_jupyter.protocol.calls import MAX_CLIENTS  # most workers a round selects
from decentralml_jupyter.protocol.values import ProtocolParams
from decentralml_jupyter.storage import KuboStore

HIDDEN = (32,)


def wait_until(predicate, timeout: float = 900.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError("dev network too slow")


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def in_process(n: int, rounds: int, epochs: int) -> dict:
    hist = fl.simulate(
        "digits",
        n_clients=n,
        partition="iid",
        rounds=rounds,
        epochs=epochs,
        hidden=HIDDEN,
        contributions=True,  # the validators score contributions too
        clients_per_round=min(n, MAX_CLIENTS),
    )
    return {
        "round_s": statistics.median(r["seconds"] for r in hist[1:]),
        "accuracy": [round(r["accuracy"], 3) for r in hist],
    }


def dev_network(
    n: int, per_host: int, rounds: int, epochs: int, block_mode: str, reward: int, plan: bool
) -> dict:
    url, storage = f"ws://127.0.0.1:{procs.free_port()}", f"http://127.0.0.1:{procs.free_port()}"

    def dfml(*a, key="//Alice"):
        return run(["--url", url, "--storage", storage, "--key", key, *a])

    hosts = math.ceil(n / per_host)
    t0 = time.perf_counter()
    dfml(
        "devnet",
        "up",
        "--workers",
        str(n),
        "--validators",
        "3",
        "--worker-processes",
        str(hosts),
        "--clock",
        "1",
        "--block-mode",
        block_mode,
    )
    try:
        if per_host > 1:
            # each host first makes its other workers its proxies (a transaction each): wait
            # for that, or the chain, busy checking hundreds of them, is slow to take the rest
            from decentralml_jupyter.chain import Chain

            with Chain(url, timeout=120) as chain:
                names = [f"//Dev{4 + j}" for j in range(n)]  # Dev1-3 are the validators

                def proxied() -> bool:
                    return sum(1 for v in chain.proxies_of(names).values() if v) >= n - hosts

                wait_until(proxied, 3600)
        # the initial weights of the in-process and Flower runs (init_weights, seed 0)
        data = fl.load_dataset("digits")
        model = fl.mlp(data.input_dim, data.num_classes, hidden=HIDDEN)
        spec = fl.model_to_spec(model)
        model.set_weights(fl.init_weights(spec, 0))
        path = Path(tempfile.mkdtemp()) / "m.keras"
        model.save(path)
        mid = str(dfml("model", "submit", str(path))["model_id"])
        wait_until(lambda: len(dfml("stakes", "--model", mid)) == n)
        setup = time.perf_counter() - t0
        # the quorum is a share of the stake (ProtocolParams.quorum_permill): every worker
        # staked the same, so that share of them vote
        voters = n * ProtocolParams().quorum_permill // 1_000_000 + 1
        # room for every vote (each a block at worst, beside the clock's one a second); once
        # they are in, the chain is advanced only to the deadline's block
        deadline = 60 + 3 * voters
        pid = dfml("propose", mid, "ApproveModel", "--deadline", str(deadline))["proposal_id"]
        with ThreadPoolExecutor(max_workers=8) as pool:  # voters need not wait for each other
            list(
                pool.map(
                    lambda j: dfml("vote", str(pid), "aye", key=f"//Dev{4 + j}"), range(voters)
                )
            )
        closes = next(p["deadline"] for p in dfml("proposals") if p["id"] == pid)
        dfml("chain", "advance", str(max(1, closes + 1 - dfml("chain", "status")["block"])))
        wait_until(lambda: dfml("model", "show", mid)["status"] == "approved")
        dfml("model", "start", mid)
        times, accs, blocks = [], [], []
        start_args = [
            "--clients",
            str(min(n, MAX_CLIENTS)),
            "--epochs",
            str(epochs),
            "--deadline",
            "400",
            "--aggregate-deadline",
            "400",
            "--reward",
            str(reward),
        ]
        rid = None
        for k in range(rounds):
            h0 = dfml("chain", "status")["block"]
            t = time.perf_counter()
            if not plan:
                rid = dfml("round", "start", mid, *start_args)["round_id"]
            elif k == 0:  # one call schedules them all; each opens as the one before ends
                rid = dfml("round", "start", mid, *start_args, "--rounds", str(rounds))["round_id"]
            else:
                rid += 1  # the only model here: the plan's next round has the next id
            final = dfml("round", "watch", str(rid), "--timeout", "900")
            times.append(time.perf_counter() - t)
            blocks.append(dfml("chain", "status")["block"] - h0)
            if final["status"] != "finalized":
                raise RuntimeError(f"round {rid} ended {final['status']}")
            # scored like the in-process and Flower runs: the aggregate on the test split
            # (validators score on their own validation split)
            weights = fl.weights_from_bytes(KuboStore(storage).get(final["aggregate_cid"]))
            accs.append(round(fl.evaluate(spec, weights, data.x_test, data.y_test)["accuracy"], 3))
        # the last round's rewards: paid by the validators' multisig after it finalized
        t = time.perf_counter()
        wait_until(
            lambda: not [p for p in dfml("payouts", "--pending") if p["model_id"] == int(mid)]
        )
        payout_s = time.perf_counter() - t
        net = dfml("devnet", "status")
        from decentralml_jupyter.chain import devchain

        chain_pid = devchain.running_record(urlparse(url).port)["pid"]
        rss = {
            "chain": peak_rss_mib(chain_pid),
            "worker process": max(peak_rss_mib(w["pid"]) for w in net["workers"]),
            "validator": max(peak_rss_mib(v["pid"]) for v in net["validators"]),
        }
    finally:
        dfml("devnet", "down")
    return {
        "round_s": statistics.median(times[1:]),
        "first_round_s": times[0],
        "setup_s": setup,
        "blocks": statistics.median(blocks[1:]),
        "payout_s": payout_s,
        "accuracy": accs,
        "rss": rss,
        "hosts": hosts,
    }


def flower(n: int, rounds: int, epochs: int) -> dict | None:
    os.environ.update(
        DFML_BENCH_CLIENTS=str(n),
        DFML_BENCH_EPOCHS=str(epochs),
        DFML_BENCH_HIDDEN=",".join(map(str, HIDDEN)),
    )
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_fl

    try:
        return bench_fl.bench_flower(rounds)
    except Exception as err:  # report why Flower's engine could not run, keep our numbers
        print(f"  flower: could not run ({type(err).__name__}: {err})")
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", default="10", help="comma-separated worker counts")
    ap.add_argument("--per-host", default="1,10", help="workers per process, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--block-mode", choices=["instant", "batch"], default="batch")
    ap.add_argument("--skip-flower", action="store_true")
    ap.add_argument(
        "--plan",
        action="store_true",
        help="start the rounds with one `round start --rounds N` (back to back) instead of "
        "one `round start` each",
    )
    ap.add_argument(
        "--reward", type=int, default=10, help="tokens each round pays its contributors (0: none)"
    )
    args = ap.parse_args()
    if args.rounds < 2:
        ap.error("--rounds must be at least 2 (round 1 is warm-up)")
    print(
        f"digits MLP{HIDDEN}, IID, FedAvg, {args.epochs} local epochs, 3 validators, "
        f"{args.block_mode} blocks, {os.cpu_count()} CPU cores, "
        f"{'one plan of rounds' if args.plan else 'one start per round'}; seconds per round "
        f"are the median of rounds 2..{args.rounds}"
    )
    for n in (int(w) for w in args.workers.split(",")):
        base = in_process(n, args.rounds, args.epochs)
        print(f"\n{n} workers")
        print(f"  in-process (no chain, no storage): {base['round_s']:7.3f} s/round")
        for per_host in (int(p) for p in args.per_host.split(",")):
            if per_host > n or (per_host == 1 and n > 20):
                continue  # one TensorFlow process per worker does not fit beyond ~20
            dev = dev_network(
                n,
                per_host,
                args.rounds,
                args.epochs,
                args.block_mode,
                args.reward * 10**12,
                args.plan,
            )
            over = dev["round_s"] - base["round_s"]
            print(
                f"  dev network, {dev['hosts']} worker processes: {dev['round_s']:7.3f} s/round "
                f"({dev['blocks']:.0f} blocks; first round {dev['first_round_s']:.1f} s; "
                f"set-up {dev['setup_s']:.0f} s; rewards paid {dev['payout_s']:.1f} s after "
                "the last round)"
            )
            print(
                f"    / in-process: {dev['round_s'] / base['round_s']:.1f}x (target 1.5x); "
                f"overhead {over:.2f} s/round, {over / n * 1000:.0f} ms per worker"
            )
            print(
                "    peak RSS MiB: "
                + ", ".join(f"{k} {v:.0f}" for k, v in dev["rss"].items())
                + f"; accuracy {dev['accuracy']} vs in-process {base['accuracy']}"
            )
            if (
                not args.skip_flower
                and n == 10
                and per_host == max(int(p) for p in args.per_host.split(","))
            ):
                flw = flower(n, args.rounds, args.epochs)
                if flw:
                    print(
                        f"  flower simulation (Ray, {flw['actors']} actors): "
                        f"{flw['round_s']:7.3f} s/round; dev network / flower "
                        f"{dev['round_s'] / flw['round_s']:.2f}x (target <= 1); accuracy "
                        f"{flw['accuracies']}"
                    )
                    gap = 100 * (dev["accuracy"][-1] - flw["accuracies"][-1])
                    print(
                        f"    accuracy after {args.rounds} rounds, test split: dev network "
                        f"{dev['accuracy'][-1]:.3f}, flower {flw['accuracies'][-1]:.3f} "
                        f"({gap:+.1f} points; target within 1), in-process "
                        f"{base['accuracy'][-1]:.3f}"
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
