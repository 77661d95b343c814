"""Our in-process federated averaging against TensorFlow Federated's build_weighted_fed_avg on
the same task (data, split, model, initial weights, optimiser): time per round and accuracy
after N rounds, measured in one run. TFF lives in its own environment: run
scripts/tff-env.sh first.

Printed, not a test: `python benchmarks/bench_tff.py [--clients 10] [--rounds 5]`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from decentralml_jupyter import fl
from decentralml_jupyter.fl.data import partition

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--partition", default="iid")
    ap.add_argument("--tff-python", default=str(ROOT / ".tff-venv" / "bin" / "python"))
    a = ap.parse_args()
    if not Path(a.tff_python).exists():
        print(f"no TFF environment at {a.tff_python}: run scripts/tff-env.sh first")
        return 2
    seed, hidden, lr, batch = 0, (64,), 0.05, 32
    ds = fl.load_dataset("digits", seed=seed)
    parts = partition(ds.y_train, a.clients, a.partition, seed=seed)
    spec = fl.model_to_spec(fl.mlp(ds.input_dim, ds.num_classes, hidden))
    init = fl.init_weights(spec, seed)
    ours = fl.simulate(
        "digits",
        n_clients=a.clients,
        partition=a.partition,
        rounds=a.rounds,
        epochs=a.epochs,
        batch_size=batch,
        lr=lr,
        hidden=hidden,
        seed=seed,
    )

    cfg = {
        "clients": a.clients,
        "classes": ds.num_classes,
        "hidden": list(hidden),
        "lr": lr,
        "batch_size": batch,
        "epochs": a.epochs,
        "rounds": a.rounds,
        "seed": seed,
        "layers": len(init),
    }
    with tempfile.TemporaryDirectory() as tmp:
        task, out = Path(tmp) / "task.npz", Path(tmp) / "tff.json"
        arrays = {f"part_{i}": p for i, p in enumerate(parts)}
        arrays |= {f"init_{i}": w for i, w in enumerate(init)}
        np.savez(
            task,
            config=json.dumps(cfg),
            x_train=ds.x_train,
            y_train=ds.y_train,
            x_test=ds.x_test,
            y_test=ds.y_test,
            **arrays,
        )
        # its own process group: TFF leaves a worker_binary behind, which we stop with it
        proc = subprocess.Popen(
            [a.tff_python, str(ROOT / "benchmarks" / "tff_task.py"), str(task), str(out)],
            start_new_session=True,
        )
        try:
            proc.wait(timeout=1800)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if proc.returncode != 0:
            print(f"TFF run failed (exit {proc.returncode})")
            return 1
        tff = json.loads(out.read_text())

    print(
        f"digits MLP, {a.clients} clients ({a.partition}), {a.epochs} local epoch(s), "
        f"FedAvg, same split and initial weights; TFF {tff['tff']} on TF {tff['tf']}"
    )
    print(f"{'round':>5} {'ours acc':>9} {'TFF acc':>8} {'ours s':>7} {'TFF s':>7}")
    for o, t in zip(ours, tff["history"], strict=True):
        print(
            f"{o['round']:>5} {o['accuracy']:9.3f} {t['accuracy']:8.3f} "
            f"{o['seconds']:7.2f} {t['seconds']:7.2f}"
        )
    ours_s = np.mean([o["seconds"] for o in ours[1:]] or [ours[0]["seconds"]])
    tff_s = np.mean([t["seconds"] for t in tff["history"][1:]] or [tff["history"][0]["seconds"]])
    gap = 100 * (ours[-1]["accuracy"] - tff["history"][-1]["accuracy"])
    print(
        f"time per round (after the first): ours {ours_s:.2f} s, TFF {tff_s:.2f} s, "
        f"TFF/ours {tff_s / ours_s:.1f}x; final accuracy gap {gap:+.1f} points"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
