"""Contribution of each accepted update, for rewards: leave-one-out on validation data.

Score_i = max(0, quality(aggregate of all) - quality(aggregate without i)), normalised to sum
to 1. Quality is minus the validation loss by default: loss moves even when accuracy on a
small validation set does not, so it separates contributors better. Updates that did not
help (or hurt) get 0; if no update helped, the reward is split equally.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

from decentralml_jupyter.fl.strategies import Strategy, WeightedSum
from decentralml_jupyter.fl.types import ClientUpdate, FlError, Weights

EvalFn = Callable[[Weights], dict[str, float]]


def _quality_of(evaluate_fn: EvalFn, metric: str) -> Callable[[Weights], float]:
    from decentralml_jupyter.fl.contract import better

    if not isinstance(metric, str) or not metric:
        raise FlError(f"unknown contribution metric {metric!r}", "name a metric, e.g. 'loss'")
    sign = float(better(metric))

    def quality(weights: Weights) -> float:
        found = evaluate_fn(weights)
        if metric not in found:
            raise FlError(f"the evaluation gives no {metric!r}", f"it gives {sorted(found)}")
        return sign * float(found[metric])

    return quality


def _shares(full: float, without: dict[str, float]) -> dict[str, float]:
    """Each client's gain ``full - without[client]`` (0 if none or not finite), normalised to
    sum to 1; equal shares if nobody gained."""
    raw = {}
    for cid, q in without.items():
        gain = full - q
        raw[cid] = gain if math.isfinite(gain) and gain > 0 else 0.0
    total = math.fsum(raw.values())
    if total <= 0:
        return {cid: 1.0 / len(raw) for cid in raw}
    return {cid: v / total for cid, v in raw.items()}


def leave_one_out(
    strategy: Strategy,
    global_weights: Weights,
    updates: Sequence[ClientUpdate],
    evaluate_fn: EvalFn,
    metric: str = "loss",
) -> dict[str, float]:
    """Non-negative contribution shares per client id, summing to 1.

    ``evaluate_fn(weights)`` returns validation metrics; ``metric`` names the one that
    measures quality, by its Keras name: lower is better for losses and errors (loss, mae,
    mse, ...), higher for the rest (accuracy, auc, ...). The strategy is copied for every
    trial, so a stateful one (FedAdam) is not advanced.
    """
    quality = _quality_of(evaluate_fn, metric)
    ordered = sorted(updates, key=lambda u: u.client_id)
    if not ordered:
        return {}
    if len(ordered) == 1:
        return {ordered[0].client_id: 1.0}

    def aggregate(subset: Sequence[ClientUpdate]) -> Weights:
        return copy.deepcopy(strategy).aggregate(global_weights, subset)

    full = quality(aggregate(ordered))
    without = {
        u.client_id: quality(aggregate(ordered[:i] + ordered[i + 1 :]))
        for i, u in enumerate(ordered)
    }
    return _shares(full, without)


def leave_one_out_linear(
    strategy: Strategy,
    global_weights: Weights,
    total: WeightedSum,
    read: Callable[[str], ClientUpdate],
    evaluate_fn: EvalFn,
    metric: str = "loss",
    full: Weights | None = None,
) -> dict[str, float]:
    """``leave_one_out`` for a LINEAR strategy from the updates' streamed sum: the aggregate
    without update i is (S - n_i w_i) / (N - n_i), with update i read again (``read(client
    id)``, the update as it was added), one at a time, so no more than one update is held.
    The same shares as ``leave_one_out`` up to rounding (the subtraction is not bit-identical
    with re-aggregating the others). ``full``: the aggregate of all, if already made."""
    quality = _quality_of(evaluate_fn, metric)
    ids = list(total.client_ids)
    if len(ids) <= 1:
        return {cid: 1.0 for cid in ids}
    if full is None:
        full = total.aggregate(copy.deepcopy(strategy), global_weights)
    full_quality = quality(full)
    del full  # not held while the others are made
    without = {}
    for cid in ids:
        update = read(cid)
        if update.client_id != cid:
            raise FlError(f"read({cid!r}) gave update {update.client_id}", "read by client id")
        left = total.aggregate(copy.deepcopy(strategy), global_weights, without=update)
        del update
        without[cid] = quality(left)
    return _shares(full_quality, without)
