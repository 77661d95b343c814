"""Bundled scikit-learn datasets (nothing downloaded), standardized and split, and per-worker
partitions: IID or Dirichlet non-IID over labels, deterministic by seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from decentralml_jupyter.fl.types import FlError

DATASETS = ("digits", "breast_cancer", "wine", "iris")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train / validation / test splits; features standardized with training statistics."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])


def load_dataset(
    name: str, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2
) -> Dataset:
    """Load a bundled dataset, split stratified into train/val/test, standardize features.

    The validation split is what validators hold out to score updates; the test split is for
    reporting final accuracy.
    """
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    loaders = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "iris": datasets.load_iris,
    }
    if name not in loaders:
        raise FlError(f"unknown dataset {name!r}", f"choose one of {', '.join(DATASETS)}")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise FlError(
            f"bad split fractions: val={val_fraction}, test={test_fraction}",
            "both in (0, 1) and summing to less than 1",
        )
    x, y = loaders[name](return_X_y=True)
    x = x.astype(np.float64)
    y = y.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=val_fraction / (1 - test_fraction),
        stratify=y_rest,
        random_state=seed,
    )
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0  # constant pixels in digits: leave them at zero, do not divide by 0

    def norm(a: np.ndarray) -> np.ndarray:
        return ((a - mean) / std).astype(np.float32)

    return Dataset(
        name=name,
        x_train=norm(x_train),
        y_train=y_train,
        x_val=norm(x_val),
        y_val=y_val,
        x_test=norm(x_test),
        y_test=y_test,
        num_classes=int(y.max()) + 1,
    )


def partition(
    y: np.ndarray,
    n_clients: int,
    scheme: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    min_size: int = 10,
) -> list[np.ndarray]:
    """Split example indices among ``n_clients``; returns one sorted index array per client.

    ``iid``: a random permutation cut into near-equal parts. ``dirichlet``: for each class,
    client shares are drawn from Dirichlet(alpha); smaller alpha means more skewed label mixes.
    Dirichlet draws are repeated (deterministically) until every client has ``min_size``
    examples, so no worker is left without data.
    """
    y = np.asarray(y)
    n = len(y)
    if n_clients < 1 or n < n_clients:
        raise FlError(
            f"cannot split {n} examples among {n_clients} clients",
            "use at least one client and no more clients than examples",
        )
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(n), n_clients)]
    if scheme != "dirichlet":
        raise FlError(f"unknown partition scheme {scheme!r}", "use 'iid' or 'dirichlet'")
    if alpha <= 0:
        raise FlError(f"dirichlet alpha must be > 0, got {alpha}", "e.g. alpha=0.5")
    min_size = min(min_size, n // n_clients)
    classes = np.unique(y)
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(n_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            shares = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise FlError(
        f"could not give every client {min_size} examples with alpha={alpha}",
        "raise alpha, lower n_clients or lower min_size",
    )
