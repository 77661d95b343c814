"""A small, strict SCALE codec for the protocol's own schema.

Hand-written rather than scalecodec's type registry so that every bound (sizes, ranges,
canonical compact forms, strict UTF-8) is checked in one place and decoding is fully pure.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar, dataclass_transform

from .errors import CodecError


class Reader:
    """Reads SCALE values from bytes; every failure raises CodecError with a reason."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise CodecError("truncated: unexpected end of call bytes")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "little")

    def compact(self) -> int:
        first = self.take(1)[0]
        mode = first & 0b11
        if mode == 0:
            return first >> 2
        if mode == 1:
            value = (first | self.take(1)[0] << 8) >> 2
            if value < 1 << 6:
                raise CodecError("non-canonical compact integer")
            return value
        if mode == 2:
            value = (first | int.from_bytes(self.take(3), "little") << 8) >> 2
            if value < 1 << 14:
                raise CodecError("non-canonical compact integer")
            return value
        size = (first >> 2) + 4
        value = int.from_bytes(self.take(size), "little")
        # big mode must use the fewest bytes, and never encode what fits a smaller mode
        if value < 1 << 30 or value >> (8 * (size - 1)) == 0:
            raise CodecError("non-canonical compact integer")
        return value

    def done(self) -> None:
        if self.pos != len(self.data):
            raise CodecError(f"{len(self.data) - self.pos} trailing bytes after the call")


def encode_compact(value: int) -> bytes:
    if value < 0:
        raise CodecError("compact integers cannot be negative")
    if value < 1 << 6:
        return bytes([value << 2])
    if value < 1 << 14:
        return ((value << 2) | 1).to_bytes(2, "little")
    if value < 1 << 30:
        return ((value << 2) | 2).to_bytes(4, "little")
    size = (value.bit_length() + 7) // 8
    if size > 67:
        raise CodecError("integer too large for a compact encoding")
    return bytes([((size - 4) << 2) | 3]) + value.to_bytes(size, "little")


class Field:
    """A typed, bounded field: checks a Python value, encodes it, decodes it."""

    def check(self, value: Any, name: str) -> Any:  # returns the normalised value
        raise NotImplementedError

    def encode(self, value: Any) -> bytes:
        raise NotImplementedError

    def decode(self, r: Reader) -> Any:
        raise NotImplementedError

    def from_json(self, value: Any) -> Any:
        """The Python value of a field from its JSON form (what ``to_json`` gives)."""
        return value


class UInt(Field):
    """Fixed-width (``size`` bytes) or compact unsigned integer, with an upper bound."""

    def __init__(self, bits: int, compact: bool = True, maximum: int | None = None):
        self.size = bits // 8
        self.compact = compact
        self.maximum = (1 << bits) - 1 if maximum is None else maximum

    def check(self, value: Any, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CodecError(f"{name}: expected an integer, got {type(value).__name__}")
        if not 0 <= value <= self.maximum:
            raise CodecError(f"{name}: {value} out of range 0..{self.maximum}")
        return value

    def encode(self, value: int) -> bytes:
        return encode_compact(value) if self.compact else value.to_bytes(self.size, "little")

    def decode(self, r: Reader) -> int:
        value = r.compact() if self.compact else r.uint(self.size)
        return self.check(value, "value")


class Bool(Field):
    def check(self, value: Any, name: str) -> bool:
        if not isinstance(value, bool):
            raise CodecError(f"{name}: expected a bool")
        return value

    def encode(self, value: bool) -> bytes:
        return b"\x01" if value else b"\x00"

    def decode(self, r: Reader) -> bool:
        b = r.take(1)[0]
        if b > 1:
            raise CodecError(f"invalid bool byte {b}")
        return b == 1


class Text(Field):
    """UTF-8 text with a byte bound, optionally restricted to a pattern (then ASCII)."""

    def __init__(self, max_bytes: int, pattern: str | None = None, min_bytes: int = 0):
        self.max_bytes = max_bytes
        self.min_bytes = min_bytes
        self.pattern = re.compile(pattern) if pattern else None

    def check(self, value: Any, name: str) -> str:
        if not isinstance(value, str):
            raise CodecError(f"{name}: expected text")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise CodecError(f"{name}: not encodable as UTF-8") from e
        if not self.min_bytes <= size <= self.max_bytes:
            raise CodecError(f"{name}: {size} bytes, allowed {self.min_bytes}..{self.max_bytes}")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise CodecError(f"{name}: {value!r} does not match {self.pattern.pattern}")
        return value

    def encode(self, value: str) -> bytes:
        raw = value.encode("utf-8")
        return encode_compact(len(raw)) + raw

    def decode(self, r: Reader) -> str:
        n = r.compact()
        if n > self.max_bytes:
            raise CodecError(f"text of {n} bytes exceeds {self.max_bytes}")
        try:
            value = r.take(n).decode("utf-8")
        except UnicodeDecodeError as e:
            raise CodecError("text is not valid UTF-8") from e
        return self.check(value, "text")


class Account(Field):
    """A 32-byte account id on the wire; an SS58 (format 42) string in Python."""

    def check(self, value: Any, name: str) -> str:
        from .accounts import normalize_address

        try:
            return normalize_address(value)
        except ValueError as e:
            raise CodecError(f"{name}: {e}") from e

    def encode(self, value: str) -> bytes:
        from .accounts import account_id

        return account_id(value)

    def decode(self, r: Reader) -> str:
        from .accounts import ss58

        return ss58(r.take(32))


class Bytes32(Field):
    """32 raw bytes on the wire (a public key); a 0x-prefixed hex string in Python."""

    def check(self, value: Any, name: str) -> str:
        if isinstance(value, bytes | bytearray):
            value = "0x" + bytes(value).hex()
        if not isinstance(value, str) or not value.startswith("0x") or len(value) != 66:
            raise CodecError(f"{name}: expected 32 bytes as 0x-hex")
        try:
            bytes.fromhex(value[2:])
        except ValueError as e:
            raise CodecError(f"{name}: not hex") from e
        return value.lower()

    def encode(self, value: str) -> bytes:
        return bytes.fromhex(value[2:])

    def decode(self, r: Reader) -> str:
        return "0x" + r.take(32).hex()


class Blob(Field):
    """Raw bytes of bounded length (compact length, then the bytes); 0x-hex in Python."""

    def __init__(self, max_bytes: int, min_bytes: int = 0):
        self.max_bytes = max_bytes
        self.min_bytes = min_bytes

    def check(self, value: Any, name: str) -> str:
        if isinstance(value, bytes | bytearray | memoryview):
            value = "0x" + bytes(value).hex()
        if not isinstance(value, str) or not value.startswith("0x") or len(value) % 2:
            raise CodecError(f"{name}: expected bytes as 0x-hex")
        try:
            size = len(bytes.fromhex(value[2:]))
        except ValueError as e:
            raise CodecError(f"{name}: not hex") from e
        if not self.min_bytes <= size <= self.max_bytes:
            raise CodecError(f"{name}: {size} bytes, expected {self.min_bytes} to {self.max_bytes}")
        return value.lower()

    def encode(self, value: str) -> bytes:
        raw = bytes.fromhex(value[2:])
        return encode_compact(len(raw)) + raw

    def decode(self, r: Reader) -> str:
        n = r.compact()
        if n > self.max_bytes:
            raise CodecError(f"{n} bytes exceed {self.max_bytes}")
        return self.check(r.take(n), "bytes")


class Option(Field):
    def from_json(self, value: Any) -> Any:
        return None if value is None else self.inner.from_json(value)

    def __init__(self, inner: Field):
        self.inner = inner

    def check(self, value: Any, name: str) -> Any:
        return None if value is None else self.inner.check(value, name)

    def encode(self, value: Any) -> bytes:
        return b"\x00" if value is None else b"\x01" + self.inner.encode(value)

    def decode(self, r: Reader) -> Any:
        tag = r.take(1)[0]
        if tag > 1:
            raise CodecError(f"invalid option tag {tag}")
        return self.inner.decode(r) if tag else None


class Vec(Field):
    def from_json(self, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise CodecError(f"expected a list, got {type(value).__name__}")
        return tuple(self.inner.from_json(v) for v in value)

    """A bounded vector; ``unique`` also rejects duplicates (sets on the wire)."""

    def __init__(self, inner: Field, max_len: int, unique: bool = False):
        self.inner = inner
        self.max_len = max_len
        self.unique = unique

    def check(self, value: Any, name: str) -> tuple:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise CodecError(f"{name}: expected a list")
        if len(value) > self.max_len:
            raise CodecError(f"{name}: {len(value)} items, at most {self.max_len}")
        out = tuple(self.inner.check(v, f"{name}[{i}]") for i, v in enumerate(value))
        if self.unique and len(set(out)) != len(out):
            raise CodecError(f"{name}: duplicate items")
        return out

    def encode(self, value: tuple) -> bytes:
        return encode_compact(len(value)) + b"".join(self.inner.encode(v) for v in value)

    def decode(self, r: Reader) -> tuple:
        n = r.compact()
        if n > self.max_len:
            raise CodecError(f"list of {n} items exceeds {self.max_len}")
        return self.check([self.inner.decode(r) for _ in range(n)], "list")


class Trailing(Field):
    """A field added to a call after its first version. Trailing fields are the last fields
    of a top-level call; the encoding leaves out the longest run of them at the end that hold
    their defaults, so remarks written before they existed decode as before (the defaults)
    and a call that leaves them at their defaults encodes to the very same bytes. A last
    encoded one holding its default is refused as non-canonical, so one call has one
    encoding. ``struct`` checks where they stand; ``Struct`` does the leaving out."""

    def __init__(self, inner: Field, default: Any):
        # a trailing field before a later one that is not at its default is written out,
        # default included, so its type must hold the default (an Option for None)
        self.inner = inner
        self.default = default

    def check(self, value: Any, name: str) -> Any:
        return self.default if value == self.default else self.inner.check(value, name)

    def encode(self, value: Any) -> bytes:
        return self.inner.encode(value)

    def decode(self, r: Reader) -> Any:
        return self.inner.decode(r)

    def from_json(self, value: Any) -> Any:
        return self.default if value == self.default else self.inner.from_json(value)


class Struct:
    """Base of frozen dataclasses declared with :func:`struct`, each field with :func:`wire`.

    ``SCHEMA`` (field name, Field) pairs in wire order and ``HELP`` (field name -> help text)
    are derived from the fields by :func:`struct`, never written by hand. Construction checks
    and normalises every field, so an instance is always encodable.
    """

    SCHEMA: ClassVar[tuple[tuple[str, Field], ...]] = ()
    HELP: ClassVar[Mapping[str, str]] = MappingProxyType({})

    def __post_init__(self) -> None:
        for name, field in self.SCHEMA:
            object.__setattr__(self, name, field.check(getattr(self, name), name))

    def encode(self) -> bytes:
        fields = list(self.SCHEMA)
        # trailing fields at their defaults, at the end, are left out (see Trailing)
        while fields and isinstance(fields[-1][1], Trailing):
            name, kind = fields[-1]
            if getattr(self, name) != kind.default:  # type: ignore[attr-defined]
                break
            fields.pop()
        return b"".join(f.encode(getattr(self, n)) for n, f in fields)

    @classmethod
    def decode_fields(cls, r: Reader) -> Struct:
        values: dict[str, Any] = {}
        last = None
        for n, f in cls.SCHEMA:
            if isinstance(f, Trailing):
                if r.pos == len(r.data):
                    values[n] = f.default
                    continue
                last = (n, f)
            values[n] = f.decode(r)
        if last is not None and values[last[0]] == last[1].default:
            raise CodecError("non-canonical call: a trailing field holds its default")
        return cls(**values)

    @classmethod
    def from_json(cls, data: Any) -> Struct:
        """An instance from its JSON form (``to_json``'s; its "type" key may be left out, and
        fields left out take their defaults), checked as any construction is."""
        if not isinstance(data, Mapping):
            raise CodecError(f"{cls.__name__}: expected a JSON object, got {data!r}")
        known = dict(cls.SCHEMA)
        unknown = set(data) - set(known) - {"type"}
        if unknown:
            raise CodecError(f"{cls.__name__}: unknown fields {', '.join(sorted(unknown))}")
        return cls(**{n: known[n].from_json(v) for n, v in data.items() if n != "type"})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": getattr(self, "NAME", type(self).__name__)}
        for name, _ in self.SCHEMA:
            value = getattr(self, name)
            out[name] = _jsonable(value)
        return out


_WIRE = "dfml.wire"  # a dataclass field's metadata keys: its wire type and its help text
_HELP = "dfml.help"


def wire(kind: Field, default: Any = dataclasses.MISSING, *, help: str = "") -> Any:
    """Declare a Struct field once: its wire type (with its bounds), its default if it has
    one, and a short help text (for CLI help and docs), e.g.
    ``model_id: int = wire(ID, help="the model")``. The field's place in the class is its
    place on the wire."""
    return dataclasses.field(default=default, metadata={_WIRE: kind, _HELP: help})


S = TypeVar("S", bound=type)


@dataclass_transform(frozen_default=True, field_specifiers=(wire,))
def struct(cls: S) -> S:
    """Make ``cls`` (a Struct subclass) a frozen dataclass and derive its ``SCHEMA`` and
    ``HELP`` from its fields, in declaration order. Every field must be declared with
    :func:`wire`: a field without a wire type is a TypeError at import."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    schema, helps = [], {}
    for f in dataclasses.fields(cls):
        if _WIRE not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name}: declare the field with wire(TYPE)")
        schema.append((f.name, f.metadata[_WIRE]))
        helps[f.name] = f.metadata[_HELP]
    trailing = [i for i, (_, kind) in enumerate(schema) if isinstance(kind, Trailing)]
    if trailing and trailing != list(range(len(schema) - len(trailing), len(schema))):
        raise TypeError(f"{cls.__name__}: Trailing fields must be its last fields")
    cls.SCHEMA = tuple(schema)  # type: ignore[attr-defined]
    cls.HELP = MappingProxyType(helps)  # type: ignore[attr-defined]
    return cls


def _jsonable(value: Any) -> Any:
    if isinstance(value, Struct):
        return value.to_json()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


class StructField(Field):
    def __init__(self, cls: type[Struct]):
        if any(isinstance(kind, Trailing) for _, kind in cls.SCHEMA):
            raise TypeError(f"{cls.__name__} ends in a Trailing field: it cannot be nested")
        self.cls = cls

    def check(self, value: Any, name: str) -> Struct:
        if not isinstance(value, self.cls):
            raise CodecError(f"{name}: expected {self.cls.__name__}")
        return value

    def encode(self, value: Struct) -> bytes:
        return value.encode()

    def decode(self, r: Reader) -> Struct:
        return self.cls.decode_fields(r)

    def from_json(self, value: Any) -> Struct:
        return self.cls.from_json(value)


class Variant(Field):
    """An enum of Struct classes, each with a distinct ``INDEX`` (one byte on the wire)."""

    def __init__(self, *classes: type[Struct], what: str = "variant"):
        self.what = what
        self.by_index: dict[int, type[Struct]] = {}
        for cls in classes:
            index = cls.INDEX  # type: ignore[attr-defined]
            assert index not in self.by_index, f"duplicate {what} index {index}"
            self.by_index[index] = cls
        self.classes = tuple(classes)

    def check(self, value: Any, name: str) -> Struct:
        if type(value) not in self.classes:
            raise CodecError(f"{name}: expected a {self.what}, got {type(value).__name__}")
        return value

    def encode(self, value: Struct) -> bytes:
        return bytes([value.INDEX]) + value.encode()  # type: ignore[attr-defined]

    def from_json(self, value: Any) -> Struct:
        """``{"type": NAME, ...fields}``: the variant named by its ``NAME``."""
        kind = value.get("type") if isinstance(value, Mapping) else None
        for cls in self.classes:
            if kind in (cls.NAME, cls.__name__):  # type: ignore[attr-defined]
                return cls.from_json(value)
        names = ", ".join(c.NAME for c in self.classes)  # type: ignore[attr-defined]
        raise CodecError(f'a {self.what} needs "type": one of {names}; got {value!r}')

    def decode(self, r: Reader) -> Struct:
        index = r.take(1)[0]
        cls = self.by_index.get(index)
        if cls is None:
            raise CodecError(f"unknown {self.what} index {index}")
        return cls.decode_fields(r)
