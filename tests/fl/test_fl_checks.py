"""Update checks before aggregation."""

from __future__ import annotations

import numpy as np
import pytest

from decentralml_jupyter.fl import CheckResult, ClientUpdate, UpdateRejected, check_update
from decentralml_jupyter.fl.checks import delta_norm

G = [np.zeros((3, 2), np.float32), np.zeros((2,), np.float32)]


def _u(weights, n=10):
    return ClientUpdate("c", weights, n)


def test_good_update_accepted_with_norm():
    w = [np.full((3, 2), 1.0, np.float32), np.full((2,), 1.0, np.float32)]
    r = check_update(G, _u(w), max_delta_norm=10.0)
    assert r.accepted and r.reason == ""
    assert r.delta_norm == pytest.approx(np.sqrt(8.0))
    r.raise_if_rejected()


@pytest.mark.parametrize(
    "weights, fragment",
    [
        ([np.zeros((2, 3), np.float32), np.zeros((2,), np.float32)], "shape"),
        ([np.zeros((3, 2), np.float64), np.zeros((2,), np.float32)], "dtype"),
        ([np.zeros((3, 2), np.float32)], "tensors"),
        ([np.zeros((3, 2), np.float32), np.array([0.0, np.nan], np.float32)], "non-finite"),
        ([np.zeros((3, 2), np.float32), np.array([np.inf, 0.0], np.float32)], "non-finite"),
        ([np.full((3, 2), 5.0, np.float32), np.zeros((2,), np.float32)], "exceeds"),
    ],
)
def test_bad_updates_rejected_with_reason(weights, fragment):
    r = check_update(G, _u(weights), max_delta_norm=3.0)
    assert not r.accepted
    assert fragment in r.reason
    with pytest.raises(UpdateRejected) as info:
        r.raise_if_rejected()
    assert fragment in str(info.value) and info.value.hint


def test_norm_bound_is_on_delta_not_weights():
    g = [np.full((3, 2), 100.0, np.float32), np.full((2,), 100.0, np.float32)]
    w = [x + 0.5 for x in g]
    assert check_update(g, w, max_delta_norm=2.0).accepted
    assert not check_update(G, w, max_delta_norm=2.0).accepted


def test_example_count_checked():
    w = [np.zeros((3, 2), np.float32), np.zeros((2,), np.float32)]
    assert not check_update(G, _u(w, n=0)).accepted
    assert not check_update(G, _u(w, n=10_000), max_examples=500).accepted
    assert check_update(G, _u(w, n=500), max_examples=500).accepted


def test_delta_norm_matches_numpy():
    rng = np.random.default_rng(0)
    a = [rng.normal(size=(4, 4)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]
    b = [rng.normal(size=(4, 4)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]
    flat = np.concatenate([(y.astype(np.float64) - x).ravel() for x, y in zip(a, b, strict=True)])
    assert delta_norm(a, b) == pytest.approx(np.linalg.norm(flat), rel=1e-12)
    assert isinstance(check_update(a, b), CheckResult)
