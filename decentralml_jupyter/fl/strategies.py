"""Server-side aggregation strategies behind one interface, bit-reproducible.

Updates are sorted by client id and accumulated in float64 in that fixed order, so any
validator, given the same updates in any arrival order, produces identical bytes. Results are
cast back to the global model's dtypes. Formulas follow Flower's reference strategies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from decentralml_jupyter.fl.types import ClientUpdate, FlError, Weights


def _sorted(updates: Sequence[ClientUpdate]) -> list[ClientUpdate]:
    if not updates:
        raise FlError("no updates to aggregate", "wait for at least one accepted update")
    ordered = sorted(updates, key=lambda u: u.client_id)
    ids = [u.client_id for u in ordered]
    if len(set(ids)) != len(ids):
        raise FlError("duplicate client ids among updates", "aggregate one update per client")
    return ordered


def _cast_like(values: Sequence[np.ndarray], like: Weights) -> Weights:
    return [np.asarray(v).astype(np.asarray(g).dtype) for v, g in zip(values, like, strict=True)]


def weighted_average(updates: Sequence[ClientUpdate]) -> list[np.ndarray]:
    """Example-weighted mean in float64, accumulated in client-id order (not yet cast)."""
    ordered = _sorted(updates)
    total = sum(u.num_examples for u in ordered)
    if total <= 0:
        raise FlError("updates report zero examples in total", "num_examples must be > 0")
    acc = [np.zeros(np.shape(w), dtype=np.float64) for w in ordered[0].weights]
    for u in ordered:
        for a, w in zip(acc, u.weights, strict=True):
            a += np.asarray(w, dtype=np.float64) * float(u.num_examples)
    return [a / float(total) for a in acc]


def _stack(updates: Sequence[ClientUpdate], layer: int) -> np.ndarray:
    # Sorting along the client axis makes order statistics independent of arrival order.
    return np.sort(
        np.stack([np.asarray(u.weights[layer], dtype=np.float64) for u in updates]), axis=0
    )


class Strategy(ABC):
    """``aggregate(global_weights, updates) -> new global weights``."""

    name: str = "strategy"

    @abstractmethod
    def aggregate(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        """Combine accepted client updates into the next global weights."""

    def client_config(self) -> dict[str, Any]:
        """Settings workers must train with (e.g. FedProx's mu)."""
        return {}


class FedAvg(Strategy):
    """Mean of client weights weighted by their number of examples (McMahan et al. 2017)."""

    name = "fedavg"

    def aggregate(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        return _cast_like(weighted_average(updates), global_weights)


class FedProx(FedAvg):
    """FedProx (Li et al. 2020): clients add a proximal term; the server side is FedAvg."""

    name = "fedprox"

    def __init__(self, proximal_mu: float = 0.01):
        if proximal_mu < 0:
            raise FlError(f"proximal_mu must be >= 0, got {proximal_mu}", "e.g. 0.01")
        self.proximal_mu = proximal_mu

    def client_config(self) -> dict[str, Any]:
        return {"proximal_mu": self.proximal_mu}


class _FedOpt(Strategy):
    """Adaptive server optimisers (Reddi et al. 2021): the FedAvg delta is a pseudo-gradient."""

    def __init__(
        self, eta: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-9
    ):
        if eta <= 0 or not (0 <= beta_1 < 1) or not (0 <= beta_2 < 1) or tau <= 0:
            raise FlError(
                f"bad server optimiser settings: eta={eta}, beta_1={beta_1}, beta_2={beta_2}, "
                f"tau={tau}",
                "eta > 0, 0 <= beta < 1, tau > 0",
            )
        self.eta, self.beta_1, self.beta_2, self.tau = eta, beta_1, beta_2, tau
        self.m: list[np.ndarray] | None = None
        self.v: list[np.ndarray] | None = None
        self.round = 0

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _step_size(self) -> float:
        return self.eta

    def aggregate(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        avg = weighted_average(updates)
        x = [np.asarray(g, dtype=np.float64) for g in global_weights]
        delta = [a - g for a, g in zip(avg, x, strict=True)]
        if self.m is None or self.v is None:
            self.m = [np.zeros_like(d) for d in delta]
            self.v = [np.zeros_like(d) for d in delta]
        self.round += 1
        self.m = [
            self.beta_1 * m + (1 - self.beta_1) * d for m, d in zip(self.m, delta, strict=True)
        ]
        self.v = [self._second_moment(v, d * d) for v, d in zip(self.v, delta, strict=True)]
        eta = self._step_size()
        new = [
            g + eta * m / (np.sqrt(v) + self.tau) for g, m, v in zip(x, self.m, self.v, strict=True)
        ]
        return _cast_like(new, global_weights)

    def state(self) -> dict[str, Any]:
        """Optimiser state, so a validator can persist and resume it."""
        return {"round": self.round, "m": self.m, "v": self.v}


class FedAdam(_FedOpt):
    """Adam on the server, with bias-corrected step size."""

    name = "fedadam"

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return self.beta_2 * v + (1 - self.beta_2) * d2

    def _step_size(self) -> float:
        # Same exponent as Flower's reference (server round + 1), so results compare exactly.
        t = self.round + 1.0
        return self.eta * np.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t)


class FedYogi(_FedOpt):
    """Yogi on the server: second moment moves additively, which is steadier than Adam's."""

    name = "fedyogi"

    def __init__(
        self, eta: float = 0.01, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3
    ):
        super().__init__(eta=eta, beta_1=beta_1, beta_2=beta_2, tau=tau)

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return v - (1 - self.beta_2) * d2 * np.sign(v - d2)


class FedMedian(Strategy):
    """Coordinate-wise median of client weights (robust to a minority of outliers)."""

    name = "fedmedian"

    def aggregate(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        ordered = _sorted(updates)
        out = [np.median(_stack(ordered, i), axis=0) for i in range(len(global_weights))]
        return _cast_like(out, global_weights)


class FedTrimmedAvg(Strategy):
    """Coordinate-wise mean after dropping the ``beta`` fraction of lowest and highest values."""

    name = "trimmed_mean"

    def __init__(self, beta: float = 0.2):
        if not 0 <= beta < 0.5:
            raise FlError(f"trim fraction beta must be in [0, 0.5), got {beta}", "e.g. 0.2")
        self.beta = beta

    def aggregate(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        ordered = _sorted(updates)
        n = len(ordered)
        cut = int(self.beta * n)
        out = []
        for i in range(len(global_weights)):
            s = _stack(ordered, i)[cut : n - cut]
            # Explicit left-to-right sum over the sorted client axis: fixed accumulation order.
            acc = np.zeros(s.shape[1:], dtype=np.float64)
            for row in s:
                acc += row
            out.append(acc / float(n - 2 * cut))
        return _cast_like(out, global_weights)


class Krum(Strategy):
    """Krum (Blanchard et al. 2017): pick the update closest to its n-f-2 nearest neighbours.

    ``num_to_keep > 0`` is Multi-Krum: the example-weighted mean of that many best-scored
    updates. Ties go to the smaller client id.
    """

    name = "krum"

    def __init__(self, num_malicious: int = 0, num_to_keep: int = 0):
        if num_malicious < 0 or num_to_keep < 0:
            raise FlError(
                f"bad Krum settings: num_malicious={num_malicious}, num_to_keep={num_to_keep}",
                "both >= 0",
            )
        self.num_malicious = num_malicious
        self.num_to_keep = num_to_keep

    def scores(self, updates: Sequence[ClientUpdate]) -> dict[str, float]:
        """Krum score per client id (lower is more central)."""
        ordered = _sorted(updates)
        flat = np.stack(
            [
                np.concatenate([np.asarray(w, dtype=np.float64).ravel() for w in u.weights])
                for u in ordered
            ]
        )
        n = len(ordered)
        dist = np.zeros((n, n))
        for i in range(n):
            for j in range(i + 1, n):
                d = flat[i] - flat[j]
                dist[i, j] = dist[j, i] = float(np.dot(d, d))
        k = max(1, n - self.num_malicious - 2)
        out = {}
        for i, u in enumerate(ordered):
            others = np.sort(np.delete(dist[i], i))
            out[u.client_id] = float(np.sum(others[:k]))
        return out

    def select(self, updates: Sequence[ClientUpdate]) -> list[ClientUpdate]:
        """The updates Krum keeps (one, or ``num_to_keep`` for Multi-Krum), by client id."""
        ordered = _sorted(updates)
        scores = self.scores(ordered)
        keep = self.num_to_keep if self.num_to_keep > 0 else 1
        # Stable sort on (score, id): deterministic choice among equal scores.
        ranked = sorted(ordered, key=lambda u: (scores[u.client_id], u.client_id))
        return sorted(ranked[:keep], key=lambda u: u.client_id)

    def aggregate(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        chosen = self.select(updates)
        if self.num_to_keep > 0:
            return _cast_like(weighted_average(chosen), global_weights)
        return _cast_like(chosen[0].weights, global_weights)


class MultiKrum(Krum):
    """Multi-Krum: average of the ``num_to_keep`` most central updates."""

    name = "multikrum"

    def __init__(self, num_malicious: int = 0, num_to_keep: int = 1):
        if num_to_keep < 1:
            raise FlError(f"num_to_keep must be >= 1, got {num_to_keep}", "e.g. n - f")
        super().__init__(num_malicious=num_malicious, num_to_keep=num_to_keep)


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (FedAvg, FedProx, FedAdam, FedYogi, FedMedian, FedTrimmedAvg, Krum, MultiKrum)
}


def make_strategy(name: str, **kwargs: Any) -> Strategy:
    """Strategy by name (``fedavg``, ``fedprox``, ``fedadam``, ``fedyogi``, ``fedmedian``,
    ``trimmed_mean``, ``krum``, ``multikrum``) with its keyword settings."""
    cls = STRATEGIES.get(name)
    if cls is None:
        raise FlError(f"unknown strategy {name!r}", f"choose one of {', '.join(STRATEGIES)}")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise FlError(f"bad settings for {name}: {err}", "see the strategy's docstring") from err
