"""Values that cross layers: client updates, check verdicts, privacy records.

Frozen dataclasses; weights are lists of numpy arrays in the model's layer order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from decentralml_jupyter.errors import FlError, UpdateRejected  # noqa: F401 - importable here

Weights = list[np.ndarray]

# Local epochs a round asks of each worker unless its starter says otherwise: with 1, FedAvg on
# digits (10 workers, Dirichlet 0.5) ended 7 points below central training after 20 rounds;
# with 5, within 2 (benchmarks/bench_learning.py).
DEFAULT_LOCAL_EPOCHS = 5


@dataclass(frozen=True, eq=False)
class ClientUpdate:
    """One worker's trained weights for a round (full weights, not the delta)."""

    client_id: str
    weights: Weights
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckResult:
    """Verdict of :func:`decentralml_jupyter.fl.checks.check_update`."""

    accepted: bool
    reason: str = ""
    delta_norm: float = float("nan")

    def raise_if_rejected(self) -> None:
        if not self.accepted:
            raise UpdateRejected(f"update rejected: {self.reason}")


@dataclass(frozen=True)
class DpRecord:
    """What a worker applied for differential privacy; recorded on chain with the update."""

    clip_norm: float
    noise_multiplier: float
    seed: int
    delta_norm: float  # L2 norm of the delta before clipping
    clipped: bool
