"""A fast decoder of a block's events (``System.Events``), driven by the runtime's own type
registry (metadata V14+), giving what `client._event_dict` gives for each record of
scalecodec's decoding: ``{"module", "event", "attributes", "extrinsic_index", "phase"}``.

scalecodec builds a Python object per value (about 0.35 ms an event): a block of a thousand
workers' proxied updates has ~3,000 events, a second of CPU in every process that indexes
it. This reads the bytes with one precompiled reader per type instead. Anything it does not
know how to read raises `Unsupported`, and the caller decodes with scalecodec as before; a test
checks both agree on real blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scalecodec.utils.ss58 import ss58_encode

Reader = Callable[[bytes, int], tuple[Any, int]]


class Unsupported(Exception):
    """A type this decoder does not read (scalecodec then decodes the block)."""


_INTS = {
    "u8": (1, False),
    "u16": (2, False),
    "u32": (4, False),
    "u64": (8, False),
    "u128": (16, False),
    "u256": (32, False),
    "i8": (1, True),
    "i16": (2, True),
    "i32": (4, True),
    "i64": (8, True),
    "i128": (16, True),
    "i256": (32, True),
}


def _compact(data: bytes, at: int) -> tuple[int, int]:
    mode = data[at] & 3
    if mode == 0:
        return data[at] >> 2, at + 1
    if mode == 1:
        return int.from_bytes(data[at : at + 2], "little") >> 2, at + 2
    if mode == 2:
        return int.from_bytes(data[at : at + 4], "little") >> 2, at + 4
    size = (data[at] >> 2) + 4
    return int.from_bytes(data[at + 1 : at + 1 + size], "little"), at + 1 + size


class EventDecoder:
    """Reads ``Vec<EventRecord>`` bytes with the runtime's types (``types``: the portable
    registry's ``types`` list); accounts in ``ss58_format``."""

    def __init__(self, types: list[dict], ss58_format: int):
        self.types = {t["id"]: t["type"] for t in types}
        self.ss58_format = ss58_format
        self._readers: dict[int, Reader] = {}
        self._event_readers: dict[tuple[int, int], Reader] = {}  # (pallet's type, index)

    def reader(self, type_id: int) -> Reader:
        found = self._readers.get(type_id)
        if found is None:
            # a recursive type reads through this indirection until it is built
            self._readers[type_id] = lambda data, at: self._readers[type_id](data, at)
            found = self._build(type_id)
            self._readers[type_id] = found
        return found

    def _build(self, type_id: int) -> Reader:  # noqa: C901 - one branch per kind of type
        t = self.types[type_id]
        d = t["def"]
        path = t.get("path") or []
        if "primitive" in d:
            name = d["primitive"]
            if name in _INTS:
                size, signed = _INTS[name]

                def read_int(data, at, size=size, signed=signed):
                    end = at + size
                    if end > len(data):
                        raise Unsupported("truncated")
                    return int.from_bytes(data[at:end], "little", signed=signed), end

                return read_int
            if name == "bool":
                return lambda data, at: (data[at] == 1, at + 1)
            raise Unsupported(f"primitive {name}")
        if "compact" in d:
            inner = self.types[d["compact"]["type"]]["def"]
            if "primitive" not in inner and not (
                "composite" in inner and not inner["composite"]["fields"]
            ):
                raise Unsupported("compact of a composite")
            return _compact
        if "sequence" in d:
            elem = d["sequence"]["type"]
            if self.types[elem]["def"].get("primitive") == "u8":

                def read_bytes(data, at):
                    n, at = _compact(data, at)
                    return "0x" + data[at : at + n].hex(), at + n

                return read_bytes
            read = self.reader(elem)

            def read_seq(data, at):
                n, at = _compact(data, at)
                out = []
                for _ in range(n):
                    v, at = read(data, at)
                    out.append(v)
                return out, at

            return read_seq
        if "array" in d:
            n, elem = d["array"]["len"], d["array"]["type"]
            if self.types[elem]["def"].get("primitive") == "u8":
                return lambda data, at, n=n: ("0x" + data[at : at + n].hex(), at + n)
            read = self.reader(elem)

            def read_array(data, at, n=n):
                out = []
                for _ in range(n):
                    v, at = read(data, at)
                    out.append(v)
                return out, at

            return read_array
        if "tuple" in d:
            ids = d["tuple"]
            if not ids:
                return lambda data, at: ((), at)
            reads = [self.reader(i) for i in ids]

            def read_tuple(data, at):
                out = []
                for read in reads:
                    v, at = read(data, at)
                    out.append(v)
                return tuple(out), at

            return read_tuple
        if "composite" in d:
            if path and path[-1] == "AccountId32":
                fmt = self.ss58_format

                def read_account(data, at):
                    return ss58_encode(data[at : at + 32], ss58_format=fmt), at + 32

                return read_account
            return self._fields(d["composite"]["fields"])
        if "variant" in d:
            variants = {v["index"]: v for v in d["variant"].get("variants", [])}
            if path and path[-1] == "Option":
                some = self.reader(variants[1]["fields"][0]["type"])

                def read_option(data, at):
                    if data[at] == 0:
                        return None, at + 1
                    return some(data, at + 1)

                return read_option
            table: dict[int, tuple[str, Reader | None]] = {}
            for index, v in variants.items():
                table[index] = (v["name"], self._fields(v["fields"]) if v["fields"] else None)

            def read_variant(data, at):
                name, read = table[data[at]]
                if read is None:
                    return name, at + 1
                value, at = read(data, at + 1)
                return {name: value}, at

            return read_variant
        raise Unsupported(f"type {type_id}: {list(d)}")

    def _fields(self, fields: list[dict]) -> Reader:
        reads = [self.reader(f["type"]) for f in fields]
        names = [f.get("name") for f in fields]
        if len(fields) == 1 and names[0] is None:
            return reads[0]
        if all(names):

            def read_struct(data, at):
                out = {}
                for name, read in zip(names, reads, strict=True):
                    out[name], at = read(data, at)
                return out, at

            return read_struct

        def read_unnamed(data, at):
            out = []
            for read in reads:
                v, at = read(data, at)
                out.append(v)
            return tuple(out), at

        return read_unnamed

    def decode(self, data: bytes, vec_type: int) -> list[dict]:
        """The records of ``Vec<EventRecord>`` ``data`` as `_event_dict`s."""
        record = self.types[self.types[vec_type]["def"]["sequence"]["type"]]
        fields = {f["name"]: f["type"] for f in record["def"]["composite"]["fields"]}
        phase_t = self.types[fields["phase"]]["def"]["variant"]["variants"]
        phases = {v["index"]: (v["name"], bool(v["fields"])) for v in phase_t}
        runtime_event = self.types[fields["event"]]["def"]["variant"]["variants"]
        pallets = {v["index"]: (v["name"], v["fields"][0]["type"]) for v in runtime_event}
        read_topics = self.reader(fields["topics"])
        n, at = _compact(data, 0)
        out = []
        for _ in range(n):
            phase, has_index = phases[data[at]]
            at += 1
            index = None
            if has_index:
                index = int.from_bytes(data[at : at + 4], "little")
                at += 4
            module, event_type = pallets[data[at]]
            variants = {v["index"]: v for v in self.types[event_type]["def"]["variant"]["variants"]}
            ev = variants[data[at + 1]]
            at += 2
            attributes: Any = None
            if ev["fields"]:
                attributes, at = self._event_fields(event_type, ev)(data, at)
            _, at = read_topics(data, at)
            out.append(
                {
                    "module": module,
                    "event": ev["name"],
                    "attributes": attributes,
                    "extrinsic_index": index,
                    "phase": phase,
                }
            )
        if at != len(data):
            raise Unsupported(f"{len(data) - at} bytes left after the events")
        return out

    def _event_fields(self, event_type: int, variant: dict) -> Reader:
        key = (event_type, variant["index"])
        found = self._event_readers.get(key)
        if found is None:
            found = self._event_readers[key] = self._fields(variant["fields"])
        return found
