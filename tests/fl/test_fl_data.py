"""Bundled datasets and partitions."""

from __future__ import annotations

import numpy as np
import pytest

from decentralml_jupyter.fl import FlError, load_dataset, partition


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "wine"])
def test_load_dataset_splits_and_standardizes(name):
    ds = load_dataset(name, seed=0)
    n = len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
    assert len(ds.y_test) == pytest.approx(0.2 * n, abs=2)
    assert len(ds.y_val) == pytest.approx(0.1 * n, abs=2)
    assert ds.x_train.dtype == np.float32 and ds.x_train.shape[1] == ds.input_dim
    assert set(np.unique(ds.y_test)) == set(range(ds.num_classes))
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-4)
    stds = ds.x_train.std(axis=0)
    assert np.all((np.abs(stds - 1) < 1e-3) | (stds < 1e-6))
    # Deterministic by seed, different across seeds.
    again, other = load_dataset(name, seed=0), load_dataset(name, seed=1)
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    assert not np.array_equal(ds.y_train, other.y_train)


def test_unknown_dataset():
    with pytest.raises(FlError) as info:
        load_dataset("mnist")
    assert "digits" in info.value.hint


def test_iid_partition_covers_everything_once():
    y = np.repeat(np.arange(5), 40)
    parts = partition(y, 7, "iid", seed=3)
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(len(y)))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    again = partition(y, 7, "iid", seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def _label_skew(y, parts, classes):
    # Mean total-variation distance between client label mix and the global mix.
    glob = np.bincount(y, minlength=classes) / len(y)
    return np.mean(
        [0.5 * np.abs(np.bincount(y[p], minlength=classes) / len(p) - glob).sum() for p in parts]
    )


def test_dirichlet_partition_is_skewed_by_alpha_and_deterministic():
    y = load_dataset("digits").y_train
    iid = partition(y, 10, "iid", seed=0)
    skew = partition(y, 10, "dirichlet", alpha=0.1, seed=0)
    mild = partition(y, 10, "dirichlet", alpha=100.0, seed=0)
    assert sorted(np.concatenate(skew).tolist()) == list(range(len(y)))
    assert min(map(len, skew)) >= 10
    assert _label_skew(y, skew, 10) > 0.4 > _label_skew(y, iid, 10)
    assert _label_skew(y, mild, 10) < 0.15
    again = partition(y, 10, "dirichlet", alpha=0.1, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(skew, again, strict=True))
    other = partition(y, 10, "dirichlet", alpha=0.1, seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(skew, other, strict=True))


def test_bad_partition_arguments():
    y = np.arange(10) % 2
    with pytest.raises(FlError):
        partition(y, 11)
    with pytest.raises(FlError):
        partition(y, 2, "weird")
    with pytest.raises(FlError):
        partition(y, 2, "dirichlet", alpha=0)
