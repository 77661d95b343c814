"""FedAvg's weighted mean as one compiled pass over float32 updates (numba), same bits as numpy.

``strategies._weighted_mean`` computes, per element, ``(0.0 + f0*x0 + f1*x1 + ...) / total`` in
float64, clients in id order, then casts. numpy needs a conversion pass and a multiply-add pass
per client over a float64 block; here each element's sum stays in a register-sized strip while
every client's float32 row is read once, which is what moves FedAvg from a fifth to over half of
this machine's streaming bandwidth (``benchmarks/bench_model_size.py``).

The bits do not change:
  - the float32 to float64 conversion is exact;
  - each product is rounded to float64 and then added, in client order: numba only lets LLVM
    fuse or reorder floating-point operations under ``fastmath``, which is not used;
  - the final division and the cast to the output dtype are the same IEEE operations numpy
    performs.
``tests/fl/test_fl_aggregate_exact.py`` pins both this and the numpy path to the plain formula.

This module imports numba; ``strategies`` imports it lazily and keeps the numpy path when numba
is missing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba.typed import List

# Elements whose float64 sums are kept together: 32 KiB, so they stay in the L1 cache while the
# clients' rows stream past.
_STRIP = 4096
# Below this many element-client products a layer stays on the numpy path: the call's fixed
# cost (about 25 us: the typed list of rows, the dispatch) outweighs what the pass saves.
MIN_WORK = 1 << 17
# Below this many element-client products a layer is not split over threads (thread hand-off
# costs more than it saves).
PARALLEL_MIN = 1 << 21
OUTPUT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def _weighted_mean_range(rows, factors, divisor, out, lo, hi):  # pragma: no cover - compiled
    k = len(rows)
    acc = np.empty(_STRIP, dtype=np.float64)
    for start in range(lo, hi, _STRIP):
        m = min(_STRIP, hi - start)
        a = acc[:m]
        a[:] = 0.0
        # Clients in groups of 8, then 4, 2 and 1: each sweep of the strip loads and stores the
        # sums once for the whole group, and still adds strictly left to right.
        c = 0
        while c + 8 <= k:
            x0 = rows[c][start : start + m]
            x1 = rows[c + 1][start : start + m]
            x2 = rows[c + 2][start : start + m]
            x3 = rows[c + 3][start : start + m]
            x4 = rows[c + 4][start : start + m]
            x5 = rows[c + 5][start : start + m]
            x6 = rows[c + 6][start : start + m]
            x7 = rows[c + 7][start : start + m]
            f0, f1, f2, f3 = factors[c], factors[c + 1], factors[c + 2], factors[c + 3]
            f4, f5, f6, f7 = factors[c + 4], factors[c + 5], factors[c + 6], factors[c + 7]
            for i in range(m):
                s = a[i] + f0 * np.float64(x0[i])
                s = s + f1 * np.float64(x1[i])
                s = s + f2 * np.float64(x2[i])
                s = s + f3 * np.float64(x3[i])
                s = s + f4 * np.float64(x4[i])
                s = s + f5 * np.float64(x5[i])
                s = s + f6 * np.float64(x6[i])
                a[i] = s + f7 * np.float64(x7[i])
            c += 8
        if c + 4 <= k:
            x0 = rows[c][start : start + m]
            x1 = rows[c + 1][start : start + m]
            x2 = rows[c + 2][start : start + m]
            x3 = rows[c + 3][start : start + m]
            f0, f1, f2, f3 = factors[c], factors[c + 1], factors[c + 2], factors[c + 3]
            for i in range(m):
                s = a[i] + f0 * np.float64(x0[i])
                s = s + f1 * np.float64(x1[i])
                s = s + f2 * np.float64(x2[i])
                a[i] = s + f3 * np.float64(x3[i])
            c += 4
        if c + 2 <= k:
            x0 = rows[c][start : start + m]
            x1 = rows[c + 1][start : start + m]
            f0, f1 = factors[c], factors[c + 1]
            for i in range(m):
                a[i] = (a[i] + f0 * np.float64(x0[i])) + f1 * np.float64(x1[i])
            c += 2
        if c < k:
            x0 = rows[c][start : start + m]
            f0 = factors[c]
            for i in range(m):
                a[i] = a[i] + f0 * np.float64(x0[i])
        o = out[start : start + m]
        for i in range(m):
            o[i] = a[i] / divisor


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_threads(), thread_name_prefix="dfml-fedavg")
        return _pool


def weighted_mean_into(
    rows: Sequence[np.ndarray], factors: np.ndarray, divisor: float, out: np.ndarray
) -> None:
    """``out[:] = (sum of factors[c] * float64(rows[c]), c in order) / divisor``, cast to
    ``out``'s dtype. ``rows``: flat float32 arrays of ``out.size`` elements; ``factors``:
    float64, one per row; ``out``: flat, contiguous, float32 or float64."""
    size = out.size
    typed = List()
    for r in rows:
        v = np.ascontiguousarray(r).view()
        v.flags.writeable = False  # one array type for all rows, read-only or not
        typed.append(v)
    f = np.ascontiguousarray(factors, dtype=np.float64)
    d = float(divisor)
    parts = min(_threads(), size // _STRIP) if size * len(rows) >= PARALLEL_MIN else 1
    if parts <= 1:
        _weighted_mean_range(typed, f, d, out, 0, size)
        return
    cuts = [size * p // parts for p in range(parts + 1)]
    futures = [
        _executor().submit(_weighted_mean_range, typed, f, d, out, cuts[p], cuts[p + 1])
        for p in range(parts)
    ]
    for fut in futures:
        fut.result()


def warm_up() -> None:
    """Compile (or load from numba's cache) both output dtypes on a tiny input."""
    rows = [np.ones(4, np.float32), np.ones(4, np.float32)]
    for dtype in OUTPUT_DTYPES:
        weighted_mean_into(rows, np.ones(2), 2.0, np.empty(4, dtype))
