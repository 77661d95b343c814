"""In-process federated simulation (no chain, no storage): the learning baseline.

Workers train on their partitions, optional poisoners attack, a validator checks and
aggregates, and every round is scored on the held-out test split.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from decentralml_jupyter.fl.checks import bound_examples, check_update
from decentralml_jupyter.fl.contribution import leave_one_out
from decentralml_jupyter.fl.data import Dataset, load_dataset
from decentralml_jupyter.fl.data import partition as make_partition
from decentralml_jupyter.fl.influence import EXACT_CONTRIBUTIONS_MAX, first_order_shares
from decentralml_jupyter.fl.models import init_weights, mlp, model_to_spec
from decentralml_jupyter.fl.privacy import (
    clip_and_noise,
    mask_update,
    pairwise_seeds,
    secure_mean,
)
from decentralml_jupyter.fl.strategies import Strategy, make_strategy
from decentralml_jupyter.fl.training import evaluate, loss_gradient, train_local
from decentralml_jupyter.fl.types import DEFAULT_LOCAL_EPOCHS, ClientUpdate, FlError

ATTACKS = ("label_flip", "scale")


def client_ids(n_clients: int) -> list[str]:
    """Ids the simulation gives its workers; zero-padded so string order is numeric order."""
    return [f"client-{i:03d}" for i in range(n_clients)]


def _dataset(dataset: str | Dataset, seed: int) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else load_dataset(dataset, seed=seed)


def train_centralised(
    dataset: str | Dataset = "digits",
    epochs: int = 20,
    batch_size: int = 32,
    lr: float = 0.05,
    hidden: Sequence[int] = (64,),
    seed: int = 0,
) -> dict[str, float]:
    """Train the same MLP on all training data at once; test accuracy and loss."""
    ds = _dataset(dataset, seed)
    spec = model_to_spec(mlp(ds.input_dim, ds.num_classes, hidden))
    weights = init_weights(spec, seed)
    weights, _, _ = train_local(
        spec, weights, ds.x_train, ds.y_train, epochs, batch_size, lr, seed=seed
    )
    return evaluate(spec, weights, ds.x_test, ds.y_test)


def simulate(
    dataset: str | Dataset = "digits",
    n_clients: int = 10,
    partition: str = "iid",
    strategy: str | Strategy = "fedavg",
    rounds: int = 10,
    epochs: int = DEFAULT_LOCAL_EPOCHS,
    batch_size: int = 32,
    lr: float = 0.05,
    alpha: float = 0.5,
    hidden: Sequence[int] = (64,),
    seed: int = 0,
    poisoners: int | Sequence[str] = 0,
    attack: str = "label_flip",
    attack_scale: float = -10.0,
    max_delta_norm: float | None = None,
    dp: tuple[float, float] | None = None,
    secure_aggregation: bool = False,
    contributions: bool = False,
    strategy_kwargs: dict[str, Any] | None = None,
    clients_per_round: int | None = None,
    local_test: float = 0.0,
) -> list[dict[str, Any]]:
    """Run ``rounds`` federated rounds; returns one dict per round.

    Each dict has ``round``, ``accuracy`` and ``loss`` (test split), ``accepted`` (client ids
    aggregated), ``rejected`` ({id: reason}), ``seconds``, and ``contributions`` when asked.
    ``poisoners`` is a count (the first client ids) or explicit ids; ``attack`` is
    ``label_flip`` (train on flipped labels) or ``scale`` (send global + attack_scale * delta).
    ``dp=(clip_norm, noise_multiplier)`` privatises every update on the client;
    ``secure_aggregation`` masks updates pairwise (linear strategies only: FedAvg, FedProx,
    FedAvgM and the server optimizers, which step from the revealed mean).
    ``clients_per_round``: train only this many clients each round, drawn at random (seeded by
    ``seed`` and the round), as the protocol selects a round's workers. Rounds of more than
    ``fl.EXACT_CONTRIBUTIONS_MAX`` accepted updates score contributions to first order
    (``fl.first_order_shares``), as validators do.
    ``local_test``: hold out this fraction of each client's data; each round then reports
    ``local_accuracy``, the mean over clients of the accuracy, on their own held-out data, of
    the model each would use (the global model; with ``proxyfl``, its private model).
    With ``strategy="proxyfl"`` each client keeps a private model across rounds and shares
    only its proxy (``fl.proxyfl``); ``accuracy`` is then the global proxy's.
    """
    if rounds < 1:
        raise FlError(f"rounds must be >= 1, got {rounds}", "e.g. rounds=10")
    if clients_per_round is not None and not 1 <= clients_per_round <= n_clients:
        raise FlError(
            f"clients_per_round must be in 1..{n_clients}, got {clients_per_round}",
            "leave it out to train every client each round",
        )
    if attack not in ATTACKS:
        raise FlError(f"unknown attack {attack!r}", f"use one of {', '.join(ATTACKS)}")
    strat = (
        strategy
        if isinstance(strategy, Strategy)
        else make_strategy(strategy, **(strategy_kwargs or {}))
    )
    if secure_aggregation and not strat.LINEAR:
        raise FlError(
            f"secure aggregation only reveals the sum; {strat.name} needs each update",
            "use a linear strategy (fedavg, fedprox, fedavgm, fedadam, fedyogi)",
        )
    ds = _dataset(dataset, seed)
    ids = client_ids(n_clients)
    parts = make_partition(ds.y_train, n_clients, partition, alpha=alpha, seed=seed)
    bad = set(ids[:poisoners] if isinstance(poisoners, int) else poisoners)
    if not bad <= set(ids):
        raise FlError(f"unknown poisoner ids {sorted(bad - set(ids))}", f"ids are {ids[0]}...")
    spec = model_to_spec(mlp(ds.input_dim, ds.num_classes, hidden))
    global_w = init_weights(spec, seed)
    config = strat.client_config()
    mu = float(config.get("proximal_mu", 0.0))
    if not 0 <= local_test < 1:
        raise FlError(f"local_test must be in [0, 1), got {local_test}", "e.g. 0.2")
    held: dict[int, Any] = {}
    if local_test:
        cut = np.random.default_rng([seed, 7])
        for k in range(n_clients):
            idx = cut.permutation(parts[k])
            n_test = int(round(local_test * len(idx)))
            held[k], parts[k] = idx[:n_test], idx[n_test:]
    privates: dict[int, Any] = {}  # ProxyFL: each client's own model, kept across rounds

    history: list[dict[str, Any]] = []
    for rnd in range(1, rounds + 1):
        t0 = time.perf_counter()
        updates: list[ClientUpdate] = []
        chosen = range(n_clients)
        if clients_per_round is not None:
            draw = np.random.default_rng([seed, rnd]).permutation(n_clients)
            chosen = sorted(draw[:clients_per_round].tolist())
        for k in chosen:
            cid, idx = ids[k], parts[k]
            x, y = ds.x_train[idx], ds.y_train[idx]
            if cid in bad and attack == "label_flip":
                y = ds.num_classes - 1 - y
            client_seed = seed * 1_000_003 + rnd * 1009 + k
            if config.get("proxyfl"):
                from decentralml_jupyter.fl.proxyfl import train_proxyfl

                w, privates[k], n = train_proxyfl(
                    spec, global_w, privates.get(k), x, y, epochs, batch_size, lr,
                    alpha=config["alpha"], beta=config["beta"], seed=client_seed,
                )  # fmt: skip
                metrics: dict[str, float] = {}
            else:
                w, n, metrics = train_local(
                    spec, global_w, x, y, epochs, batch_size, lr, mu, seed=client_seed
                )
            if cid in bad and attack == "scale":
                w = [
                    (g + attack_scale * (a - g)).astype(g.dtype)
                    for a, g in zip(w, global_w, strict=True)
                ]
            if dp is not None:
                w, _ = clip_and_noise(global_w, w, dp[0], dp[1], seed=client_seed)
            updates.append(ClientUpdate(cid, w, n, metrics))

        accepted, rejected = [], {}
        for u in updates:
            verdict = check_update(global_w, u, max_delta_norm=max_delta_norm)
            if verdict.accepted:
                accepted.append(u)
            else:
                rejected[u.client_id] = verdict.reason
        row: dict[str, Any] = {"round": rnd}
        accepted = bound_examples(accepted)  # as validators do on the network
        if accepted:
            exact = len(accepted) <= EXACT_CONTRIBUTIONS_MAX
            if contributions and exact:
                row["contributions"] = leave_one_out(
                    strat,
                    global_w,
                    accepted,
                    lambda w: evaluate(spec, w, ds.x_val, ds.y_val),
                )
            if secure_aggregation:
                seeds = pairwise_seeds([u.client_id for u in accepted], f"{seed}/{rnd}".encode())
                masked = [
                    mask_update(u.client_id, u.weights, seeds[u.client_id], u.num_examples)
                    for u in accepted
                ]
                global_w = strat.step(global_w, secure_mean(masked))
            else:
                global_w = strat.aggregate(global_w, accepted)
            if contributions and not exact:  # a large round: to first order, as validators do
                gradient = loss_gradient(spec, global_w, ds.x_val, ds.y_val)
                row["contributions"] = first_order_shares(gradient, accepted)
        row.update(evaluate(spec, global_w, ds.x_test, ds.y_test))
        if held:
            row["local_accuracy"] = float(
                np.mean(
                    [
                        evaluate(spec, privates.get(k, global_w), ds.x_train[idx], ds.y_train[idx])[
                            "accuracy"
                        ]
                        for k, idx in sorted(held.items())
                        if len(idx)
                    ]
                )
            )
        row["accepted"] = [u.client_id for u in accepted]
        row["rejected"] = rejected
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
    return history
