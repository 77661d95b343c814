"""Fixtures for the federated-learning tests: small data, one model spec, random weights."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits():
    from decentralml_jupyter.fl import load_dataset

    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def digits_spec(digits):
    from decentralml_jupyter.fl import mlp, model_to_spec

    return model_to_spec(mlp(digits.input_dim, digits.num_classes, hidden=(32,)))


def random_weights(rng: np.random.Generator, shapes=((6, 4), (4,), (4, 3), (3,)), scale=1.0):
    return [(rng.normal(size=s) * scale).astype(np.float32) for s in shapes]


def make_updates(n: int, seed: int = 0, shapes=((6, 4), (4,), (4, 3), (3,))):
    from decentralml_jupyter.fl import ClientUpdate

    rng = np.random.default_rng(seed)
    return [
        ClientUpdate(f"c{i:02d}", random_weights(rng, shapes), int(rng.integers(5, 200)))
        for i in range(n)
    ]
