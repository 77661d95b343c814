"""Do the defaults learn? Digits, 10 workers on a Dirichlet(0.5) split, the same MLP as
tutorial 01, 20 rounds: our strategies with the defaults (FedAvg, 5 local epochs) and others,
beside Flower's FedAvg and FedAdam server strategies fed the very same client updates, and
the same MLP trained centrally for 20 epochs on all the workers' data. Prints, per run, the
rounds until 95% test accuracy and the final gap to central training (points).

Run: python benchmarks/bench_learning.py [--rounds 20] [--seeds 0 1 2]. Printed, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

WORKERS, ALPHA, TARGET = 10, 0.5, 0.95


def _rounds_to(accuracies: list[float], target: float = TARGET) -> int | None:
    return next((i + 1 for i, a in enumerate(accuracies) if a >= target), None)


def ours(strategy: str, epochs: int, rounds: int, seed: int, **params) -> list[float]:
    from decentralml_jupyter import fl

    hist = fl.simulate(
        "digits", WORKERS, "dirichlet", strategy=strategy, rounds=rounds, epochs=epochs,
        alpha=ALPHA, seed=seed, strategy_kwargs=params or None,
    )  # fmt: skip
    return [r["accuracy"] for r in hist]


def flower(name: str, epochs: int, rounds: int, seed: int, **params) -> list[float]:
    """Flower's server strategy ``name`` on the same split, client training and seeds as
    ``fl.simulate`` (its aggregate_fit, without the simulation engine around it)."""
    import flwr.server.strategy as fs
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    from decentralml_jupyter import fl
    from decentralml_jupyter.fl.simulation import client_ids

    ds = fl.load_dataset("digits", seed=seed)
    spec = fl.model_to_spec(fl.mlp(ds.input_dim, ds.num_classes, (64,)))
    weights = fl.init_weights(spec, seed)
    parts = fl.partition(ds.y_train, WORKERS, "dirichlet", alpha=ALPHA, seed=seed)
    strategy = getattr(fs, name)(initial_parameters=ndarrays_to_parameters(weights), **params)
    ids, out = client_ids(WORKERS), []
    for rnd in range(1, rounds + 1):
        results = []
        for k in range(WORKERS):
            idx = parts[k]
            w, n, _ = fl.train_local(
                spec, weights, ds.x_train[idx], ds.y_train[idx], epochs, 32, 0.05,
                seed=seed * 1_000_003 + rnd * 1009 + k,
            )  # fmt: skip
            res = FitRes(Status(Code.OK, ids[k]), ndarrays_to_parameters(w), n, {})
            results.append((None, res))
        params_out, _ = strategy.aggregate_fit(rnd, results, [])
        weights = [a.astype(b.dtype) for a, b in
                   zip(parameters_to_ndarrays(params_out), weights, strict=True)]  # fmt: skip
        out.append(fl.evaluate(spec, weights, ds.x_test, ds.y_test)["accuracy"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    from decentralml_jupyter.fl.simulation import train_centralised

    runs = {
        "ours fedavg, 5 epochs (default)": lambda s: ours("fedavg", 5, args.rounds, s),
        "ours fedavg, 1 epoch (old default)": lambda s: ours("fedavg", 1, args.rounds, s),
        "ours fedavgm, 5 epochs": lambda s: ours("fedavgm", 5, args.rounds, s),
        "ours fedadam eta 0.01, 5 epochs": lambda s: ours("fedadam", 5, args.rounds, s, eta=0.01),
        "flower FedAvg, 5 epochs": lambda s: flower("FedAvg", 5, args.rounds, s),
        "flower FedAdam eta 0.01, 5 epochs": lambda s: flower(
            "FedAdam", 5, args.rounds, s, eta=0.01, tau=1e-9
        ),
    }
    print(
        f"digits MLP(64), {WORKERS} workers, Dirichlet {ALPHA}, {args.rounds} rounds, "
        f"seeds {args.seeds}; central: the same MLP, 20 epochs on all the data"
    )
    central = {s: train_centralised(epochs=20, seed=s)["accuracy"] for s in args.seeds}
    print(f"{'central':36s} accuracy {statistics.mean(central.values()):.3f}")
    for name, run in runs.items():
        accs = {s: run(s) for s in args.seeds}
        gaps = [100 * (central[s] - accs[s][-1]) for s in args.seeds]
        reach = [_rounds_to(accs[s]) for s in args.seeds]
        print(
            f"{name:36s} final {statistics.mean(a[-1] for a in accs.values()):.3f}  gap to "
            f"central {statistics.mean(gaps):4.1f} pts (worst {max(gaps):4.1f})  rounds to "
            f"{TARGET:.0%}: {', '.join('-' if r is None else str(r) for r in reach)}"
        )


if __name__ == "__main__":
    main()
