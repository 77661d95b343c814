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

from decentralml_jupyter.fl.strategies import Strategy
from decentralml_jupyter.fl.types import ClientUpdate, FlError, Weights

EvalFn = Callable[[Weights], dict[str, float]]


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
    from decentralml_jupyter.fl.contract import better

    if not isinstance(metric, str) or not metric:
        raise FlError(f"unknown contribution metric {metric!r}", "name a metric, e.g. 'loss'")
    ordered = sorted(updates, key=lambda u: u.client_id)
    if not ordered:
        return {}
    if len(ordered) == 1:
        return {ordered[0].client_id: 1.0}
    sign = float(better(metric))

    def quality(subset: Sequence[ClientUpdate]) -> float:
        weights = copy.deepcopy(strategy).aggregate(global_weights, subset)
        found = evaluate_fn(weights)
        if metric not in found:
            raise FlError(f"the evaluation gives no {metric!r}", f"it gives {sorted(found)}")
        return sign * float(found[metric])

    full = quality(ordered)
    raw = {}
    for i, u in enumerate(ordered):
        without = quality(ordered[:i] + ordered[i + 1 :])
        gain = full - without
        raw[u.client_id] = gain if math.isfinite(gain) and gain > 0 else 0.0
    total = math.fsum(raw.values())
    if total <= 0:
        return {cid: 1.0 / len(ordered) for cid in raw}
    return {cid: v / total for cid, v in raw.items()}
