"""Contribution shares of a large round, to first order.

Leave-one-out evaluates one model per client: n + 1 evaluations on the held-out data, which
is what a round of a thousand clients cannot afford, and what it does not need. Leaving client
i out of an example-weighted mean of n clients moves the mean by

    d_i = n_i / (N - n_i) * (mean - w_i)        (N: all the round's examples)

a move of order 1/n, along which the held-out loss is linear to first order:
loss(without i) - loss(all) ~= g . d_i, with g the loss's gradient at the round's model. So
one gradient and one dot product per update (g . w_i, read from a stream of updates and then
dropped) give every client's gain, and g . mean is their example-weighted mean. The shares
follow leave_one_out's rule: positive gains, normalised; none positive, equal shares.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from decentralml_jupyter.fl.types import ClientUpdate, FlError, Weights

# above this many accepted updates, validators (and the simulation) score contributions to
# first order instead of re-evaluating the model once per client
EXACT_CONTRIBUTIONS_MAX = 64


def _dot(a: Weights, b: Weights) -> float:
    if len(a) != len(b):
        raise FlError(f"{len(b)} weight arrays, the gradient has {len(a)}", "same model")
    return math.fsum(
        float(np.dot(np.ravel(x).astype(np.float64), np.ravel(y).astype(np.float64)))
        for x, y in zip(a, b, strict=True)
    )


def first_order_shares(gradient: Weights, updates: Iterable[ClientUpdate]) -> dict[str, float]:
    """Non-negative shares per client id, summing to 1, from ``gradient`` (the held-out
    loss's gradient at the round's model, see ``fl.loss_gradient``) and ``updates`` (any
    iterable, e.g. a generator reading them one at a time: each is used once and dropped)."""
    seen: dict[str, tuple[int, float]] = {}
    for u in updates:
        if u.client_id in seen:
            raise FlError(f"update of {u.client_id} given twice", "one update per client")
        seen[u.client_id] = (int(u.num_examples), _dot(gradient, u.weights))
    if not seen:
        return {}
    if len(seen) == 1:
        return dict.fromkeys(seen, 1.0)
    total = sum(n for n, _ in seen.values())
    if total <= 0:
        raise FlError("updates claim no examples", "each update needs num_examples > 0")
    g_mean = math.fsum(n * d for n, d in seen.values()) / total
    raw = {}
    for cid, (n, d) in seen.items():
        gain = n / (total - n) * (g_mean - d) if total > n else 0.0
        raw[cid] = gain if math.isfinite(gain) and gain > 0 else 0.0
    norm = math.fsum(raw.values())
    if norm <= 0:
        return {cid: 1.0 / len(raw) for cid in raw}
    return {cid: v / norm for cid, v in raw.items()}
