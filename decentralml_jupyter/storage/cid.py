"""Content identifiers: multihash, CIDv0/CIDv1 encoding and parsing, and block verification.

Only what our artefacts and a Kubo node produce is supported: sha2-256 multihashes with the
dag-pb (0x70) or raw (0x55) codecs, CIDv0 in base58btc and CIDv1 in base32 (``b...``).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from decentralml_jupyter.errors import IntegrityError, UsageError

SHA2_256 = 0x12
DAG_PB = 0x70
RAW = 0x55

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128, as used by multiformats and protobuf."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int = 0) -> tuple[int, int]:
    """Return (value, new position); raises ValueError on a truncated or oversized varint."""
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    chars = []
    while n:
        n, r = divmod(n, 58)
        chars.append(_B58_ALPHABET[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(chars))


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        try:
            n = n * 58 + _B58_INDEX[c]
        except KeyError:
            raise ValueError(f"not base58: {c!r}") from None
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + body


@dataclass(frozen=True)
class CID:
    """A parsed CID; ``str(cid)`` gives its canonical text form."""

    version: int
    codec: int
    digest: bytes  # the sha2-256 digest (32 bytes)

    @property
    def multihash(self) -> bytes:
        return bytes([SHA2_256, len(self.digest)]) + self.digest

    def to_bytes(self) -> bytes:
        if self.version == 0:
            return self.multihash
        return encode_varint(1) + encode_varint(self.codec) + self.multihash

    def __str__(self) -> str:
        if self.version == 0:
            return b58encode(self.multihash)
        return "b" + base64.b32encode(self.to_bytes()).decode("ascii").rstrip("=").lower()

    @classmethod
    def for_block(cls, block: bytes, *, version: int = 0, codec: int = DAG_PB) -> CID:
        if version == 0 and codec != DAG_PB:
            raise ValueError("CIDv0 is dag-pb only")
        return cls(version, codec, hashlib.sha256(block).digest())

    @classmethod
    def parse(cls, text: str | CID) -> CID:
        """Parse CIDv0 (``Qm...``) or CIDv1 base32 (``b...``); raises UsageError otherwise."""
        if isinstance(text, CID):
            return text
        text = text.strip()
        if text.startswith("/ipfs/"):
            text = text[len("/ipfs/") :]
        try:
            if len(text) == 46 and text.startswith("Qm"):
                return cls._from_multihash(0, DAG_PB, b58decode(text))
            if text.startswith("b"):
                body = text[1:].upper()
                raw = base64.b32decode(body + "=" * (-len(body) % 8))
                return cls.from_bytes(raw)
        except ValueError as exc:
            raise UsageError(f"not a valid CID: {text!r} ({exc})") from None
        raise UsageError(
            f"not a valid CID: {text!r}",
            hint="use a CIDv0 (Qm...) or a base32 CIDv1 (b...) as printed by `dfml storage put`",
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> CID:
        """Binary CID as found in dag-pb links (CIDv0 = bare multihash)."""
        if len(raw) == 34 and raw[0] == SHA2_256 and raw[1] == 32:
            return cls._from_multihash(0, DAG_PB, raw)
        version, pos = decode_varint(raw)
        if version != 1:
            raise ValueError(f"unsupported CID version {version}")
        codec, pos = decode_varint(raw, pos)
        if codec not in (DAG_PB, RAW):
            raise ValueError(f"unsupported codec 0x{codec:x}")
        return cls._from_multihash(1, codec, raw[pos:])

    @classmethod
    def _from_multihash(cls, version: int, codec: int, mh: bytes) -> CID:
        if len(mh) != 34 or mh[0] != SHA2_256 or mh[1] != 32:
            raise ValueError("only sha2-256 multihashes are supported")
        return cls(version, codec, bytes(mh[2:]))

    def verify(self, block: bytes) -> None:
        """Raise IntegrityError unless ``block`` hashes to this CID."""
        if hashlib.sha256(block).digest() != self.digest:
            raise IntegrityError(
                f"block {self} failed verification: its {len(block)} bytes do not hash to its CID",
                hint="the storage node returned corrupted or truncated data; re-add the artefact "
                "from a good copy or read it from another node",
            )
