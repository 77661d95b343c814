"""Checks a validator makes on a client update before aggregating it.

Shapes and dtypes must match the global model, every value must be finite, and the L2 norm of
the delta (update - global) must stay within a bound. Failing updates are slashed, not used.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from decentralml_jupyter.fl.types import CheckResult, ClientUpdate, Weights


def delta_norm(global_weights: Weights, weights: Weights) -> float:
    """L2 norm of ``weights - global_weights`` over all layers, computed in float64."""
    total = 0.0
    for g, w in zip(global_weights, weights, strict=True):
        d = np.asarray(w, dtype=np.float64) - np.asarray(g, dtype=np.float64)
        total += float(np.dot(d.ravel(), d.ravel()))
    return math.sqrt(total)


def check_update(
    global_weights: Weights,
    update: ClientUpdate | Weights,
    max_delta_norm: float | None = None,
    max_examples: int | None = None,
) -> CheckResult:
    """Accept or reject an update, with the reason for a rejection.

    ``max_delta_norm`` bounds how far one update may move the model (None: no bound);
    ``max_examples`` bounds the example count a client may claim (it weights FedAvg).
    """
    weights = update.weights if isinstance(update, ClientUpdate) else update
    if isinstance(update, ClientUpdate):
        if update.num_examples < 1:
            return CheckResult(False, f"num_examples is {update.num_examples}, must be >= 1")
        if max_examples is not None and update.num_examples > max_examples:
            return CheckResult(
                False, f"num_examples {update.num_examples} exceeds the limit {max_examples}"
            )
    if len(weights) != len(global_weights):
        return CheckResult(
            False, f"{len(weights)} weight tensors, the model has {len(global_weights)}"
        )
    for i, (g, w) in enumerate(zip(global_weights, weights, strict=True)):
        g, w = np.asarray(g), np.asarray(w)
        if w.shape != g.shape:
            return CheckResult(False, f"tensor {i} has shape {w.shape}, expected {g.shape}")
        if w.dtype != g.dtype:
            return CheckResult(False, f"tensor {i} has dtype {w.dtype}, expected {g.dtype}")
        if np.issubdtype(w.dtype, np.inexact) and not np.all(np.isfinite(w)):
            return CheckResult(False, f"tensor {i} has non-finite values (NaN or inf)")
    norm = delta_norm(global_weights, weights)
    if not math.isfinite(norm):
        return CheckResult(False, "delta norm overflows", norm)
    if max_delta_norm is not None and norm > max_delta_norm:
        return CheckResult(
            False, f"delta L2 norm {norm:.4g} exceeds the bound {max_delta_norm:.4g}", norm
        )
    return CheckResult(True, "", norm)


# A claim of examples counts for at most this many times the round's median claim.
EXAMPLES_BOUND = 3


def bound_examples(updates: list[ClientUpdate], factor: int = EXAMPLES_BOUND) -> list[ClientUpdate]:
    """The updates with each claimed example count capped at ``factor`` times the round's
    (lower) median claim. ``num_examples`` is what a worker says; it weights FedAvg and
    contribution by examples, so an unbounded claim would buy weight. Capped, a worker that
    lies gains at most ``factor`` times a typical worker's weight, and honest workers keep
    their own counts unless theirs is that far above the median. Deterministic integers, so
    every validator caps alike."""
    if not updates:
        return []
    claims = sorted(u.num_examples for u in updates)
    cap = factor * claims[(len(claims) - 1) // 2]
    return [
        u if u.num_examples <= cap else dataclasses.replace(u, num_examples=cap) for u in updates
    ]
