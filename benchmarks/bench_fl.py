"""Time one federated round on digits (10 workers, MLP): our in-process simulation beside
Flower's simulation engine (Ray) running the same local training, and print the ratio.

Run: python benchmarks/bench_fl.py [--rounds N] [--skip-flower]. Printed, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

# Before any Flower/Ray import: no telemetry, no cluster outside loopback, quiet TF.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

N_CLIENTS, EPOCHS, BATCH, LR, SEED = 10, 1, 32, 0.05, 0
# Another benchmark (bench_rounds.py) sets the task through the environment, which Ray's
# actors inherit: they import this module afresh.
N_CLIENTS = int(os.environ.get("DFML_BENCH_CLIENTS", N_CLIENTS))
EPOCHS = int(os.environ.get("DFML_BENCH_EPOCHS", EPOCHS))
HIDDEN = tuple(int(h) for h in os.environ.get("DFML_BENCH_HIDDEN", "64").split(","))


def bench_ours(rounds: int) -> dict[str, float]:
    from decentralml_jupyter.fl import simulate

    t0 = time.perf_counter()
    hist = simulate(
        "digits", N_CLIENTS, "iid", "fedavg", rounds, EPOCHS, BATCH, LR, hidden=HIDDEN, seed=SEED
    )
    total = time.perf_counter() - t0
    steady = [r["seconds"] for r in hist[1:]]  # round 1 includes graph tracing
    return {
        "round_s": statistics.median(steady),
        "first_round_s": hist[0]["seconds"],
        "total_s": total,
        "accuracy": hist[-1]["accuracy"],
    }


# ---- Flower: the same task through its simulation engine. Module-level so Ray actors can
# import it; each actor loads the data and builds the model once.
_state: dict = {}


def _task():
    if not _state:
        from decentralml_jupyter.fl import load_dataset, mlp, model_to_spec, partition

        ds = load_dataset("digits", seed=SEED)
        _state["ds"] = ds
        _state["spec"] = model_to_spec(mlp(ds.input_dim, ds.num_classes, HIDDEN))
        _state["parts"] = partition(ds.y_train, N_CLIENTS, "iid", seed=SEED)
    return _state["ds"], _state["spec"], _state["parts"]


def _client_fn(context):
    from flwr.client import NumPyClient

    from decentralml_jupyter.fl import train_local

    pid = int(context.node_config["partition-id"])

    class DigitsClient(NumPyClient):
        def fit(self, parameters, config):
            ds, spec, parts = _task()
            idx = parts[pid]
            rnd = int(config.get("round", 0))
            w, n, m = train_local(
                spec,
                parameters,
                ds.x_train[idx],
                ds.y_train[idx],
                EPOCHS,
                BATCH,
                LR,
                seed=SEED * 1_000_003 + rnd * 1009 + pid,
            )
            return w, n, {}

    return DigitsClient().to_client()


def bench_flower(rounds: int) -> dict[str, float]:
    from flwr.client import ClientApp
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from decentralml_jupyter.fl import evaluate, init_weights

    ds, spec, _ = _task()
    marks: list[float] = []
    accuracy: list[float] = []

    def evaluate_fn(server_round, parameters, config):
        # Called once before round 1 and after each round's aggregation: round boundaries.
        m = evaluate(spec, parameters, ds.x_test, ds.y_test)
        marks.append(time.perf_counter())
        accuracy.append(m["accuracy"])
        return m["loss"], {"accuracy": m["accuracy"]}

    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=N_CLIENTS,
        min_available_clients=N_CLIENTS,
        initial_parameters=ndarrays_to_parameters(init_weights(spec, SEED)),
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=lambda rnd: {"round": rnd},
    )
    server = ServerApp(config=ServerConfig(num_rounds=rounds), strategy=strategy)
    client = ClientApp(client_fn=_client_fn)
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="ray-") as tmp:
        backend = {
            "init_args": {
                "num_cpus": cpus,
                "_temp_dir": tmp,
                "include_dashboard": False,
                "_node_ip_address": "127.0.0.1",
            },
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        }
        t0 = time.perf_counter()
        run_simulation(server, client, N_CLIENTS, backend_config=backend)
        total = time.perf_counter() - t0
    if len(marks) < 3:
        raise RuntimeError(f"Flower simulation finished only {len(marks) - 1} rounds")
    rounds_s = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return {
        "round_s": statistics.median(rounds_s[1:]),
        "first_round_s": rounds_s[0],
        "total_s": total,
        "accuracy": accuracy[-1],
        "accuracies": [round(a, 3) for a in accuracy[1:]],  # after each round
        "actors": cpus,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip-flower", action="store_true")
    args = ap.parse_args()
    print(
        f"digits MLP{HIDDEN}, {N_CLIENTS} workers IID, FedAvg, {EPOCHS} local epoch, "
        f"batch {BATCH}, {args.rounds} rounds, {os.cpu_count()} CPU cores"
    )
    ours = bench_ours(args.rounds)
    print(
        f"in-process : round {ours['round_s']:.3f} s (median of rounds 2..), first round "
        f"{ours['first_round_s']:.2f} s, total {ours['total_s']:.2f} s, "
        f"accuracy {ours['accuracy']:.4f}"
    )
    if args.skip_flower:
        return
    try:
        fl = bench_flower(args.rounds)
    except Exception as err:  # report why Flower's engine could not run, keep our number
        print(f"flower     : could not run ({type(err).__name__}: {err})")
        return
    print(
        f"flower/ray : round {fl['round_s']:.3f} s (median of rounds 2..), first round "
        f"{fl['first_round_s']:.2f} s, total {fl['total_s']:.2f} s incl. start-up, "
        f"accuracy {fl['accuracy']:.4f}, {fl['actors']} actors"
    )
    print(f"ratio      : flower round / in-process round = {fl['round_s'] / ours['round_s']:.1f}x")


if __name__ == "__main__":
    main()
