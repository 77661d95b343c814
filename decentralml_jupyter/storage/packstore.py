"""The storage service's blockstore: blocks appended to a few pack files, found by an index.

Kubo's flatfs keeps a file per block: 1,526 files for a 400 MB update, whose creation alone
took longer than the whole upload may. Here blocks go one after another into a pack file
(``NNNNNNNN.pack``, a new one past ``PACK_LIMIT`` bytes), each as a record::

    b"DFB1" | sha2-256 digest (32 bytes) | size (u32, little-endian) | the block's bytes

and an index beside it (``NNNNNNNN.idx``) lists the records in the order they were written,
52 bytes each: digest, offset of the block's bytes (u64), size (u32), and where a UnixFS
leaf's content lies in the block (offset and length, u32 each; zeros when the block is no
such leaf), so that a file's content can be sent from the pack without reading its leaves.

Crash safety (nothing is fsynced, as before: a killed process loses nothing; only a crash of
the machine could lose what it had not written back): a block is found only once its record
is written whole, and its index entry is written after its record. On opening, each pack's
index is checked against the pack, the records after the last entry are read and each one
whose bytes hash to its digest is indexed again, and the pack is cut after the last good
record: a record half written when the process died is never read, and nothing before it is
lost. Blocks are verified by their readers (as Kubo does not hash on read); ``gc`` keeps only
the blocks it is given and rewrites the packs that held others.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from .cid import decode_varint

Bytes = bytes | bytearray | memoryview

MAGIC = b"DFB1"
RECORD_HEAD = struct.Struct("<4s32sI")  # magic, digest, size
INDEX_ENTRY = struct.Struct("<32sQIII")  # digest, data offset, size, content offset, length
PACK_LIMIT = 1 << 30  # a new pack is started once one is this long
PREALLOCATE = 64 << 20  # disk space reserved ahead of the records, past the pack's end
MAX_RECORD = 16 << 20  # no block is larger (Kubo refuses those over 1 MiB; bitswap 4 MiB)
FLUSH_EVERY = 64  # index entries kept in memory at most before they are written
_PACK_NAME = re.compile(r"([0-9]{8})\.pack")


class Entry(NamedTuple):
    """Where a block lies: its pack, the offset of its bytes, its size, and its content's
    place in it when it is a UnixFS file leaf (``content_len`` 0 otherwise)."""

    pack: Pack
    offset: int
    size: int
    content_offset: int
    content_len: int


class Pack:
    """One pack file, open for reading (and, the newest, for appending). Its descriptor is
    closed when no one refers to it any more, so that a reader holding an Entry can still read
    a pack that gc has just removed."""

    def __init__(self, directory: Path, number: int):
        self.number = number
        self.path = directory / f"{number:08d}.pack"
        self.index_path = directory / f"{number:08d}.idx"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        self.end = 0  # where the next record goes
        self.reserved = 0  # disk space allocated up to here (past the file's size)
        self.digests: list[bytes] = []  # of the records indexed here, in order

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass

    def pread(self, size: int, offset: int) -> bytes:
        data = os.pread(self.fd, size, offset)
        while len(data) < size:  # a regular file gives all of it unless it ends first
            more = os.pread(self.fd, size - len(data), offset + len(data))
            if not more:
                break
            data += more
        return data


def leaf_content(block: Bytes) -> tuple[int, int]:
    """Where the content of a UnixFS file leaf lies in its dag-pb block, as Kubo and this
    service encode one (``0a L 08 02 12 n <content> 18 n``): (offset, length); (0, 0) if the
    block is not in that form."""
    try:
        mv = memoryview(block)
        if len(mv) < 6 or mv[0] != 0x0A:
            return 0, 0
        inner, pos = decode_varint(mv, 1)
        if pos + inner != len(mv) or bytes(mv[pos : pos + 3]) != b"\x08\x02\x12":
            return 0, 0
        n, start = decode_varint(mv, pos + 3)
        tail = start + n
        if tail >= len(mv) or mv[tail] != 0x18:
            return 0, 0
        filesize, end = decode_varint(mv, tail + 1)
        if filesize != n or end != len(mv) or n == 0:
            return 0, 0
        return start, n
    except (ValueError, IndexError):
        return 0, 0


class PackStore:
    """Blocks in pack files (see the module docstring). Thread-safe."""

    def __init__(self, directory: Path, pack_limit: int = PACK_LIMIT):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pack_limit = pack_limit
        self._lock = threading.Lock()  # appends, the index and the pack list
        self._index: dict[bytes, Entry] = {}
        self._packs: dict[int, Pack] = {}
        self._pending: list[bytes] = []  # index entries of the active pack not yet written
        self.recovered: list[str] = []  # what opening found and repaired, for the log
        numbers = sorted(
            int(m[1]) for p in self.dir.iterdir() if (m := _PACK_NAME.fullmatch(p.name))
        )
        for number in numbers:
            self._open_pack(number)
        for stale in self.dir.glob("*.idx"):  # an index whose pack gc removed
            if not stale.with_suffix(".pack").exists():
                stale.unlink()
        self._active = self._packs[numbers[-1]] if numbers else self._new_pack_locked()

    # -- opening and recovery -----------------------------------------------------------------

    def _open_pack(self, number: int) -> None:
        pack = Pack(self.dir, number)
        self._packs[number] = pack
        size = os.fstat(pack.fd).st_size
        try:
            raw = pack.index_path.read_bytes()
        except FileNotFoundError:
            raw = b""
        entries = []
        end = 0
        for i in range(len(raw) // INDEX_ENTRY.size):
            digest, offset, n, c_off, c_len = INDEX_ENTRY.unpack_from(raw, i * INDEX_ENTRY.size)
            # entries follow their records in order: each starts where the previous ended
            if offset != end + RECORD_HEAD.size or offset + n > size or n > MAX_RECORD:
                break
            entries.append((digest, offset, n, c_off, c_len))
            end = offset + n
        indexed = len(entries)
        if indexed * INDEX_ENTRY.size != len(raw):
            self.recovered.append(
                f"{pack.index_path.name}: {len(raw) // INDEX_ENTRY.size - indexed} index "
                "entries past its pack's good records dropped"
            )
        # Records written after the last index entry: kept if whole and true to their digest.
        while end + RECORD_HEAD.size <= size:
            magic, digest, n = RECORD_HEAD.unpack(pack.pread(RECORD_HEAD.size, end))
            start = end + RECORD_HEAD.size
            if magic != MAGIC or n > MAX_RECORD or start + n > size:
                break
            block = pack.pread(n, start)
            if len(block) != n or hashlib.sha256(block).digest() != digest:
                break
            entries.append((digest, start, n, *leaf_content(block)))
            end = start + n
        if len(entries) > indexed:
            self.recovered.append(
                f"{pack.path.name}: {len(entries) - indexed} whole records past its index "
                "verified and indexed"
            )
        if end < size:
            self.recovered.append(
                f"{pack.path.name}: {size - end} bytes after its last whole record cut off"
            )
            os.ftruncate(pack.fd, end)
        if len(entries) != indexed or indexed * INDEX_ENTRY.size != len(raw):
            tmp = pack.index_path.with_suffix(".idx.tmp")
            tmp.write_bytes(b"".join(INDEX_ENTRY.pack(*e) for e in entries))
            os.replace(tmp, pack.index_path)
        for digest, offset, n, c_off, c_len in entries:
            self._index[digest] = Entry(pack, offset, n, c_off, c_len)
            pack.digests.append(digest)
        pack.end = end

    def _new_pack_locked(self) -> Pack:
        number = max(self._packs, default=0) + 1
        pack = Pack(self.dir, number)
        pack.index_path.touch()
        self._packs[number] = pack
        return pack

    # -- writing ------------------------------------------------------------------------------

    def has(self, digest: bytes) -> bool:
        return digest in self._index

    def put(self, digest: bytes, parts: Sequence[Bytes], content: tuple[int, int] = (0, 0)) -> bool:
        """Append a block (given as consecutive pieces) unless it is stored; ``content``: where
        a leaf's content lies in it. The caller has hashed the pieces to ``digest``. Returns
        whether it was written."""
        size = sum(len(p) for p in parts)
        if size > MAX_RECORD:
            raise ValueError(f"a block of {size} bytes is larger than {MAX_RECORD}")
        with self._lock:
            if digest in self._index:
                return False
            self._append_locked(digest, parts, size, content)
            if len(self._pending) >= FLUSH_EVERY:
                self._flush_locked()
        return True

    def _append_locked(
        self, digest: bytes, parts: Sequence[Bytes], size: int, content: tuple[int, int]
    ) -> None:
        pack = self._active
        if pack.end >= self.pack_limit:
            self._flush_locked()
            pack = self._active = self._new_pack_locked()
        start = pack.end
        if start + RECORD_HEAD.size + size > pack.reserved:
            pack.reserved = _reserve(pack.fd, start, RECORD_HEAD.size + size + PREALLOCATE)
        _pwritev_all(pack.fd, [RECORD_HEAD.pack(MAGIC, digest, size), *parts], start)
        offset = start + RECORD_HEAD.size
        pack.end = offset + size
        # readable from now on: whole, and true to its digest
        self._index[digest] = Entry(pack, offset, size, *content)
        pack.digests.append(digest)
        self._pending.append(INDEX_ENTRY.pack(digest, offset, size, *content))

    def flush(self) -> None:
        """Write the index entries kept in memory (the records are written already)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        with open(self._active.index_path, "ab") as f:
            f.write(data)

    # -- reading ------------------------------------------------------------------------------

    def locate(self, digest: bytes) -> Entry | None:
        return self._index.get(digest)

    def get(self, digest: bytes) -> bytes | None:
        entry = self._index.get(digest)
        if entry is None:
            return None
        return entry.pack.pread(entry.size, entry.offset)

    def __len__(self) -> int:
        return len(self._index)

    def disk_bytes(self) -> int:
        with self._lock:
            return sum(p.end for p in self._packs.values())

    def _pack_of(self, digest: bytes) -> Pack | None:
        entry = self._index.get(digest)
        return None if entry is None else entry.pack

    # -- garbage collection --------------------------------------------------------------------

    def gc(self, live: Callable[[bytes], bool]) -> list[bytes]:
        """Remove every block for which ``live(digest)`` is false; returns their digests.

        Packs holding such blocks are rewritten: their live records are copied into a new
        pack (indexed there first), then the old pack and its index are removed. The caller
        keeps writers out meanwhile; readers may go on (an entry read before keeps its pack
        open). A crash in between leaves a block in two packs, which is harmless.
        """
        with self._lock:
            self._flush_locked()
            # packs holding a dead block, or a block copied since into another pack
            victims = [
                p
                for p in self._packs.values()
                if any(not live(d) or self._pack_of(d) is not p for d in p.digests)
            ]
            if not victims:
                return []
            self._active = self._new_pack_locked()
            removed: list[bytes] = []
            for old in victims:
                for digest in old.digests:
                    entry = self._index.get(digest)
                    if entry is None or entry.pack is not old:
                        continue  # removed already, or a later copy (a crash in an earlier gc)
                    if not live(digest):
                        del self._index[digest]
                        removed.append(digest)
                        continue
                    block = old.pread(entry.size, entry.offset)
                    content = (entry.content_offset, entry.content_len)
                    self._append_locked(digest, [block], entry.size, content)
                self._flush_locked()
                del self._packs[old.number]
                old.path.unlink(missing_ok=True)
                old.index_path.unlink(missing_ok=True)
            return removed


def _libc_fallocate() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return fallocate


_fallocate = _libc_fallocate()
_FALLOC_FL_KEEP_SIZE = 1


def _reserve(fd: int, offset: int, length: int) -> int:
    """Allocate disk space for ``length`` bytes from ``offset`` without changing the file's
    size (Linux fallocate, KEEP_SIZE): appends then skip the filesystem's delayed allocation
    (a quarter of their time on ext4 here). Returns where space is reserved up to; only an
    optimisation, skipped where the call or the filesystem does not have it."""
    global _fallocate
    if _fallocate is not None and _fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return offset + length
    if _fallocate is not None and ctypes.get_errno() in (errno.EOPNOTSUPP, errno.ENOSYS):
        _fallocate = None
    return offset + length  # not reserved; asked again only past it


def _pwritev_all(fd: int, parts: Iterable[Bytes], offset: int) -> None:
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        n = os.pwritev(fd, views, offset)
        if n <= 0:
            raise OSError("could not write to the pack file")
        offset += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


def locate_on_disk(directory: Path, digest: bytes) -> tuple[Path, int, int] | None:
    """Where a block lies in the packs of ``directory`` per their index files (the pack, the
    offset of its bytes, its size), read from disk, for tools and tests; None if absent."""
    for idx in sorted(directory.glob("*.idx")):
        raw = idx.read_bytes()
        for i in range(len(raw) // INDEX_ENTRY.size):
            d, offset, n, _, _ = INDEX_ENTRY.unpack_from(raw, i * INDEX_ENTRY.size)
            if d == digest:
                return idx.with_suffix(".pack"), offset, n
    return None
