"""Participants' own data on the real dev network: three workers and two validators, each
reading its own CSV file (`devnet up --data DIR --target target`), a regression model with a
Normalization layer compiled with Adam, five rounds in one plan: the model's error falls by
far more than half, and every round's aggregate is exactly what the same rounds give when run
in-process from the same files, seeds and setup."""

from __future__ import annotations

import contextlib
import hashlib

import numpy as np
import pytest

from tests.conftest import dev_network, require, wait_until

UNIT = 10**12
WORKERS, VALIDATORS, ROUNDS = 3, 2, 5


def _files(folder, worker_sign=1):
    """Three workers' files and the validator's; ``worker_sign`` -1 negates the workers'
    targets (data that makes the model worse on the validator's file)."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame.sample(frac=1.0, random_state=0)
    cuts = np.linspace(0, len(frame), WORKERS + 2).astype(int)
    names = [*(f"worker-{i}.csv" for i in range(WORKERS)), "validator.csv"]
    for name, a, b in zip(names, cuts[:-1], cuts[1:], strict=True):
        part = frame.iloc[a:b]
        if name != "validator.csv":
            part = part.assign(target=worker_sign * part["target"])
        part.to_csv(folder / name, index=False)
    return [c for c in frame.columns if c != "target"]


def _model(folder, features, path):
    import pandas as pd

    keras = require("keras")
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(len(features),), name="features")
    norm = keras.layers.Normalization(name="norm")
    # the owner's own sample sets the scaling; it travels in the model, so all apply the same
    norm.adapt(pd.read_csv(folder / "validator.csv")[features].to_numpy(dtype=np.float32))
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(norm(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden), name="diabetes")
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse", metrics=["mae"])
    model.save(path)


@contextlib.contextmanager
def own_data_network(tmp_path, worker_sign=1):
    """Three workers' and a validator's CSV files, the owner's model saved beside them
    (``diabetes.keras``) and a dev network reading them; yields ``(data, features, dfml,
    info, url, storage)`` with ``dfml(*args, key=...)`` the CLI; brings it down at the end.
    ``worker_sign`` -1: the workers' targets negated."""
    data = tmp_path / "data"
    data.mkdir()
    features = _files(data, worker_sign)
    _model(data, features, tmp_path / "diabetes.keras")
    up = dev_network(
        "--workers", str(WORKERS), "--validators", str(VALIDATORS), "--data", str(data),
        "--target", "target", "--clock", "1",
    )  # fmt: skip
    with up as (dfml, info, url, storage):
        yield data, features, dfml, info, url, storage


def train_round(fl, spec, weights, rnd, mine, epochs, proximal_mu=0.0):
    """What the round's workers sent, recomputed in-process from their data and the round's
    seed: one ``ClientUpdate`` per submitted worker, in account order, claims bounded."""
    updates = []
    for worker in sorted(rnd.submitted):
        x, y = mine[worker]
        seed = hashlib.sha256(f"{rnd.seed}:{worker}".encode()).digest()[:4]
        new, n, _ = fl.train_local(
            spec, weights, x, y, epochs=epochs, batch_size=32, proximal_mu=proximal_mu,
            seed=int.from_bytes(seed),
        )  # fmt: skip
        updates.append(fl.ClientUpdate(worker, new, n))
    return fl.bound_examples(updates)  # as the validators bound the claims


def train_plans(
    dfml,
    mids,
    epochs,
    rounds,
    deadline=60,
    workers=WORKERS,
    extra=(),
    on_started=None,
    expect="finalized",
):
    """Approve each model (all ``workers`` staked on it, a worker's vote), start its training
    and a plan of ``rounds`` rounds side by side (``extra``: more `round start` options, and
    ``on_started(round ids)`` called once they are); wait until every plan has run, each of
    its rounds ``expect`` (None: whatever they ended as)."""
    wait_until(
        lambda: all(len(dfml("stakes", "--model", m)) == workers for m in mids), 240, "stakes"
    )
    for m in mids:
        pid = dfml("propose", m, "ApproveModel", "--deadline", "12")["proposal_id"]
        dfml("vote", str(pid), "aye", key=f"//Dev{VALIDATORS + 1}")
    dfml("chain", "advance", "13")
    wait_until(
        lambda: all(dfml("model", "show", m)["status"] == "approved" for m in mids), 60, "ok"
    )
    firsts = []
    for m in mids:
        dfml("model", "start", m)
        firsts.append(
            dfml(
                "round", "start", m, "--clients", str(workers), "--epochs", str(epochs),
                "--rounds", str(rounds), "--deadline", str(deadline),
                "--aggregate-deadline", str(deadline), *extra,
            )["round_id"]
        )  # fmt: skip
    if on_started is not None:
        on_started(firsts)
    for m, first in zip(mids, firsts, strict=True):
        last = dfml("round", "watch", str(first), "--plan", "--timeout", "900")
        steps = [step["status"] for step in last["plan"]]
        assert expect is None or steps == [expect] * rounds, (m, last)


@pytest.mark.chain
def test_a_regression_trained_on_participants_csv_files(tmp_path):
    from decentralml_jupyter import Session, fl

    with own_data_network(tmp_path) as (data, features, dfml, info, url, storage):
        assert len(info["workers"]) == WORKERS and len({w["pid"] for w in info["workers"]}) == 3
        feature_args = [a for f in features for a in ("--feature", f)]
        sub = dfml(
            "model", "submit", str(tmp_path / "diabetes.keras"), "--metric", "mae", *feature_args
        )
        mid = str(sub["model_id"])
        shown = dfml("model", "show", mid)
        assert shown["data"] == {
            "input_shape": [10], "dtype": "float32", "label": "regression:1",
            "features": features,
        }  # fmt: skip
        assert shown["training"]["optimizer"] == "Adam" and shown["training"]["loss"] == "mse"
        train_plans(dfml, [mid], epochs=5, rounds=ROUNDS)

        # the same rounds in-process: same files, same seeds, same setup, same bits
        with Session(url, storage) as s:
            spec = s.spec(sub["architecture_cid"])
            contract = fl.spec_contract(spec)
            mine = {
                w["address"]: fl.load_data(data / f"worker-{i}.csv", "target", contract)
                for i, w in enumerate(info["workers"])
            }
            held_x, held_y = fl.load_data(data / "validator.csv", "target", contract)
            weights = fl.weights_from_bytes(s.store.get(sub["weights_cid"]))
            start_mae = fl.evaluate(spec, weights, held_x, held_y)["mae"]
            rounds = sorted(s.rounds(int(mid)), key=lambda r: r.round_id)
            assert len(rounds) == ROUNDS
            for rnd in rounds:
                updates = train_round(fl, spec, weights, rnd, mine, epochs=5)
                weights = fl.FedAvg().aggregate(weights, updates)
                on_chain = fl.weights_from_bytes(s.store.get(rnd.aggregate_cid))
                for a, b in zip(weights, on_chain, strict=True):
                    np.testing.assert_array_equal(a, b)
                # the validators' attested metric is the model's own (mae), on their file
                mine_mae = fl.evaluate(spec, weights, held_x, held_y, "mae")["mae"]
                assert rnd.metrics["mae"] == pytest.approx(mine_mae, abs=1e-6)
            end_mae = fl.evaluate(spec, weights, held_x, held_y)["mae"]
        assert end_mae < 0.5 * start_mae, (start_mae, end_mae)
        # round status reports the model's metric by its Keras name, and the loss (MSE)
        history = dfml("round", "history", mid)
        assert history[-1]["metrics"]["mae"] == pytest.approx(end_mae, abs=1e-6)
        losses = [r["metrics"]["loss"] for r in history]
        assert losses[-1] < 0.5 * losses[0], losses
