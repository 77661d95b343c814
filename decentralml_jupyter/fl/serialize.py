"""Weights <-> bytes with safetensors (numpy backend), and their content hash.

Same weights give the same bytes, so validators that aggregate identically publish one CID.
"""

from __future__ import annotations

import hashlib
import json
import math

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
    return _in_order(tensors)


# safetensors' dtype names (those numpy has)
_DTYPES = {
    "BOOL": "?", "U8": "u1", "I8": "i1", "U16": "<u2", "I16": "<i2", "F16": "<f2",
    "U32": "<u4", "I32": "<i4", "F32": "<f4", "U64": "<u8", "I64": "<i8", "F64": "<f8",
}  # fmt: skip
_MAX_HEADER = 100_000_000  # safetensors' own bound


def weights_from_buffer(data: bytes | bytearray | memoryview) -> Weights:
    """:func:`weights_from_bytes` without copying: each array is a read-only view into
    ``data`` (which it keeps alive), so a 400 MB update takes 400 MB, not twice that. The same
    checks as safetensors' loader: a header within the data, known dtypes, each tensor's
    bytes matching its shape, the tensors' bytes back to back and covering the data."""
    view = memoryview(data).cast("B")
    try:
        n = int.from_bytes(view[:8], "little")
        if len(view) < 8 or n > min(len(view) - 8, _MAX_HEADER):
            raise ValueError("the header is longer than the data")
        header = json.loads(bytes(view[8 : 8 + n]))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        header.pop("__metadata__", None)
        start, size = 8 + n, len(view) - 8 - n
        tensors, spans = {}, []
        for name, info in header.items():
            dtype = np.dtype(_DTYPES[info["dtype"]])
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
            count = math.prod(shape)
            if min(shape, default=0) < 0 or not 0 <= begin <= end <= size:
                raise ValueError(f"tensor {name!r}: bad shape or offsets")
            if end - begin != count * dtype.itemsize:
                raise ValueError(f"tensor {name!r}: {end - begin} bytes for shape {shape}")
            array = np.frombuffer(view, dtype, count, start + begin).reshape(shape)
            array.flags.writeable = False
            tensors[name] = array
            spans.append((begin, end))
        pos = 0
        for begin, end in sorted(spans):
            if begin != pos:
                raise ValueError("the tensors' bytes overlap or leave a gap")
            pos = end
        if pos != size:
            raise ValueError("bytes after the last tensor")
    except (KeyError, TypeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise FlError(f"not a weights file: {err}", "pass bytes made by weights_to_bytes") from err
    return _in_order(tensors)


def _in_order(tensors: dict[str, np.ndarray]) -> Weights:
    names = sorted(tensors)
    if names != [_NAME.format(i) for i in range(len(names))]:
        raise FlError(
            "weights file has unexpected tensor names", "pass bytes made by weights_to_bytes"
        )
    return [tensors[n] for n in names]


def weights_hash(weights: Weights) -> str:
    """sha256 hex digest of the serialized weights (what validators compare)."""
    return hashlib.sha256(weights_to_bytes(weights)).hexdigest()
