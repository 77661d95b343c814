"""Server-side aggregation strategies behind one interface, bit-reproducible.

Updates are sorted by client id and accumulated in float64 in that fixed order, so any
validator, given the same updates in any arrival order, produces identical bytes. Results are
cast back to the global model's dtypes. Formulas follow Flower's reference strategies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
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


# Layers are aggregated a block of elements at a time, so the per-client float64 rows of a block
# stay in cache instead of making full-size float64 temporaries (the old cost: several passes
# over memory per update). Every element is still computed by the same formula in the same
# client order, so blocking changes no bit of any result.
_BLOCK = 1 << 15
_BLOCK_VALUES = 1 << 19  # at most this many float64 values (4 MiB) in a block's buffer
# A float16/float32 value times an integer below 2**29 is exact in float64 (at most 24 + 29
# significant bits), so multiply-then-add and a fused multiply-add round identically there.
_EXACT_DTYPES = frozenset({np.dtype(np.float16), np.dtype(np.float32)})
_EXACT_FACTOR = 1 << 29
# The fused path leans on np.einsum adding clients one after another along the leading axis;
# numpy does so when the element axis is the inner loop, i.e. for blocks that are not tiny.
# tests/fl/test_fl_aggregate_exact.py pins the result to the plain formula.
_FUSED_MIN = 64


# The compiled FedAvg pass (fl/_fedavg_kernel.py, numba): loaded on first use; False when numba
# cannot be imported, and then the numpy path below computes the same bits.
_KERNEL: Any = None


def _fedavg_kernel() -> Any:
    global _KERNEL
    if _KERNEL is None:
        try:
            from decentralml_jupyter.fl import _fedavg_kernel
        except ImportError:
            _KERNEL = False
        else:
            _KERNEL = _fedavg_kernel
    return _KERNEL or None


def warm_up() -> None:
    """Load and compile the compiled FedAvg pass now (about 2 s the first time on a machine,
    0.3 s from numba's cache), so that a validator's first round does not wait for it."""
    kernel = _fedavg_kernel()
    if kernel is not None:
        kernel.warm_up()


def _block_len(size: int, clients: int) -> int:
    """Elements per block: a block's float64 rows of every client stay within a few MiB."""
    return max(1, min(size, _BLOCK, max(_FUSED_MIN, _BLOCK_VALUES // clients)))


def _layer_rows(ordered: Sequence[ClientUpdate], layer: int) -> list[np.ndarray]:
    """Layer ``layer`` of every update as a flat array (a view when it is contiguous)."""
    rows = []
    shape = None
    for u in ordered:
        w = np.asarray(u.weights[layer])
        if shape is None:
            shape = w.shape
        elif w.shape != shape:
            raise FlError(
                f"update {u.client_id}: tensor {layer} has shape {w.shape}, expected {shape}",
                "every update must have the global model's shapes",
            )
        rows.append(w.reshape(-1))
    return rows


def _check_layers(ordered: Sequence[ClientUpdate], global_weights: Weights | None) -> int:
    """The number of weight tensors, the same in every update (and the global model)."""
    count = len(ordered[0].weights) if global_weights is None else len(global_weights)
    for u in ordered:
        if len(u.weights) != count:
            raise FlError(
                f"update {u.client_id} has {len(u.weights)} weight tensors, expected {count}",
                "every update must have the global model's tensors",
            )
    return count


def _weighted_mean(updates: Sequence[ClientUpdate], dtypes: Sequence[Any] | None) -> Weights:
    """Example-weighted mean per layer, cast to ``dtypes`` (None: float64).

    Equals, bit for bit, ``sum(float64(w) * float(n) for updates by client id) / float(total)``
    accumulated from 0.0 left to right, then cast.
    """
    ordered = _sorted(updates)
    total = sum(u.num_examples for u in ordered)
    if total <= 0:
        raise FlError("updates report zero examples in total", "num_examples must be > 0")
    count = _check_layers(ordered, None)
    if dtypes is not None and len(dtypes) != count:
        raise FlError(
            f"updates have {count} weight tensors, the global model has {len(dtypes)}",
            "every update must have the global model's tensors",
        )
    factors = [float(u.num_examples) for u in ordered]
    exact_factors = all(f.is_integer() and abs(f) < _EXACT_FACTOR for f in factors)
    fvec = np.array(factors, dtype=np.float64)
    fcol = fvec[:, np.newaxis]
    divisor = float(total)
    k = len(ordered)
    kernel = _fedavg_kernel()
    out: Weights = []
    for i in range(count):
        rows = _layer_rows(ordered, i)
        shape = np.shape(ordered[0].weights[i])
        size = rows[0].size
        res = np.empty(size, dtype=np.float64 if dtypes is None else np.dtype(dtypes[i]))
        if (
            kernel is not None
            and size * k >= kernel.MIN_WORK
            and res.dtype in kernel.OUTPUT_DTYPES
            and all(r.dtype == np.float32 for r in rows)
        ):
            # One compiled pass, the same bits (see fl/_fedavg_kernel.py).
            kernel.weighted_mean_into(rows, fvec, divisor, res)
            out.append(res.reshape(shape))
            continue
        fused = exact_factors and all(r.dtype in _EXACT_DTYPES for r in rows)
        block = _block_len(size, k)
        acc = np.empty(block, dtype=np.float64)
        buf = np.empty((k, block), dtype=np.float64)
        for start in range(0, size, block):
            stop = min(start + block, size)
            n = stop - start
            a = acc[:n]
            b = buf[:, :n]
            # The same cast as np.asarray(w, dtype=np.float64), into the block's rows.
            np.stack([src[start:stop] for src in rows], out=b, casting="unsafe")
            if fused and n >= _FUSED_MIN:
                # a = 0.0 + f0*b0 + f1*b1 + ..., clients in order: one pass instead of two.
                np.einsum(fvec, [0], b, [0, 1], [1], out=a)
            else:
                np.multiply(b, fcol, out=b)
                a.fill(0.0)
                for row in b:
                    np.add(a, row, out=a)
            np.divide(a, divisor, out=a)
            res[start:stop] = a  # the same cast as .astype(dtype)
        out.append(res.reshape(shape))
    return out


def weighted_average(updates: Sequence[ClientUpdate]) -> list[np.ndarray]:
    """Example-weighted mean in float64, accumulated in client-id order (not yet cast)."""
    return _weighted_mean(updates, None)


def _sorted_blocks(
    ordered: Sequence[ClientUpdate], layer: int
) -> tuple[tuple[int, ...], int, Iterator[tuple[int, int, np.ndarray]]]:
    """Layer ``layer`` of every update, block by block, sorted along the client axis.

    Yields ``(start, stop, sorted)`` with ``sorted`` of shape (clients, stop - start), a view
    of a buffer reused for the next block. Sorting along the client axis makes order
    statistics independent of arrival order. The buffer is laid out with the client axis
    contiguous, so each element's short sort runs in place; numpy sorts a strided axis by
    copying it out and back, with the same algorithm, so the values are the same.
    """
    rows = _layer_rows(ordered, layer)
    shape = np.shape(ordered[0].weights[layer])
    size = rows[0].size
    block = _block_len(size, len(rows))

    def blocks() -> Iterator[tuple[int, int, np.ndarray]]:
        buf = np.empty((block, len(rows)), dtype=np.float64)
        for start in range(0, size, block):
            stop = min(start + block, size)
            b = buf[: stop - start]
            for j, src in enumerate(rows):
                b[:, j] = src[start:stop]
            b.sort(axis=1)
            yield start, stop, b.T

    return shape, size, blocks()


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
        return _weighted_mean(updates, [np.asarray(g).dtype for g in global_weights])


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
        _check_layers(ordered, global_weights)
        out = []
        for i, g in enumerate(global_weights):
            shape, size, blocks = _sorted_blocks(ordered, i)
            res = np.empty(size, dtype=np.asarray(g).dtype)
            for start, stop, s in blocks:
                res[start:stop] = np.median(s, axis=0)
            out.append(res.reshape(shape))
        return out


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
        _check_layers(ordered, global_weights)
        out = []
        for i, g in enumerate(global_weights):
            shape, size, blocks = _sorted_blocks(ordered, i)
            res = np.empty(size, dtype=np.asarray(g).dtype)
            acc = np.empty(_block_len(size, n), dtype=np.float64)
            for start, stop, s in blocks:
                # Explicit left-to-right sum over the sorted client axis: fixed order.
                a = acc[: stop - start]
                a.fill(0.0)
                for row in s[cut : n - cut]:
                    np.add(a, row, out=a)
                np.divide(a, float(n - 2 * cut), out=a)
                res[start:stop] = a
            out.append(res.reshape(shape))
        return out


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
        n = len(ordered)
        size = sum(np.size(w) for w in ordered[0].weights)
        # All updates flattened into one float64 matrix, written in place: no per-layer and
        # per-update temporaries (at 10M parameters those were gigabytes of fresh memory).
        flat = np.empty((n, size), dtype=np.float64)
        for row, u in zip(flat, ordered, strict=True):
            if sum(np.size(w) for w in u.weights) != size:
                raise FlError(
                    f"update {u.client_id} has a different number of parameters",
                    "every update must have the global model's shapes",
                )
            start = 0
            for w in u.weights:
                a = np.asarray(w)
                row[start : start + a.size] = a.reshape(-1)
                start += a.size
        dist = np.zeros((n, n))
        d = np.empty(flat.shape[1:], dtype=np.float64)  # one buffer, not n*(n-1)/2 arrays
        for i in range(n):
            for j in range(i + 1, n):
                np.subtract(flat[i], flat[j], out=d)
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
