"""Weights <-> bytes with safetensors (numpy backend), and their content hash.

Same weights give the same bytes, so validators that aggregate identically publish one CID.
"""

from __future__ import annotations

import hashlib

import numpy as np

from decentralml_jupyter.fl.types import FlError, Weights

# Tensor names carry the layer position; zero-padding keeps safetensors' name order equal to
# the list order for up to 10^6 tensors.
_NAME = "w{:06d}"
_FORMAT = "decentralml-weights/1"


def weights_to_bytes(weights: Weights) -> bytes:
    """Serialize a list of arrays (exact dtypes and shapes) into deterministic bytes."""
    from safetensors.numpy import save

    tensors = {}
    for i, w in enumerate(weights):
        a = np.asarray(w)
        if a.dtype == object:
            raise FlError(f"weight {i} has dtype object", "weights must be numeric numpy arrays")
        # safetensors reads C-contiguous little-endian memory; converting (a copy) only the
        # arrays that are not so already keeps the bytes independent of how an array happened
        # to be laid out, without copying every tensor once more before safetensors does.
        tensors[_NAME.format(i)] = np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")
    # One metadata key only: safetensors keeps metadata in a Rust HashMap whose iteration
    # order is randomised per map, so two keys would make the header bytes vary from call to
    # call. The tensor count is implied by the names.
    return save(tensors, metadata={"format": _FORMAT})


def weights_from_bytes(data: bytes) -> Weights:
    """Inverse of :func:`weights_to_bytes`."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(bytes(data))
    except (SafetensorError, ValueError, TypeError) as err:
        raise FlError(f"not a weights file: {err}", "pass bytes made by weights_to_bytes") from err
    names = sorted(tensors)
    if names != [_NAME.format(i) for i in range(len(names))]:
        raise FlError(
            "weights file has unexpected tensor names", "pass bytes made by weights_to_bytes"
        )
    return [tensors[n] for n in names]


def weights_hash(weights: Weights) -> str:
    """sha256 hex digest of the serialized weights (what validators compare)."""
    return hashlib.sha256(weights_to_bytes(weights)).hexdigest()
