"""Lazy TensorFlow/Keras import, configured once for deterministic CPU execution.

Nothing in ``decentralml_jupyter.fl`` imports TensorFlow at module import; functions call
:func:`tf` when they need it.
"""

from __future__ import annotations

import os
from typing import Any

_configured = False


def tf() -> Any:
    """Import TensorFlow, turning on op determinism the first time."""
    global _configured
    # Quieten the C++ start-up banner; must be set before the first import.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow

    if not _configured:
        _configured = True
        # Same inputs and seed -> same weights on CPU; without it some kernels reduce in
        # nondeterministic order.
        tensorflow.config.experimental.enable_op_determinism()
        # Models here are small: one thread avoids oversubscribing shared cores and keeps
        # floating-point reduction order fixed. Fails harmlessly if TF already started.
        try:
            tensorflow.config.threading.set_intra_op_parallelism_threads(1)
            tensorflow.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass
    return tensorflow


def keras() -> Any:
    tf()
    import keras

    return keras
