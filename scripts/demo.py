"""The demo: a dev network (chain, storage, workers, validators) up, a model submitted and
approved by stake-weighted vote, federated rounds trained on private partitions, validators'
attested results and rewards, the trained model fetched, everything stopped.

Run by `make demo`; every step goes through the same verbs as `dfml` and `%dfml`. Results go to
out/demo/ (a JSON summary and an accuracy plot).
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

from decentralml_jupyter.cli import run

UNIT = 10**12
ROUNDS = 3
OUT = Path("out/demo")


def free_port(preferred: int) -> int:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as s:  # leave a service the user already runs alone
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def wait_until(predicate, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError("the dev network did not get there in time; see dfml devnet status")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    url = f"ws://127.0.0.1:{free_port(9944)}"
    storage = f"http://127.0.0.1:{free_port(5001)}"

    def dfml(*args: str, key: str = "//Alice"):
        return run(["--url", url, "--storage", storage, "--key", key, *args])

    t0 = time.monotonic()
    say("dev network up: chain, storage, 3 validators, 5 workers (Dirichlet 0.5 split of digits)")
    net = dfml(
        "devnet",
        "up",
        "--workers",
        "5",
        "--validators",
        "3",
        "--partition",
        "dirichlet:0.5",
        "--clock",
        "1",
    )
    print(f"  chain {net['chain']['url']} (block {net['chain']['block']}), storage {storage}")
    for w in net["workers"]:
        print(f"  worker {w['name']} {w['address']} pid {w['pid']}")
    try:
        from decentralml_jupyter import fl

        say("the model owner (Alice) submits a Keras MLP")
        model_path = OUT / "digits-mlp.keras"
        fl.mlp(64, 10, hidden=(32,)).save(model_path)
        sub = dfml(
            "model",
            "submit",
            str(model_path),
            "--name",
            "digits-mlp",
            "--license",
            "apache-2.0",
            "--slash-permill",
            "200",
        )
        mid = str(sub["model_id"])
        print(f"  model {mid}: architecture {sub['architecture_cid']}, pool {sub['pool']}")
        print(f"  receipt: block {sub['receipt']['block_number']}, success")

        say("workers stake on it; Alice proposes approval, two workers vote aye")
        wait_until(lambda: len(dfml("stakes", "--model", mid)) == 5)
        prop = dfml("propose", mid, "ApproveModel", "--deadline", "30")
        dfml("vote", str(prop["proposal_id"]), "aye", key="//Dev4")
        dfml("vote", str(prop["proposal_id"]), "aye", key="//Dev5")
        dfml("chain", "advance", "31")  # let the voting period pass
        wait_until(lambda: dfml("model", "show", mid)["status"] == "approved")
        dfml("model", "start", mid)
        print(f"  proposal {prop['proposal_id']} passed; model {mid} is training")

        history = []
        for r in range(1, ROUNDS + 1):
            say(f"round {r}: 5 workers train 2 epochs each on their own data")
            start = dfml(
                "round",
                "start",
                mid,
                "--clients",
                "5",
                "--min-clients",
                "4",
                "--epochs",
                "2",
                "--reward",
                str(50 * UNIT),
                "--deadline",
                "40",
                "--aggregate-deadline",
                "40",
            )
            final = dfml("round", "watch", str(start["round_id"]))
            history.append(final)
            m = final["metrics"]
            print(
                f"  {final['status']}: accuracy {m.get('accuracy', float('nan')):.3f}, "
                f"loss {m.get('loss', float('nan')):.3f}, aggregate {final['aggregate_cid']}"
            )
            for who, amount in sorted(final["rewards"].items(), key=lambda kv: -kv[1]):
                print(f"    reward {amount / UNIT:8.3f} tokens -> {who}")

        say("fetch the trained model and predict")
        fetched = dfml("model", "fetch", mid, "--out", str(OUT / "trained.keras"))
        print(f"  {fetched['path']} (CID {fetched['cid']})")
        summary = {
            "model": dfml("model", "show", mid),
            "rounds": history,
            "seconds": round(time.monotonic() - t0, 1),
        }
        (OUT / "results.json").write_text(json.dumps(summary, indent=2))
        plot(history, OUT / "accuracy.png")
        say("results")
        print(f"  accuracy per round: {[round(h['metrics']['accuracy'], 3) for h in history]}")
        print(f"  written: {OUT / 'results.json'}, {OUT / 'accuracy.png'}")
    finally:
        say("dev network down")
        print(" ", dfml("devnet", "down"))
    return 0


def plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [h["number"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(rounds, [h["metrics"]["accuracy"] for h in history], "o-", label="accuracy")
    ax.plot(rounds, [h["metrics"]["loss"] for h in history], "s--", label="loss")
    ax.set_xlabel("round")
    ax.set_title("Global model on the validators' held-out data")
    ax.set_xticks(rounds)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
