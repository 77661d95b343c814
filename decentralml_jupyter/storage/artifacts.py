"""Our artefacts as bytes: model specs and task results as canonical JSON, tensors as safetensors.

Encodings are deterministic (same content, same CID), which validators rely on to agree on an
aggregate. safetensors keeps exact dtypes and shapes; numpy only, no torch.

Every reader takes ``max_bytes``: an artefact larger than that is refused (ArtifactTooLarge)
before its bytes are read, which a reader of CIDs named by others should always set.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from decentralml_jupyter.errors import StorageError, UsageError

from .store import Store

FORMAT = 1
TENSOR_KINDS = ("weights", "update", "aggregate")
_META_KEY = "dfml"  # one metadata entry: safetensors writes several in random order


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8, no NaN: one byte string per value."""
    try:
        return json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError) as exc:
        raise UsageError(f"cannot store this value as JSON: {exc}") from None


def _put_doc(store: Store, kind: str, body: Any) -> str:
    return store.put(canonical_json({"format": FORMAT, "kind": kind, "body": body}))


def _read(store: Store, cid: str, max_bytes: int | None) -> bytes:
    # Without a limit the call stays ``get(cid)``, which every Store implementation takes.
    return store.get(cid) if max_bytes is None else store.get(cid, max_bytes=max_bytes)


def _get_doc(store: Store, cid: str, kind: str, max_bytes: int | None = None) -> Any:
    raw = _read(store, cid, max_bytes)
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("kind") != kind or "body" not in doc:
        found = doc.get("kind") if isinstance(doc, dict) else "not a dfml JSON document"
        raise StorageError(
            f"{cid} is not a {kind} (found: {found})",
            hint="check that the CID is the one recorded for this artefact",
        )
    return doc["body"]


def put_model_spec(store: Store, spec: Mapping[str, Any] | str) -> str:
    """Store a model architecture (a JSON object, or a JSON string such as Keras to_json)."""
    if isinstance(spec, str):
        spec = json.loads(spec)
    return _put_doc(store, "model_spec", spec)


def get_model_spec(store: Store, cid: str, *, max_bytes: int | None = None) -> dict[str, Any]:
    return _get_doc(store, cid, "model_spec", max_bytes)


def put_task_result(store: Store, result: Mapping[str, Any]) -> str:
    """Store a task result (annotations, a report, CIDs of produced artefacts) as JSON."""
    return _put_doc(store, "task_result", dict(result))


def get_task_result(store: Store, cid: str, *, max_bytes: int | None = None) -> dict[str, Any]:
    return _get_doc(store, cid, "task_result", max_bytes)


@dataclass(frozen=True)
class TensorArtefact:
    """Named tensors plus JSON metadata, as stored (``kind`` is weights, update or aggregate)."""

    kind: str
    tensors: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    is_list: bool = False  # stored from a sequence: as_list() gives it back in order

    def as_list(self) -> list[np.ndarray]:
        return [self.tensors[k] for k in sorted(self.tensors)]


def _normalise(tensors: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> tuple[dict, bool]:
    if isinstance(tensors, Mapping):
        items, is_list = dict(tensors), False
    else:
        items, is_list = {f"{i:05d}": t for i, t in enumerate(tensors)}, True
    out = {}
    for name, arr in items.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise UsageError(f"invalid tensor name {name!r}")
        arr = np.asarray(arr)
        if arr.dtype.kind not in "biuf":
            raise UsageError(f"tensor {name!r} has dtype {arr.dtype}, not a numeric dtype")
        if arr.dtype.byteorder == ">":  # the format is little-endian; values are kept
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        # Not np.ascontiguousarray: it turns 0-d scalars into shape (1,).
        out[name] = arr if arr.flags.c_contiguous else arr.copy(order="C")
    return out, is_list


def encode_tensors(
    tensors: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    kind: str = "weights",
    meta: Mapping[str, Any] | None = None,
) -> bytes:
    """safetensors bytes with our metadata under one key; deterministic for equal input."""
    from safetensors.numpy import save

    if kind not in TENSOR_KINDS:
        raise UsageError(f"unknown tensor artefact kind {kind!r}; use one of {TENSOR_KINDS}")
    arrays, is_list = _normalise(tensors)
    header = {"format": FORMAT, "kind": kind, "list": is_list, "meta": dict(meta or {})}
    return save(arrays, metadata={_META_KEY: canonical_json(header).decode()})


def decode_tensors(data: bytes, kind: str | None = None, cid: str = "data") -> TensorArtefact:
    from safetensors.numpy import load

    try:
        n = int.from_bytes(data[:8], "little")
        if len(data) < 8 or n > len(data) - 8:
            raise ValueError("header length out of range")
        header = json.loads(data[8 : 8 + n])
        ours = json.loads(header["__metadata__"][_META_KEY])
        tensors = load(data)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not our artefact"
        raise StorageError(
            f"{cid} is not a dfml tensor artefact ({exc})",
            hint="check that the CID is the one recorded for this artefact",
        ) from None
    if kind is not None and ours.get("kind") != kind:
        raise StorageError(f"{cid} is a {ours.get('kind')}, not a {kind}")
    # Copies: frombuffer views are read-only and would keep the whole blob alive.
    tensors = {k: np.array(v, copy=True) for k, v in tensors.items()}
    return TensorArtefact(ours["kind"], tensors, ours.get("meta", {}), bool(ours.get("list")))


def put_weights(
    store: Store,
    tensors: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    meta: Mapping[str, Any] | None = None,
) -> str:
    """Model weights (a name->array mapping, or a list such as Keras get_weights())."""
    return store.put(encode_tensors(tensors, "weights", meta))


def get_weights(store: Store, cid: str, *, max_bytes: int | None = None) -> TensorArtefact:
    return decode_tensors(_read(store, cid, max_bytes), "weights", cid)


def put_update(
    store: Store,
    tensors: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    meta: Mapping[str, Any] | None = None,
) -> str:
    """A worker's update; ``meta`` carries e.g. model_id, round, base_cid, num_examples."""
    return store.put(encode_tensors(tensors, "update", meta))


def get_update(store: Store, cid: str, *, max_bytes: int | None = None) -> TensorArtefact:
    return decode_tensors(_read(store, cid, max_bytes), "update", cid)


def put_aggregate(
    store: Store,
    tensors: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    meta: Mapping[str, Any] | None = None,
) -> str:
    """A validator's aggregate; equal tensors and meta give the same CID on every validator."""
    return store.put(encode_tensors(tensors, "aggregate", meta))


def get_aggregate(store: Store, cid: str, *, max_bytes: int | None = None) -> TensorArtefact:
    return decode_tensors(_read(store, cid, max_bytes), "aggregate", cid)
