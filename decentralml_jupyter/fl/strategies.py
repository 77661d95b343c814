"""Server-side aggregation strategies behind one interface, bit-reproducible.

Updates are sorted by client id and accumulated in float64 in that fixed order, so any
validator, given the same updates in any arrival order, produces identical bytes. Results are
cast back to the global model's dtypes. Formulas follow Flower's reference strategies.

A strategy is an object configured once per model: its parameters (``PARAMS``: FedProx's
``mu``, Krum's ``f`` and ``keep``, trimmed mean's ``beta``, the server optimizers' ``eta``,
``beta_1``, ``beta_2``, ``tau``, FedAvgM's ``momentum``) are what the model registers on chain
(``check_params`` is the rule the protocol applies), and a stateful one (the server optimizers)
carries its state from round to round as bytes (``state_bytes``/``restore``), which validators
store by CID beside the global weights, so that rounds on the network equal rounds in-process.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

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


class WeightedSum:
    """The example-weighted sum of updates fed one at a time, in client-id order, into one
    float64 accumulator per layer: what a LINEAR strategy needs, without holding every update
    (a validator reads each update, adds it and drops it).

    ``aggregate(strategy, global_weights)`` equals ``strategy.aggregate(global_weights,
    updates)`` bit for bit: each element is ``0.0 + f0*x0 + f1*x1 + ...`` (products rounded
    to float64, added in client order) divided by the total, as in ``_weighted_mean``.
    ``aggregate(..., without=u)`` leaves ``u`` out by subtraction, (S - n_u w_u) / (N - n_u):
    close to re-aggregating the others, not bit-identical (for contributions, which are
    medianed across validators, never compared bit for bit).
    """

    def __init__(self, global_weights: Weights):
        self._acc = [np.zeros(np.shape(g), dtype=np.float64) for g in global_weights]
        self.total = 0
        self.client_ids: list[str] = []

    def _layers(self, update: ClientUpdate) -> list[np.ndarray]:
        if len(update.weights) != len(self._acc):
            raise FlError(
                f"update {update.client_id} has {len(update.weights)} weight tensors, "
                f"expected {len(self._acc)}",
                "every update must have the global model's tensors",
            )
        rows = []
        for i, (w, acc) in enumerate(zip(update.weights, self._acc, strict=True)):
            w = np.asarray(w)
            if w.shape != acc.shape:
                raise FlError(
                    f"update {update.client_id}: tensor {i} has shape {w.shape}, "
                    f"expected {acc.shape}",
                    "every update must have the global model's shapes",
                )
            rows.append(w.reshape(-1))
        return rows

    def add(self, update: ClientUpdate) -> None:
        """Add ``n * float64(w)`` of one more update (client ids strictly increasing)."""
        if self.client_ids and update.client_id <= self.client_ids[-1]:
            raise FlError(
                f"update {update.client_id} added after {self.client_ids[-1]}",
                "add updates in client-id order, one per client",
            )
        f = float(update.num_examples)
        for acc, row in zip(self._acc, self._layers(update), strict=True):
            flat = acc.reshape(-1)
            tmp = np.empty(min(_BLOCK, flat.size), dtype=np.float64)
            for start in range(0, flat.size, _BLOCK):
                stop = min(start + _BLOCK, flat.size)
                t = tmp[: stop - start]
                t[...] = row[start:stop]  # the same cast as np.asarray(w, dtype=np.float64)
                np.multiply(t, f, out=t)
                np.add(flat[start:stop], t, out=flat[start:stop])
        self.total += update.num_examples
        self.client_ids.append(update.client_id)

    def mean(self, without: ClientUpdate | None = None, dtypes: Sequence[Any] | None = None):
        """(S - [n_u w_u]) / (N - [n_u]) per layer, a block at a time, cast to ``dtypes``
        (None: float64, as ``weighted_average``)."""
        if not self.client_ids:
            raise FlError("no updates to aggregate", "wait for at least one accepted update")
        rows: list[np.ndarray | None] = [None] * len(self._acc)
        total = self.total
        if without is not None:
            if without.client_id not in self.client_ids:
                raise FlError(
                    f"update {without.client_id} is not in the sum", "leave out one added"
                )
            rows = list(self._layers(without))
            total -= without.num_examples
        if total <= 0:
            raise FlError("updates report zero examples in total", "num_examples must be > 0")
        f, divisor = float(0 if without is None else without.num_examples), float(total)
        out: Weights = []
        for i, acc in enumerate(self._acc):
            flat, row = acc.reshape(-1), rows[i]
            res = np.empty(flat.size, dtype=np.float64 if dtypes is None else np.dtype(dtypes[i]))
            tmp = np.empty(min(_BLOCK, flat.size), dtype=np.float64)
            for start in range(0, flat.size, _BLOCK):
                stop = min(start + _BLOCK, flat.size)
                t = tmp[: stop - start]
                if row is None:
                    np.divide(flat[start:stop], divisor, out=t)
                else:
                    t[...] = row[start:stop]
                    np.multiply(t, f, out=t)
                    np.subtract(flat[start:stop], t, out=t)
                    np.divide(t, divisor, out=t)
                res[start:stop] = t  # the same cast as .astype(dtype)
            out.append(res.reshape(acc.shape))
        return out

    def aggregate(
        self, strategy: Strategy, global_weights: Weights, without: ClientUpdate | None = None
    ) -> Weights:
        """The LINEAR ``strategy``'s next global weights from this sum (less ``without``).
        Of ``global_weights`` FedAvg (and FedProx, ProxyFL: a cast is their step) reads only
        the dtypes; the stateful strategies step from them."""
        if not strategy.LINEAR:
            raise FlError(
                f"{strategy.name} needs every update at once, not their sum",
                "aggregate it with strategy.aggregate(global_weights, updates)",
            )
        if isinstance(strategy, FedAvg):  # its step is the cast: done block by block
            return self.mean(without, [np.asarray(g).dtype for g in global_weights])
        return strategy.step(global_weights, self.mean(without))


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


@dataclass(frozen=True)
class Param:
    """One setting of a strategy: its short name on chain and in ``--strategy-param``, the
    constructor argument it sets, its bounds, and its default (None: chosen each round from
    the number of updates, e.g. Krum's ``f``)."""

    name: str
    arg: str
    default: float | int | None
    low: float
    high: float
    integer: bool = False
    low_open: bool = False  # low itself not allowed
    high_open: bool = False  # high itself not allowed
    help: str = ""

    def bounds(self) -> str:
        return (
            f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
            f"{')' if self.high_open else ']'}"
        )

    def parse(self, raw: Any) -> float | int:
        """The value of ``raw`` (text or a number), checked against the bounds."""
        what = "an integer" if self.integer else "a number"
        try:
            if isinstance(raw, bool):
                raise ValueError
            value: float | int = int(str(raw)) if self.integer else float(str(raw))
        except ValueError:
            raise FlError(
                f"strategy parameter {self.name} must be {what}, got {raw!r}",
                f"{self.name}: {self.help} in {self.bounds()}",
            ) from None
        ok = math.isfinite(value) and (
            (value > self.low if self.low_open else value >= self.low)
            and (value < self.high if self.high_open else value <= self.high)
        )
        if not ok:
            raise FlError(
                f"strategy parameter {self.name}={raw} is out of range {self.bounds()}",
                f"{self.name}: {self.help}",
            )
        return value


class Strategy(ABC):
    """``aggregate(global_weights, updates) -> new global weights``.

    ``PARAMS`` declares its settings; ``STATEFUL`` ones carry state across rounds (read it
    with ``state_bytes``, put it back with ``restore``); ``LINEAR`` ones see the updates only
    through their example-weighted mean (``step``), so they also work on a securely
    aggregated sum, where no single update is visible.
    """

    name: str = "strategy"
    PARAMS: ClassVar[tuple[Param, ...]] = ()
    STATEFUL: ClassVar[bool] = False
    LINEAR: ClassVar[bool] = False

    @abstractmethod
    def aggregate(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        """Combine accepted client updates into the next global weights."""

    def step(self, global_weights: Weights, average: Weights) -> Weights:
        """For a LINEAR strategy: the next global weights from the updates' mean."""
        raise FlError(
            f"{self.name} needs each update, not only their mean",
            "use a linear strategy (fedavg, fedprox, fedavgm, fedadam, fedyogi) for secure "
            "aggregation",
        )

    def client_config(self) -> dict[str, Any]:
        """Settings workers must train with (e.g. FedProx's mu)."""
        return {}

    def params(self) -> dict[str, float | int | None]:
        """The strategy's settings by their short names (None: chosen each round)."""
        return {p.name: getattr(self, p.arg) for p in self.PARAMS}

    def state_bytes(self) -> bytes | None:
        """The state carried to the next round, as deterministic bytes (None: none yet, or a
        stateless strategy)."""
        return None

    def restore(self, data: bytes | None) -> None:
        """Take up the state ``state_bytes`` gave after an earlier round (None: start
        afresh)."""
        if data is not None:
            raise FlError(f"{self.name} carries no state across rounds", "pass None")


class FedAvg(Strategy):
    """Mean of client weights weighted by their number of examples (McMahan et al. 2017)."""

    name = "fedavg"
    LINEAR = True

    def aggregate(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        return _weighted_mean(updates, [np.asarray(g).dtype for g in global_weights])

    def step(self, global_weights: Weights, average: Weights) -> Weights:
        return _cast_like(average, global_weights)


class FedProx(FedAvg):
    """FedProx (Li et al. 2020): clients add a proximal term; the server side is FedAvg."""

    name = "fedprox"
    PARAMS = (Param("mu", "proximal_mu", 0.01, 0.0, 1000.0, help="weight of the proximal term"),)

    def __init__(self, proximal_mu: float = 0.01):
        if proximal_mu < 0:
            raise FlError(f"proximal_mu must be >= 0, got {proximal_mu}", "e.g. 0.01")
        self.proximal_mu = proximal_mu

    def client_config(self) -> dict[str, Any]:
        return {"proximal_mu": self.proximal_mu}


class ProxyFL(FedAvg):
    """ProxyFL (Kalra et al. 2023): workers keep private models and share proxies trained by
    mutual distillation (``fl.proxyfl``); the server side averages the proxies as FedAvg.
    ``alpha``: the private model's weight on the proxy's predictions; ``beta``: the proxy's
    on the private model's."""

    name = "proxyfl"
    PARAMS = (
        Param("alpha", "alpha", 0.5, 0.0, 1.0, help="private model's distillation weight"),
        Param("beta", "beta", 0.5, 0.0, 1.0, help="proxy's distillation weight"),
    )

    def __init__(self, alpha: float = 0.5, beta: float = 0.5):
        if not (0 <= alpha <= 1 and 0 <= beta <= 1):
            raise FlError(f"alpha and beta must be in [0, 1], got {alpha}, {beta}", "e.g. 0.5")
        self.alpha, self.beta = alpha, beta

    def client_config(self) -> dict[str, Any]:
        return {"proxyfl": True, "alpha": self.alpha, "beta": self.beta}


def _server_lr(default: float) -> Param:
    return Param("eta", "eta", default, 0.0, 100.0, low_open=True, help="server learning rate")


class _Stateful(Strategy):
    """A strategy whose state is float64 arrays plus a round counter, kept between rounds."""

    STATEFUL = True
    LINEAR = True

    def __init__(self) -> None:
        self.round = 0
        self._arrays: list[list[np.ndarray]] | None = None  # one list of layers per slot
        self._slots = 1

    def aggregate(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        return self.step(global_weights, weighted_average(updates))

    def state_bytes(self) -> bytes | None:
        from decentralml_jupyter.fl.serialize import weights_to_bytes

        if self._arrays is None:
            return None
        flat = [np.asarray(self.round, dtype=np.int64)]
        for slot in self._arrays:
            flat.extend(np.asarray(a, dtype=np.float64) for a in slot)
        return weights_to_bytes(flat)

    def restore(self, data: bytes | None) -> None:
        from decentralml_jupyter.fl.serialize import weights_from_bytes

        if data is None:
            self.round, self._arrays = 0, None
            return
        try:
            flat = weights_from_bytes(data)
        except FlError as err:
            raise FlError(
                f"not a {self.name} server state: {err}",
                "pass bytes its state_bytes() returned",
            ) from err
        rest = flat[1:]
        ok = (
            flat
            and flat[0].dtype == np.int64
            and flat[0].shape == ()
            and len(rest) % self._slots == 0
            and all(a.dtype == np.float64 for a in rest)
        )
        if not ok:
            raise FlError(
                f"not a {self.name} server state", "pass bytes its state_bytes() returned"
            )
        per = len(rest) // self._slots
        self.round = int(flat[0])
        self._arrays = [list(rest[i * per : (i + 1) * per]) for i in range(self._slots)]

    def _state_for(self, delta: list[np.ndarray]) -> list[list[np.ndarray]]:
        if self._arrays is None:
            self._arrays = [[np.zeros_like(d) for d in delta] for _ in range(self._slots)]
        shapes = [np.shape(d) for d in delta]
        if any([np.shape(a) for a in slot] != shapes for slot in self._arrays):
            raise FlError(
                f"the {self.name} server state does not fit the model's weights",
                "start the strategy afresh (restore(None)) for a new architecture",
            )
        return self._arrays


class _FedOpt(_Stateful):
    """Adaptive server optimisers (Reddi et al. 2021): the FedAvg delta is a pseudo-gradient."""

    PARAMS = (
        _server_lr(0.1),
        Param("beta_1", "beta_1", 0.9, 0.0, 1.0, high_open=True, help="first-moment decay"),
        Param("beta_2", "beta_2", 0.99, 0.0, 1.0, high_open=True, help="second-moment decay"),
        Param("tau", "tau", 1e-9, 0.0, 1.0, low_open=True, help="adaptivity (epsilon)"),
    )

    def __init__(
        self, eta: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-9
    ):
        if eta <= 0 or not (0 <= beta_1 < 1) or not (0 <= beta_2 < 1) or tau <= 0:
            raise FlError(
                f"bad server optimiser settings: eta={eta}, beta_1={beta_1}, beta_2={beta_2}, "
                f"tau={tau}",
                "eta > 0, 0 <= beta < 1, tau > 0",
            )
        super().__init__()
        self._slots = 2
        self.eta, self.beta_1, self.beta_2, self.tau = eta, beta_1, beta_2, tau

    @property
    def m(self) -> list[np.ndarray] | None:
        return None if self._arrays is None else self._arrays[0]

    @property
    def v(self) -> list[np.ndarray] | None:
        return None if self._arrays is None else self._arrays[1]

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _step_size(self) -> float:
        return self.eta

    def step(self, global_weights: Weights, average: Weights) -> Weights:
        x = [np.asarray(g, dtype=np.float64) for g in global_weights]
        delta = [np.asarray(a, dtype=np.float64) - g for a, g in zip(average, x, strict=True)]
        m, v = self._state_for(delta)
        self.round += 1
        m = [self.beta_1 * a + (1 - self.beta_1) * d for a, d in zip(m, delta, strict=True)]
        v = [self._second_moment(a, d * d) for a, d in zip(v, delta, strict=True)]
        self._arrays = [m, v]
        eta = self._step_size()
        new = [g + eta * a / (np.sqrt(b) + self.tau) for g, a, b in zip(x, m, v, strict=True)]
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
    PARAMS = (_server_lr(0.01), *_FedOpt.PARAMS[1:3], Param(
        "tau", "tau", 1e-3, 0.0, 1.0, low_open=True, help="adaptivity (epsilon)"
    ))  # fmt: skip

    def __init__(
        self, eta: float = 0.01, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3
    ):
        super().__init__(eta=eta, beta_1=beta_1, beta_2=beta_2, tau=tau)

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return v - (1 - self.beta_2) * d2 * np.sign(v - d2)


class FedAvgM(_Stateful):
    """FedAvg with server momentum (Hsu et al. 2019, Flower's FedAvgM): the pseudo-gradient
    ``x - mean`` feeds a momentum buffer, and the server steps ``eta`` along it."""

    name = "fedavgm"
    PARAMS = (
        _server_lr(1.0),
        Param("momentum", "momentum", 0.9, 0.0, 1.0, high_open=True, help="server momentum"),
    )

    def __init__(self, eta: float = 1.0, momentum: float = 0.9):
        if eta <= 0 or not 0 <= momentum < 1:
            raise FlError(
                f"bad FedAvgM settings: eta={eta}, momentum={momentum}",
                "eta > 0, 0 <= momentum < 1",
            )
        super().__init__()
        self.eta, self.momentum = eta, momentum

    def step(self, global_weights: Weights, average: Weights) -> Weights:
        x = [np.asarray(g, dtype=np.float64) for g in global_weights]
        grad = [g - np.asarray(a, dtype=np.float64) for a, g in zip(average, x, strict=True)]
        [buf] = self._state_for(grad)
        if self.round > 0:
            grad = [self.momentum * b + d for b, d in zip(buf, grad, strict=True)]
        self.round += 1
        self._arrays = [grad]
        new = [g - self.eta * d for g, d in zip(x, grad, strict=True)]
        return _cast_like(new, global_weights)


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
    PARAMS = (
        Param(
            "beta", "beta", 0.2, 0.0, 0.5, high_open=True,
            help="fraction trimmed at each end",
        ),
    )  # fmt: skip

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

    ``f`` (``num_malicious``) is how many attackers it tolerates; None (the default) takes the
    most Krum can for the round's n updates, (n - 3) // 2. ``keep`` (``num_to_keep``) > 0 is
    Multi-Krum: the example-weighted mean of that many best-scored updates. Ties go to the
    smaller client id.
    """

    name = "krum"
    PARAMS = (Param("f", "num_malicious", None, 0, 64, integer=True, help="attackers to tolerate"),)

    def __init__(self, num_malicious: int | None = None, num_to_keep: int = 0):
        if (num_malicious is not None and num_malicious < 0) or (
            num_to_keep is not None and num_to_keep < 0
        ):
            raise FlError(
                f"bad Krum settings: num_malicious={num_malicious}, num_to_keep={num_to_keep}",
                "both >= 0",
            )
        self.num_malicious = num_malicious
        self.num_to_keep = num_to_keep

    def tolerated(self, n: int) -> int:
        """f for a round of ``n`` updates."""
        return max(0, (n - 3) // 2) if self.num_malicious is None else self.num_malicious

    def kept(self, n: int) -> int:
        """How many updates are averaged in a round of ``n`` (1: plain Krum)."""
        return 1 if not self.num_to_keep else min(n, self.num_to_keep)

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
        k = max(1, n - self.tolerated(n) - 2)
        out = {}
        for i, u in enumerate(ordered):
            others = np.sort(np.delete(dist[i], i))
            out[u.client_id] = float(np.sum(others[:k]))
        return out

    def select(self, updates: Sequence[ClientUpdate]) -> list[ClientUpdate]:
        """The updates Krum keeps (one, or ``keep`` for Multi-Krum), by client id."""
        ordered = _sorted(updates)
        scores = self.scores(ordered)
        keep = self.kept(len(ordered))
        # Stable sort on (score, id): deterministic choice among equal scores.
        ranked = sorted(ordered, key=lambda u: (scores[u.client_id], u.client_id))
        return sorted(ranked[:keep], key=lambda u: u.client_id)

    def aggregate(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        chosen = self.select(updates)
        if self.num_to_keep != 0:
            return _cast_like(weighted_average(chosen), global_weights)
        return _cast_like(chosen[0].weights, global_weights)


class MultiKrum(Krum):
    """Multi-Krum: the example-weighted mean of the ``keep`` most central updates; by default
    (None) of n - f of the round's n updates, all but as many as it tolerates attackers."""

    name = "multikrum"
    PARAMS = (
        *Krum.PARAMS,
        Param("keep", "num_to_keep", None, 1, 64, integer=True, help="updates averaged"),
    )

    def __init__(self, num_malicious: int | None = None, num_to_keep: int | None = None):
        if num_to_keep is not None and num_to_keep < 1:
            raise FlError(f"num_to_keep must be >= 1, got {num_to_keep}", "e.g. n - f")
        super().__init__(num_malicious=num_malicious, num_to_keep=0)
        self.num_to_keep = num_to_keep  # type: ignore[assignment]

    def kept(self, n: int) -> int:
        keep = n - self.tolerated(n) if self.num_to_keep is None else self.num_to_keep
        return max(1, min(n, keep))


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, FedMedian, FedTrimmedAvg, Krum, MultiKrum,
        ProxyFL,
    )
}  # fmt: skip
SECURE = ":secure"  # a strategy name's suffix: updates are masked, only their sum is seen


def _class(name: str) -> type[Strategy]:
    base = name.removesuffix(SECURE)
    cls = STRATEGIES.get(base)
    if cls is None:
        raise FlError(
            f"unknown strategy {base!r}",
            f"choose one of {', '.join(STRATEGIES)} (a linear one may end in {SECURE})",
        )
    if name.endswith(SECURE) and not cls.LINEAR:
        linear = ", ".join(n for n, c in STRATEGIES.items() if c.LINEAR)
        raise FlError(
            f"{base} cannot run on secure aggregation: it needs each update, and secure "
            "aggregation reveals only their sum",
            f"use one of {linear} with {SECURE}",
        )
    return cls


def check_params(name: str, params: Mapping[str, Any]) -> dict[str, float | int]:
    """``params`` (text or numbers, by short name) of strategy ``name`` checked and parsed:
    the protocol's rule for a model's strategy. Raises FlError naming what is wrong."""
    cls = _class(name)
    known = {p.name: p for p in cls.PARAMS}
    params = {k: v for k, v in params.items() if v is not None}  # None: the default
    unknown = sorted(set(params) - set(known))
    if unknown:
        takes = ", ".join(known) or "no parameters"
        raise FlError(
            f"strategy {cls.name} has no parameter {', '.join(unknown)}", f"it takes {takes}"
        )
    out = {k: known[k].parse(v) for k, v in sorted(params.items())}
    make_strategy(cls.name, **{known[k].arg: v for k, v in out.items()})  # cross-checks
    return out


def strategy_for(name: str, params: Mapping[str, Any] | None = None) -> Strategy:
    """The strategy a model registered (``name`` may end in ``:secure``) with its ``params``
    by short name, checked as ``check_params`` does."""
    cls = _class(name)
    values = check_params(name, params or {})
    known = {p.name: p for p in cls.PARAMS}
    return make_strategy(cls.name, **{known[k].arg: v for k, v in values.items()})


def make_strategy(name: str, **kwargs: Any) -> Strategy:
    """Strategy by name (``fedavg``, ``fedprox``, ``fedavgm``, ``fedadam``, ``fedyogi``,
    ``fedmedian``, ``trimmed_mean``, ``krum``, ``multikrum``, ``proxyfl``) with its keyword
    settings."""
    cls = STRATEGIES.get(name)
    if cls is None:
        raise FlError(f"unknown strategy {name!r}", f"choose one of {', '.join(STRATEGIES)}")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise FlError(f"bad settings for {name}: {err}", "see the strategy's docstring") from err
