"""UnixFS files over dag-pb: a streaming builder that yields the CID Kubo computes, and a reader.

The import profile is Kubo's default (``ipfs add`` without flags): CIDv0, sha2-256, fixed-size
chunks of 262144 bytes, dag-pb leaves (no raw leaves), balanced layout with 174 links per node.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from decentralml_jupyter.errors import IntegrityError, StorageError

from .cid import CID, DAG_PB, RAW, decode_varint, encode_varint

Bytes = bytes | bytearray | memoryview

CHUNK_SIZE = 262144
MAX_LINKS = 174  # go-unixfs helpers.DefaultLinksPerBlock
IMPORT_OPTIONS = {
    "cid-version": "0",
    "hash": "sha2-256",
    "chunker": f"size-{CHUNK_SIZE}",
    "raw-leaves": "false",
    "trickle": "false",
}

# UnixFS Data.DataType values
T_RAW, T_DIRECTORY, T_FILE = 0, 1, 2


@dataclass(frozen=True)
class Link:
    cid: CID
    name: str
    tsize: int  # bytes of the linked block plus everything below it


@dataclass(frozen=True)
class DagNode:
    links: tuple[Link, ...]
    data: Bytes | None


@dataclass(frozen=True)
class UnixFSData:
    type: int
    data: Bytes
    filesize: int | None
    blocksizes: tuple[int, ...]


def _field(tag: int, payload: bytes) -> bytes:
    return encode_varint(tag) + encode_varint(len(payload)) + payload


def encode_dag_pb(links: Iterable[Link], data: bytes | None) -> bytes:
    # Links come before Data: the canonical dag-pb order that Kubo hashes.
    out = bytearray()
    for link in links:
        body = (
            _field(0x0A, link.cid.to_bytes())
            + _field(0x12, link.name.encode())
            + b"\x18"
            + encode_varint(link.tsize)
        )
        out += _field(0x12, body)
    if data is not None:
        out += _field(0x0A, data)
    return bytes(out)


def encode_unixfs_file(data: bytes, filesize: int, blocksizes: Iterable[int] = ()) -> bytes:
    out = bytearray(b"\x08" + encode_varint(T_FILE))
    if data:  # Kubo omits an empty Data field (an empty file is 08 02 18 00)
        out += _field(0x12, data)
    out += b"\x18" + encode_varint(filesize)
    for size in blocksizes:
        out += b"\x20" + encode_varint(size)
    return bytes(out)


def _iter_fields(buf: Bytes) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield (field number, wire type, value) of a protobuf message; a length-delimited value
    is a view into ``buf`` (no copy)."""
    pos = 0
    mv = memoryview(buf)
    while pos < len(buf):
        key, pos = decode_varint(mv, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = decode_varint(mv, pos)
            yield num, wt, val
        elif wt == 2:
            n, pos = decode_varint(mv, pos)
            if pos + n > len(buf):
                raise ValueError("truncated field")
            yield num, wt, mv[pos : pos + n]
            pos += n
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")


def decode_dag_pb(block: Bytes) -> DagNode:
    """Links and Data of a dag-pb block; Data is a view into ``block``."""
    links: list[Link] = []
    data: Bytes | None = None
    for num, wt, val in _iter_fields(block):
        if num == 2 and wt == 2:
            h, name, tsize = None, "", 0
            for lnum, lwt, lval in _iter_fields(val):  # type: ignore[arg-type]
                if lnum == 1 and lwt == 2:
                    h = bytes(lval)  # type: ignore[arg-type]
                elif lnum == 2 and lwt == 2:
                    name = bytes(lval).decode()  # type: ignore[arg-type]
                elif lnum == 3 and lwt == 0:
                    tsize = lval  # type: ignore[assignment]
            if h is None:
                raise ValueError("dag-pb link without a hash")
            links.append(Link(CID.from_bytes(h), name, tsize))  # type: ignore[arg-type]
        elif num == 1 and wt == 2:
            data = val  # type: ignore[assignment]
        else:
            raise ValueError(f"unexpected dag-pb field {num}")
    return DagNode(tuple(links), data)


def decode_unixfs(data: Bytes) -> UnixFSData:
    """A UnixFS message; its ``data`` is a view into ``data`` (no copy)."""
    typ, payload, filesize, sizes = None, b"", None, []
    for num, wt, val in _iter_fields(data):
        if num == 1 and wt == 0:
            typ = val
        elif num == 2 and wt == 2:
            payload = val
        elif num == 3 and wt == 0:
            filesize = val
        elif num == 4 and wt == 0:
            sizes.append(val)
        elif num == 4 and wt == 2:  # packed encoding, accepted when reading
            pos = 0
            while pos < len(val):  # type: ignore[arg-type]
                v, pos = decode_varint(val, pos)  # type: ignore[arg-type]
                sizes.append(v)
    if typ is None:
        raise ValueError("UnixFS data without a type")
    return UnixFSData(typ, payload, filesize, tuple(sizes))  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Built:
    cid: CID
    tsize: int
    filesize: int


BlockSink = Callable[[CID, bytes], None]
# A block as consecutive pieces (a leaf: its frame and a view of the caller's chunk): what
# writes it out needs no copy of it in one piece.
PartsSink = Callable[[CID, tuple[Bytes, ...]], None]


class FileDagBuilder:
    """Streaming balanced-layout builder: ``write`` bytes, then ``finish`` gives the root CID.

    Memory stays at one chunk plus one pending link list per tree level, whatever the size.
    ``sink`` (optional) receives every block as it is made, in the order Kubo would write it;
    ``parts_sink`` (instead) the same blocks in pieces, valid only during the call.
    """

    def __init__(self, sink: BlockSink | None = None, *, parts_sink: PartsSink | None = None):
        self._sink = sink
        self._parts_sink = parts_sink
        self._buf = bytearray()
        self._levels: list[list[_Built]] = [[]]
        self._chunks = 0
        self.size = 0

    def _emit(self, block: bytes) -> CID:
        cid = CID.for_block(block)
        if self._sink is not None:
            self._sink(cid, block)
        elif self._parts_sink is not None:
            self._parts_sink(cid, (block,))
        return cid

    def _leaf(self, chunk: Bytes) -> None:
        self._chunks += 1
        if self._sink is None:  # hashed in place: no copy of the chunk
            cid, size = leaf_cid(chunk)
            if self._parts_sink is not None:
                head, tail = _leaf_frame(len(chunk))
                self._parts_sink(cid, (head, chunk, tail))
            self._push(0, _Built(cid, size, len(chunk)))
            return
        block = encode_dag_pb((), encode_unixfs_file(bytes(chunk), len(chunk)))
        self._push(0, _Built(self._emit(block), len(block), len(chunk)))

    def _node(self, children: list[_Built]) -> _Built:
        data = encode_unixfs_file(
            b"", sum(c.filesize for c in children), [c.filesize for c in children]
        )
        block = encode_dag_pb((Link(c.cid, "", c.tsize) for c in children), data)
        return _Built(
            self._emit(block),
            len(block) + sum(c.tsize for c in children),
            sum(c.filesize for c in children),
        )

    def _push(self, level: int, item: _Built) -> None:
        # A full level is closed only when one more item arrives, so that a tree that ends
        # exactly full gets no extra parent (as Kubo's balanced builder does).
        if len(self._levels) == level:
            self._levels.append([])
        pending = self._levels[level]
        if len(pending) == MAX_LINKS:
            self._levels[level] = []
            self._push(level + 1, self._node(pending))
            pending = self._levels[level]
        pending.append(item)

    def write(self, data: Bytes) -> None:
        self.size += len(data)
        mv = memoryview(data).cast("B")
        if self._buf:  # complete the pending chunk first
            take = min(CHUNK_SIZE - len(self._buf), len(mv))
            self._buf += mv[:take]
            mv = mv[take:]
            if len(self._buf) < CHUNK_SIZE:
                return
            self._leaf(self._buf)
            self._buf = bytearray()
        # Whole chunks straight from the caller's buffer (no copy); the rest waits.
        n_full = len(mv) // CHUNK_SIZE
        for i in range(n_full):
            self._leaf(mv[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE])
        self._buf += mv[n_full * CHUNK_SIZE :]

    def finish(self) -> CID:
        if self._buf or self._chunks == 0:  # an empty input is one empty leaf
            self._leaf(bytes(self._buf))
            self._buf = bytearray()
        level = 0
        while True:
            pending = self._levels[level]
            higher = any(self._levels[level + 1 :])
            if not higher and len(pending) == 1:
                return pending[0].cid
            self._levels[level] = []
            self._push(level + 1, self._node(pending))
            level += 1


@functools.lru_cache(maxsize=256)
def _leaf_frame(n: int) -> tuple[bytes, bytes]:
    """What comes before and after ``n`` bytes of content in a UnixFS file leaf (dag-pb).
    Cached: a file's leaves are all of one size but the last, and this was built anew for
    every leaf, hashed or stored."""
    head = b"\x08\x02" + (b"\x12" + encode_varint(n) if n else b"")
    tail = b"\x18" + encode_varint(n)
    return b"\x0a" + encode_varint(len(head) + n + len(tail)) + head, tail


def leaf_cid(chunk: Bytes) -> tuple[CID, int]:
    """The CID and block size of the dag-pb leaf holding ``chunk``, as ``encode_dag_pb`` and
    ``encode_unixfs_file`` would make it, hashed without building (copying) the block."""
    head, tail = _leaf_frame(len(chunk))
    h = hashlib.sha256(head)
    h.update(chunk)
    h.update(tail)
    return CID(0, DAG_PB, h.digest()), len(head) + len(chunk) + len(tail)


def is_leaf_content(cid: CID, chunk: Bytes) -> bool:
    """Whether ``chunk`` is exactly the content of the leaf block ``cid``: a raw block, or a
    dag-pb UnixFS file leaf in the canonical encoding (ours and Kubo's). Each byte is hashed
    once; a False means only that the leaf is not in this form (read its block instead)."""
    if cid.codec == RAW:
        return hashlib.sha256(chunk).digest() == cid.digest
    if cid.codec != DAG_PB:
        return False
    return leaf_cid(chunk)[0].digest == cid.digest


def maybe_leaf(link: Link, size: int) -> bool:
    """Whether a link to ``size`` bytes of content looks like a leaf: a raw block, or a block
    whose total size (``tsize``) leaves no room for a child link (a CID alone takes 34 bytes).
    Only a guess to plan reads; ``is_leaf_content`` decides."""
    if link.cid.codec == RAW:
        return link.tsize == size
    return 0 <= link.tsize - size <= 32


def compute_cid(data: bytes | BinaryIO, *, read_size: int = 1 << 20) -> str:
    """The CID Kubo gives these bytes (or this stream) with our import profile."""
    builder = FileDagBuilder()
    if isinstance(data, bytes | bytearray | memoryview):
        builder.write(data)
    else:
        while chunk := data.read(read_size):
            builder.write(chunk)
    return str(builder.finish())


BlockFetcher = Callable[[CID], bytes]


@dataclass(frozen=True)
class RootInfo:
    """What the root block says about a file: its content size and how it is split."""

    cid: CID
    size: int
    block_size: int
    links: int


def read_root(cid: CID, block: bytes) -> RootInfo:
    """Verify and describe a file's root block; raises on directories and corrupt data."""
    cid.verify(block)
    if cid.codec == RAW:
        return RootInfo(cid, len(block), len(block), 0)
    node = _decode_verified(cid, block)
    fs = _unixfs_of(cid, node)
    size = fs.filesize if fs.filesize is not None else len(fs.data)
    return RootInfo(cid, size, len(block), len(node.links))


def _decode_verified(cid: CID, block: bytes) -> DagNode:
    try:
        return decode_dag_pb(block)
    except ValueError as exc:
        # The hash matched, so these are the bytes that were added: not ours to read.
        raise StorageError(f"{cid} is not a dag-pb node we can read ({exc})") from None


def _unixfs_of(cid: CID, node: DagNode) -> UnixFSData:
    if node.data is None:
        raise StorageError(f"{cid} holds no UnixFS data")
    try:
        fs = decode_unixfs(node.data)
    except ValueError as exc:
        raise StorageError(f"{cid} holds malformed UnixFS data ({exc})") from None
    if fs.type not in (T_FILE, T_RAW):
        raise StorageError(
            f"{cid} is a UnixFS node of type {fs.type}, not a file",
            hint="only single files (artefacts) can be read; add files, not directories",
        )
    return fs


def node_of(cid: CID, block: bytes) -> tuple[Bytes, list[tuple[Link, int | None]]]:
    """A verified file block's own content and its children, each with the content size its
    parent declares for it (None where the parent declares none)."""
    if cid.codec == RAW:
        return block, []
    if cid.codec != DAG_PB:
        raise StorageError(f"{cid} has an unsupported codec")
    node = _decode_verified(cid, block)
    fs = _unixfs_of(cid, node)
    sizes: list[int | None] = list(fs.blocksizes)
    if len(sizes) != len(node.links):
        sizes = [None] * len(node.links)
    return fs.data, list(zip(node.links, sizes, strict=True))


def iter_file(
    root: CID | str,
    fetch: BlockFetcher,
    announce: Callable[[list[CID]], None] | None = None,
    *,
    verify: bool = True,
) -> Iterator[bytes]:
    """Yield a UnixFS file's bytes in order, verifying every block before using it (unless
    ``verify`` is False: a node reading its own blockstore, as Kubo does by default).

    A block that does not hash to its CID raises IntegrityError before any of its bytes are
    yielded; the total length is checked against the root's declared size at the end.
    ``announce`` (optional) is told each node's children in read order, for prefetching.
    """
    root = CID.parse(root) if isinstance(root, str) else root
    stack: list[CID] = [root]
    declared: int | None = None
    produced = 0
    while stack:
        cid = stack.pop()
        block = fetch(cid)
        if verify:
            cid.verify(block)
        if cid.codec == RAW:
            chunk = block
        else:
            if cid.codec != DAG_PB:
                raise StorageError(f"{cid} has an unsupported codec")
            node = _decode_verified(cid, block)
            fs = _unixfs_of(cid, node)
            if declared is None:
                declared = fs.filesize if fs.filesize is not None else len(fs.data)
            chunk = fs.data
            stack.extend(link.cid for link in reversed(node.links))
            if announce is not None and node.links:
                announce([link.cid for link in node.links])
        if declared is None:
            declared = len(chunk)
        produced += len(chunk)
        if produced > declared:
            raise IntegrityError(f"{root} yields more bytes than its root declares ({declared})")
        if chunk:
            yield chunk
    if produced != declared:
        raise IntegrityError(
            f"{root} yielded {produced} bytes but its root declares {declared}",
            hint="the DAG is inconsistent; re-add the artefact from a good copy",
        )
