"""Federated learning: models, serialization, local training, aggregation, privacy, data,
contribution and an in-process simulation. Pure learning code (no chain, no storage).

Importing this package does not import TensorFlow; the functions that need it do.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> submodule; resolved on first access so `import decentralml_jupyter.fl` stays cheap.
_EXPORTS = {
    "ClientUpdate": "types",
    "CheckResult": "types",
    "DpRecord": "types",
    "FlError": "types",
    "UpdateRejected": "types",
    "Weights": "types",
    "weights_to_bytes": "serialize",
    "weights_from_bytes": "serialize",
    "weights_from_buffer": "serialize",
    "weights_hash": "serialize",
    "model_to_spec": "models",
    "model_from_spec": "models",
    "init_weights": "models",
    "mlp": "models",
    "train_local": "training",
    "evaluate": "training",
    "predict": "training",
    "Strategy": "strategies",
    "FedAvg": "strategies",
    "FedProx": "strategies",
    "FedAdam": "strategies",
    "FedYogi": "strategies",
    "FedMedian": "strategies",
    "FedTrimmedAvg": "strategies",
    "Krum": "strategies",
    "MultiKrum": "strategies",
    "make_strategy": "strategies",
    "bound_examples": "checks",
    "FedAvgM": "strategies",
    "ProxyFL": "strategies",
    "train_proxyfl": "proxyfl",
    "strategy_for": "strategies",
    "check_params": "strategies",
    "STRATEGIES": "strategies",
    "check_update": "checks",
    "clip_and_noise": "privacy",
    "mask_update": "privacy",
    "unmask_sum": "privacy",
    "secure_fedavg": "privacy",
    "secure_mean": "privacy",
    "self_seed": "privacy",
    "dp_epsilon": "privacy",
    "pairwise_seeds": "privacy",
    "x25519_shared_seed": "privacy",
    "Dataset": "data",
    "load_dataset": "data",
    "partition": "data",
    "leave_one_out": "contribution",
    "leave_one_out_linear": "contribution",
    "first_order_shares": "influence",
    "EXACT_CONTRIBUTIONS_MAX": "influence",
    "loss_gradient": "training",
    "WeightedSum": "strategies",
    "load_data": "sources",
    "DataContract": "contract",
    "Label": "contract",
    "TrainingSetup": "contract",
    "check_data": "contract",
    "MIN_TRAIN_EXAMPLES": "contract",
    "spec_contract": "models",
    "spec_training": "models",
    "simulate": "simulation",
    "train_centralised": "simulation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
