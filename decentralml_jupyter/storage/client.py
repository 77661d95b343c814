"""A thin Kubo HTTP RPC client: the one way every role reaches storage.

Works with a local Kubo daemon, a pinning service (pass an auth header) or ``dfml storage up``.
Uploads and downloads stream; every block read is verified against its CID. Reads are bounded:
no block may exceed ``MAX_BLOCK_SIZE``, and ``get(cid, max_bytes=N)`` (or
``KuboStore(max_bytes=N)``) refuses content over N bytes from its root block's declared size,
before reading the rest.
"""

from __future__ import annotations

import ctypes
import http.client
import io
import json
import mmap
import os
import sys
import tempfile
import threading
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

import requests

from decentralml_jupyter.errors import IntegrityError, StorageError

from .cid import CID
from .store import (
    ArtifactTooLarge,
    ObjectStat,
    Source,
    StorageTimeout,
    StorageUnavailable,
    Stored,
)
from .unixfs import (
    IMPORT_OPTIONS,
    Bytes,
    FileDagBuilder,
    is_leaf_content,
    iter_file,
    maybe_leaf,
    node_of,
    read_root,
)

DEFAULT_URL = "http://127.0.0.1:5001"
DEFAULT_TIMEOUT = 30.0
READ_SIZE = 1 << 20
_REPLAYABLE = frozenset({"version", "block/get", "block/stat", "cat", "pin/ls"})  # reads only
# Kubo refuses to add blocks over 1 MiB without --allow-big-block, and bitswap carries at most
# 4 MiB: a node that answers block/get with more is broken or hostile, and is not read further.
MAX_BLOCK_SIZE = 4 << 20
# put_many: what one add request carries at most (more go in several requests, one after
# another); well within the dev service's caps (limits.py: a body of 1 GiB, 4096 files).
PUT_MANY_BYTES = 32 << 20
PUT_MANY_FILES = 1000
_COALESCE = 1 << 20  # small files' framing and bytes are joined into pieces of about this


class KuboStore:
    """``Store`` over the Kubo RPC. ``timeout`` bounds the search for content (seconds);
    ``max_bytes`` is the default size limit of every read (None: none), see ``get``."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = 5.0,
        prefetch: int = 4,
        max_bytes: int | None = None,
        stream_reads: bool = True,
    ):
        self.url = url.rstrip("/")
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.prefetch = prefetch  # blocks fetched ahead in parallel while reading a file
        # Reads take a file's leaves from one ``cat`` stream, each checked against its CID
        # (see _iter_streamed); False: every block by ``block/get`` (prefetched).
        self.stream_reads = stream_reads
        self._headers = dict(headers or {})
        self._local = threading.local()
        # Each thread's session and kept connection, held strongly by the thread's own
        # storage only: a thread that ends (a read-ahead pool's, made per round) takes them
        # with it, where a list would keep every one (and its socket) open for good
        self._sessions: weakref.WeakSet[requests.Session] = weakref.WeakSet()
        self._conns: weakref.WeakSet[http.client.HTTPConnection] = weakref.WeakSet()
        self._sessions_lock = threading.Lock()
        # One pool for every read's prefetching: its threads' sessions (and connections) are
        # reused, where a pool per read would leave ``prefetch`` open connections behind each.
        self._prefetch_pool: ThreadPoolExecutor | None = None

    @property
    def _session(self) -> requests.Session:
        # One session per thread: prefetching threads must not share a connection pool.
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update(self._headers)
            self._local.session = session
            with self._sessions_lock:
                self._sessions.add(session)
        return session

    @classmethod
    def from_env(cls, url: str | None = None, **kwargs: Any) -> KuboStore:
        """URL from ``url`` or DFML_STORAGE; an Authorization header value from
        DFML_STORAGE_AUTH (e.g. ``Bearer TOKEN`` for a pinning service)."""
        headers = dict(kwargs.pop("headers", None) or {})
        if auth := os.environ.get("DFML_STORAGE_AUTH"):
            headers.setdefault("Authorization", auth)
        return cls(url or os.environ.get("DFML_STORAGE") or DEFAULT_URL, headers=headers, **kwargs)

    def __repr__(self) -> str:  # never shows the headers: they may hold a token
        return f"KuboStore({self.url!r})"

    def close(self) -> None:
        with self._sessions_lock:
            pool, self._prefetch_pool = self._prefetch_pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        with self._sessions_lock:
            for session in list(self._sessions):
                session.close()
            self._sessions.clear()
            for conn in list(self._conns):
                conn.close()
            self._conns.clear()

    def _prefetchers(self) -> ThreadPoolExecutor:
        with self._sessions_lock:
            if self._prefetch_pool is None:
                self._prefetch_pool = ThreadPoolExecutor(
                    max_workers=self.prefetch, thread_name_prefix="dfml-block"
                )
            return self._prefetch_pool

    def __enter__(self) -> KuboStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------------------

    def _rpc(
        self,
        command: str,
        params: Mapping[str, str] | None = None,
        *,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        stream: bool = False,
    ) -> requests.Response:
        timeout = self.timeout if timeout is None else timeout
        query = dict(params or {})
        # Kubo's own deadline ends the search; ours is a margin later so its answer arrives.
        query.setdefault("timeout", f"{timeout:g}s")
        # A node may close a kept-alive connection just as it is reused (the dev service closes
        # idle ones): a read cut off that way is sent once more, on a new connection.
        tries = 2 if data is None and command in _REPLAYABLE else 1
        for attempt in range(tries):
            try:
                r = self._session.post(
                    f"{self.url}/api/v0/{command}",
                    params=query,
                    data=data,
                    headers=headers,
                    timeout=(self.connect_timeout, timeout + 5.0),
                    stream=stream,
                )
                break
            except requests.ConnectionError as exc:
                if attempt + 1 < tries and not isinstance(exc, requests.ConnectTimeout):
                    continue
                raise StorageUnavailable(
                    f"no storage service answers at {self.url} ({command} failed: connection "
                    "refused or closed)"
                ) from None
            except requests.Timeout:
                raise StorageTimeout(
                    f"storage at {self.url} did not answer {command} within {timeout:g} s"
                ) from None
        if r.status_code != 200:
            self._raise(command, params, r)
        return r

    def _raise(self, command: str, params: Mapping[str, str] | None, r: requests.Response) -> None:
        try:
            message = r.json().get("Message", r.text)
        except ValueError:
            message = r.text.strip() or r.reason
        arg = (params or {}).get("arg", "")
        if "deadline exceeded" in message or "context canceled" in message:
            raise StorageTimeout(f"{arg or command}: not found in storage at {self.url} in time")
        if r.status_code in (401, 403):
            raise StorageError(
                f"storage at {self.url} refused {command}: {r.status_code} {message}",
                hint="check the credentials (DFML_STORAGE_AUTH holds the Authorization header)",
            )
        if r.status_code == 404:
            raise StorageError(
                f"storage at {self.url} does not know the command {command}",
                hint="point --storage / DFML_STORAGE at a Kubo RPC endpoint (port 5001)",
            )
        if r.status_code == 413:
            raise StorageError(
                f"storage at {self.url} refused {command}: {message}",
                hint="the node caps request bodies; the dev service's cap is set with "
                "DFML_STORAGE_MAX_BODY (bytes) before `dfml storage up`",
            )
        if r.status_code == 503:
            raise StorageError(
                f"storage at {self.url} is busy and refused {command}: {message}",
                hint="retry later; the dev service's pool is set with DFML_STORAGE_WORKERS and "
                "DFML_STORAGE_BACKLOG",
            )
        raise StorageError(f"storage at {self.url}: {command} {arg} failed: {message}".strip())

    # -- Store ---------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        return self._rpc("version").json()

    def put(self, data: Source, *, pin: bool = True) -> str:
        return self._put(data, pin=pin).cid

    def put_file(
        self,
        path: str | os.PathLike[str],
        *,
        pin: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> Stored:
        """Add a file, streamed; ``progress(bytes_sent, total)`` follows the upload."""
        total = os.path.getsize(path)
        with open(path, "rb") as f:
            return self._put(f, pin=pin, name=Path(path).name, progress=progress, total=total)

    def _put(
        self,
        data: Source,
        *,
        pin: bool,
        name: str = "file",
        progress: Callable[[int, int], None] | None = None,
        total: int = 0,
    ) -> Stored:
        builder = FileDagBuilder()
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body() -> Iterator[bytes]:
            # The CID is computed while the bytes go out, so the node's answer can be checked
            # without a second pass over the data.
            yield head
            sent = 0
            for piece in _pieces(data):
                builder.write(piece)
                yield piece
                if progress is not None:
                    sent += len(piece)
                    progress(sent, total)
            yield tail

        params = {**IMPORT_OPTIONS, "pin": "true" if pin else "false", "progress": "false"}
        sent: Any = body()
        if isinstance(data, bytes | bytearray | memoryview):
            # A known length: the body goes with a Content-Length, each piece sent as it is
            # (chunked framing would copy every piece once more to frame it)
            sent = _Sized(sent, len(head) + memoryview(data).nbytes + len(tail))
        r = self._rpc(
            "add",
            params,
            data=sent,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        lines = [json.loads(line) for line in r.text.splitlines() if line.strip()]
        answered = next((x["Hash"] for x in reversed(lines) if "Hash" in x), None)
        expected = str(builder.finish())
        if answered is None:
            raise StorageError(f"storage at {self.url} answered add without a CID: {r.text!r}")
        got, want = CID.parse(answered), CID.parse(expected)
        if (got.codec, got.digest) != (want.codec, want.digest):  # v0 and v1 text may differ
            raise IntegrityError(
                f"storage at {self.url} stored the data as {answered}, but it is {expected}",
                hint="the node changed the bytes or ignored the import options (cid-version=0, "
                "chunker=size-262144, raw-leaves=false); use a Kubo-compatible node",
            )
        return Stored(expected, builder.size)

    def put_many(
        self, items: Sequence[bytes | bytearray | memoryview], *, pin: bool = True
    ) -> list[str]:
        """Store many objects, each as ``put`` would (its own CID, pinned unless ``pin`` is
        False), in one ``add`` request per ``PUT_MANY_BYTES`` bytes or ``PUT_MANY_FILES``
        objects rather than one each: the CIDs in the order of ``items``. Every CID the node
        answers is checked against the one computed here, as ``put`` checks its own
        (IntegrityError if they differ). A request refused stores nothing that a later
        request needs; those before it are stored. No items: no request."""
        views: list[memoryview] = []
        for i, item in enumerate(items):
            if not isinstance(item, bytes | bytearray | memoryview):
                raise TypeError(
                    f"put_many takes bytes, bytearray or memoryview items; item {i} is "
                    f"{type(item).__name__} (use put or put_file for a stream)"
                )
            view = memoryview(item)
            views.append(view if view.format == "B" and view.ndim == 1 else view.cast("B"))
        cids: list[str] = []
        batch: list[memoryview] = []
        size = 0
        for view in views:
            if batch and (len(batch) >= PUT_MANY_FILES or size + len(view) > PUT_MANY_BYTES):
                cids += self._put_batch(batch, pin)
                batch, size = [], 0
            batch.append(view)
            size += len(view)
        if batch:
            cids += self._put_batch(batch, pin)
        return cids

    def _put_batch(self, views: list[memoryview], pin: bool) -> list[str]:
        """One add request of ``views``, each a file of its own; their CIDs, checked."""
        expected = []
        for view in views:
            builder = FileDagBuilder()
            builder.write(view)
            expected.append(str(builder.finish()))
        boundary = uuid.uuid4().hex
        # Each file named by its place in the request: the answer says which CID is whose.
        names = [str(i) for i in range(len(views))]
        pieces: list[bytes | memoryview] = []
        for i, view in enumerate(views):
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{names[i]}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            pieces += [b"\r\n" + head if i else head, view]
        pieces.append(f"\r\n--{boundary}--\r\n".encode())
        length = sum(len(p) for p in pieces)
        params = {**IMPORT_OPTIONS, "pin": "true" if pin else "false", "progress": "false"}
        r = self._rpc(
            "add",
            params,
            data=_Sized(_coalesced(pieces), length),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        try:
            lines = [json.loads(line) for line in r.text.splitlines() if line.strip()]
        except ValueError:
            raise StorageError(
                f"storage at {self.url} answered add with something other than JSON lines: "
                f"{r.text[:200]!r}"
            ) from None
        answers = [x for x in lines if isinstance(x, dict) and "Hash" in x]
        if len(answers) != len(views):
            raise StorageError(
                f"storage at {self.url} answered an add of {len(views)} files with "
                f"{len(answers)} CIDs: {r.text[:200]!r}"
            )
        by_name = {x.get("Name"): x["Hash"] for x in answers}
        if set(by_name) == set(names):  # a node may answer in another order: matched by name
            answered = [by_name[n] for n in names]
        else:
            answered = [x["Hash"] for x in answers]
        for got_text, want_text in zip(answered, expected, strict=True):
            try:
                got = CID.parse(got_text)
            except Exception:  # noqa: BLE001 - not a CID at all: as wrong as another one
                got = None
            want = CID.parse(want_text)
            if got is None or (got.codec, got.digest) != (want.codec, want.digest):
                raise IntegrityError(
                    f"storage at {self.url} stored the data as {got_text}, but it is {want_text}",
                    hint="the node changed the bytes or ignored the import options "
                    "(cid-version=0, chunker=size-262144, raw-leaves=false); use a "
                    "Kubo-compatible node",
                )
        return expected

    def block(self, cid: str | CID, *, timeout: float | None = None) -> bytes:
        """One raw block, verified against its CID (searched for at most ``timeout`` s,
        default the store's). On a connection of this thread's own kept open (http.client:
        a validator reads a round's thousand small updates a block each, and ``requests``
        costs ~0.4 ms more a request than the block itself)."""
        cid = CID.parse(cid)
        timeout = self.timeout if timeout is None else timeout
        query = {"arg": str(cid), "timeout": f"{timeout:g}s"}
        status, expected, block, message = self._small_read("block/get", query, timeout)
        if status != 200:
            self._raise("block/get", query, _Answer(status, message))
        if expected is not None and expected > MAX_BLOCK_SIZE:
            raise _oversized_block(cid, expected)
        if len(block) > MAX_BLOCK_SIZE:
            raise _oversized_block(cid, len(block))
        if expected is not None and len(block) != expected:
            raise IntegrityError(
                f"block {cid} arrived truncated ({len(block)} of {expected} bytes)",
                hint="the connection to the storage node broke; retry",
            )
        cid.verify(block)
        return block

    def _drop_conn(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._sessions_lock:
            self._conns.discard(conn)

    def _small_read(
        self, command: str, query: Mapping[str, str], timeout: float
    ) -> tuple[int, int | None, bytes, bytes]:
        """POST ``command`` on this thread's kept-open connection: (status, Content-Length,
        at most MAX_BLOCK_SIZE + 1 bytes of the body, the error body). A kept connection the
        node closed meanwhile is opened again once (reads only); no answer at all raises
        StorageUnavailable, none in time StorageTimeout."""
        url = urlsplit(self.url)
        path = f"{url.path.rstrip('/')}/api/v0/{command}?{urlencode(query)}"
        for attempt in range(2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                kind = (
                    http.client.HTTPSConnection
                    if url.scheme == "https"
                    else http.client.HTTPConnection
                )
                conn = kind(url.hostname or "127.0.0.1", url.port, timeout=self.connect_timeout)
                self._local.conn = conn
                with self._sessions_lock:
                    self._conns.add(conn)
            reused = conn.sock is not None  # a kept connection the node may have closed
            try:
                if not reused:
                    conn.connect()
            except OSError:  # refused, unreachable or no answer in connect_timeout
                self._drop_conn(conn)
                raise StorageUnavailable(
                    f"no storage service answers at {self.url} ({command} failed: connection "
                    "refused)"
                ) from None
            try:
                conn.sock.settimeout(timeout + 5.0)
                conn.request("POST", path, None, self._headers)
                response = conn.getresponse()
                length = response.getheader("Content-Length")
                expected = int(length) if length is not None and length.isdigit() else None
                if response.status != 200:
                    message = response.read(64 << 10)
                    self._drop_conn(conn)
                    return response.status, expected, b"", message
                if expected is not None and expected > MAX_BLOCK_SIZE:
                    self._drop_conn(conn)  # what follows is not read
                    return 200, expected, b"", b""
                body = response.read(MAX_BLOCK_SIZE + 1)
                if not response.isclosed():  # more than a block: not read further
                    self._drop_conn(conn)
                return 200, expected, body, b""
            except TimeoutError:
                self._drop_conn(conn)
                raise StorageTimeout(
                    f"storage at {self.url} did not answer {command} within {timeout:g} s"
                ) from None
            except http.client.IncompleteRead as exc:
                self._drop_conn(conn)
                raise IntegrityError(
                    f"{query.get('arg', command)} arrived incomplete ({exc!r})",
                    hint="the connection to the storage node broke; retry",
                ) from None
            except (http.client.HTTPException, OSError):
                self._drop_conn(conn)
                if not reused or attempt:
                    raise StorageUnavailable(
                        f"no storage service answers at {self.url} ({command} failed: "
                        "connection closed)"
                    ) from None
        raise AssertionError("unreachable")

    def iter_bytes(self, cid: str, *, max_bytes: int | None = None) -> Iterator[bytes]:
        """The content of ``cid`` in pieces, each verified before it is yielded.

        With a limit (``max_bytes``, else the store's), the root block is read first and
        ArtifactTooLarge raised if the size it declares is over the limit, before any other
        block is fetched; the bytes yielded are counted too.
        """
        root = CID.parse(cid)
        limit = self.max_bytes if max_bytes is None else max_bytes
        if limit is None:
            pieces = self._iter_file(root, None)
        else:
            block = self.block(root)
            size = read_root(root, block).size
            if size > limit:
                raise ArtifactTooLarge(str(root), size, limit)
            pieces = self._iter_file(root, block)
        produced = 0
        for piece in pieces:
            produced += len(piece)
            if limit is not None and produced > limit:
                raise ArtifactTooLarge(str(root), produced, limit)
            yield piece

    def _iter_file(self, root: CID, root_block: bytes | None) -> Iterator[bytes]:
        if self.stream_reads:
            yield from self._iter_streamed(root, root_block)
            return

        def first(fetch: Callable[[CID], bytes]) -> Callable[[CID], bytes]:
            if root_block is None:
                return fetch
            cached = [root_block]  # the root, already read (and verified) for its size

            def fetch_root_once(c: CID) -> bytes:
                return cached.pop() if cached and c == root else fetch(c)

            return fetch_root_once

        if self.prefetch <= 1:
            yield from map(bytes, iter_file(root, first(self.block)))
            return
        with _Prefetcher(self, self.prefetch) as pf:
            yield from map(bytes, iter_file(root, first(pf.fetch), pf.announce))

    def _iter_streamed(
        self, root: CID, root_block: bytes | None, out: memoryview | None = None
    ) -> Iterator[bytes | memoryview]:
        """A file's bytes with its leaves read from one ``cat`` stream.

        The interior nodes (a few: one per 174 leaves) come by ``block/get``; they name each
        leaf's CID and size, so the stream is cut into leaves and each is hashed once, in
        place, against its CID (``is_leaf_content``) before it is yielded. A leaf that is not
        in the canonical form, a stream that breaks or a node without ``cat`` only make the
        rest come block by block: never unverified bytes. With ``out`` (a view of the
        content's size), leaves are read straight into their place in it and yielded as
        views of it; what comes from blocks is yielded to be copied there.
        """
        with _CatStream(self, root) as stream:
            block = root_block if root_block is not None else self.block(root)
            declared = read_root(root, block).size  # a small block, verified again
            data, children = node_of(root, block)
            chunk: bytes | bytearray = bytes(data)
            produced = 0
            stack = [iter(children)]
            while True:
                if chunk:
                    produced += len(chunk)
                    if produced > declared:
                        raise IntegrityError(
                            f"{root} yields more bytes than its root declares ({declared})"
                        )
                    yield chunk
                chunk = b""
                link = None
                while stack and link is None:
                    link, size = next(stack[-1], (None, None))
                    if link is None:
                        stack.pop()
                if link is None:
                    break
                if size is not None and size <= MAX_BLOCK_SIZE and maybe_leaf(link, size):
                    end = produced + size
                    into = out[produced:end] if out is not None and end <= len(out) else None
                    piece = stream.read_at(produced, size, into)
                    if piece is not None and is_leaf_content(link.cid, piece):
                        chunk = piece
                        continue
                data, grandchildren = node_of(link.cid, self.block(link.cid))
                chunk = bytes(data)
                stack.append(iter(grandchildren))
        if produced != declared:
            raise IntegrityError(
                f"{root} yielded {produced} bytes but its root declares {declared}",
                hint="the DAG is inconsistent; re-add the artefact from a good copy",
            )

    def get(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        """The verified bytes of ``cid``. ``max_bytes`` (default: the store's ``max_bytes``)
        refuses larger content with ArtifactTooLarge before it is read."""
        if not self.stream_reads:
            return b"".join(self.iter_bytes(cid, max_bytes=max_bytes))
        root, block, size = self._sized_root(cid, max_bytes)
        if size == 0:
            return b""

        # The bytes object is made once, at its size, and filled in place (as ``get_buffer``
        # fills its buffer): io.BufferedReader.read(n) reads into the bytes it returns.
        def fill(view: memoryview) -> None:
            _advise_huge_pages(view)
            self._read_into(root, block, view)

        raw = _FillOnce(size, fill)
        data = io.BufferedReader(raw, buffer_size=1).read(size)
        if not raw.whole:  # another io implementation: read into a buffer, then copy
            return bytes(self.get_buffer(cid, max_bytes=max_bytes))
        return data

    def _sized_root(self, cid: str, max_bytes: int | None) -> tuple[CID, bytes, int]:
        """The root's CID, its (verified) block and the content size it declares, within
        the limit (``max_bytes``, else the store's)."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        root = CID.parse(cid)
        block = self.block(root)
        size = read_root(root, block).size
        if limit is not None and size > limit:
            raise ArtifactTooLarge(str(root), size, limit)
        return root, block, size

    def _read_into(self, root: CID, root_block: bytes, out: memoryview) -> None:
        """Fill ``out`` (the content's size) with the verified content of ``root``.

        The leaves come from one ``cat`` stream, received straight into ``out`` on a thread
        of its own (_CatReceiver) while this one hashes each leaf in place as soon as it has
        arrived: receiving and hashing each wait with the GIL released, so they overlap. The
        interior nodes come by ``block/get``; a leaf not in the canonical form, or a stream
        that breaks, is read as a block and copied into place. ``out`` is never written
        once this returns or raises.
        """
        data, children = node_of(root, root_block)
        if not children:
            if len(data) != len(out):
                raise IntegrityError(
                    f"{root} holds {len(data)} bytes; its root declares {len(out)}"
                )
            out[:] = data
            return
        with _CatReceiver(self, root, out) as stream:
            produced = 0

            def place(piece: Bytes) -> None:
                nonlocal produced
                end = produced + len(piece)
                if end > len(out):
                    raise IntegrityError(f"{root} yields more bytes than its root declares")
                stream.wait_past(end)  # the stream writes there no more
                out[produced:end] = piece
                produced = end

            place(data)
            stack = [iter(children)]
            while stack:
                link, size = next(stack[-1], (None, None))
                if link is None:
                    stack.pop()
                    continue
                if size is not None and size <= MAX_BLOCK_SIZE and maybe_leaf(link, size):
                    end = produced + size
                    if end > len(out):
                        raise IntegrityError(f"{root} yields more bytes than its root declares")
                    if stream.wait_past(end) and is_leaf_content(link.cid, out[produced:end]):
                        produced = end
                        continue
                data, grandchildren = node_of(link.cid, self.block(link.cid))
                place(data)
                stack.append(iter(grandchildren))
        if produced != len(out):
            raise IntegrityError(
                f"{root} yielded {produced} bytes but its root declares {len(out)}",
                hint="the DAG is inconsistent; re-add the artefact from a good copy",
            )

    def get_buffer(self, cid: str, *, max_bytes: int | None = None) -> memoryview:
        """``get`` into one new writable buffer (a memoryview of it), each leaf read straight
        into its place and verified there: the memory it takes is the content's size (as
        ``get``'s, which fills its bytes the same way; without ``stream_reads`` it joins
        pieces, holding the content twice for a moment). Limits as ``get``."""
        root, block, size = self._sized_root(cid, max_bytes)
        # Anonymous memory: its pages are zero until written, with no pass to clear them (a
        # bytearray is cleared first: a third of a 400 MB read's time here); private, and in
        # huge pages where the kernel has them: faulting in 4 KiB pages took longer than
        # hashing them (0.27 s for 400 MB here; 0.04 s in huge pages).
        out: mmap.mmap | bytearray = bytearray()
        if size:
            out = mmap.mmap(-1, size, mmap.MAP_PRIVATE)
            if hasattr(mmap, "MADV_HUGEPAGE"):
                out.madvise(mmap.MADV_HUGEPAGE)
        view = memoryview(out)
        if self.stream_reads and size:  # leaves are read into their place, hashed there
            self._read_into(root, block, view)
            return view
        pieces = self._iter_file(root, block)
        pos = 0
        for piece in pieces:
            if not (isinstance(piece, memoryview) and piece.obj is out):
                view[pos : pos + len(piece)] = piece
            pos += len(piece)
        return view

    def get_into(self, cid: str, out: BinaryIO, *, max_bytes: int | None = None) -> int:
        """Write ``cid`` into an open binary file; returns the byte count. On an error, what was
        written is verified but incomplete: prefer ``get_file``, which never leaves a partial
        file behind."""
        n = 0
        for piece in self.iter_bytes(cid, max_bytes=max_bytes):
            out.write(piece)
            n += len(piece)
        return n

    def get_file(
        self, cid: str, path: str | os.PathLike[str], *, max_bytes: int | None = None
    ) -> Stored:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                size = self.get_into(cid, out, max_bytes=max_bytes)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Stored(str(CID.parse(cid)), size)

    def has(self, cid: str) -> bool:
        """Whether the node holds the root block now, without searching a network."""
        try:
            self._rpc("block/stat", {"arg": str(CID.parse(cid)), "offline": "true"})
        except StorageError as exc:
            if "not found" in str(exc) or isinstance(exc, StorageTimeout):
                return False
            raise
        return True

    def stat(self, cid: str, *, timeout: float | None = None) -> ObjectStat:
        parsed = CID.parse(cid)
        info = read_root(parsed, self.block(parsed, timeout=timeout))
        return ObjectStat(str(parsed), info.size, info.block_size, info.links)

    def pin(self, cid: str) -> None:
        self._rpc("pin/add", {"arg": str(CID.parse(cid))})

    def unpin(self, cid: str) -> None:
        self._rpc("pin/rm", {"arg": str(CID.parse(cid))})

    def is_pinned(self, cid: str) -> bool:
        try:
            self._rpc("pin/ls", {"arg": str(CID.parse(cid)), "type": "recursive"})
        except StorageError as exc:
            if "not pinned" in str(exc):
                return False
            raise
        return True


class _Answer:
    """An error answer read by ``_small_read``, as ``_raise`` reads a response."""

    def __init__(self, status: int, body: bytes):
        self.status_code = status
        self.text = body.decode("utf-8", "replace")
        self.reason = http.client.responses.get(status, "")

    def json(self) -> Any:
        return json.loads(self.text)


def _oversized_block(cid: CID, size: int) -> IntegrityError:
    return IntegrityError(
        f"block {cid}: the node sent {size} bytes, more than any block holds ({MAX_BLOCK_SIZE})",
        hint="the storage node is broken or hostile; use another one",
    )


def _pieces(data: Source) -> Iterator[bytes | memoryview]:
    if isinstance(data, bytes | bytearray | memoryview):
        mv = memoryview(data)
        for i in range(0, len(mv), READ_SIZE):
            yield mv[i : i + READ_SIZE]
        return
    if not hasattr(data, "read"):
        raise TypeError(f"put takes bytes or a binary stream, not {type(data).__name__}")
    while piece := data.read(READ_SIZE):
        if isinstance(piece, str):
            raise TypeError("put takes a binary stream; open the file with 'rb'")
        yield piece


def _coalesced(pieces: list[bytes | memoryview]) -> Iterator[bytes | memoryview]:
    """``pieces`` with runs of small ones joined (one send each instead of one per piece:
    hundreds of small files' framing and bytes); a large piece goes as it is, uncopied."""
    run: list[bytes | memoryview] = []
    size = 0
    for piece in pieces:
        if len(piece) >= _COALESCE:
            if run:
                yield b"".join(run)
                run, size = [], 0
            yield piece
            continue
        run.append(piece)
        size += len(piece)
        if size >= _COALESCE:
            yield b"".join(run)
            run, size = [], 0
    if run:
        yield b"".join(run)


class _Sized:
    """An iterable request body of a known length (what requests sends with a Content-Length
    and without chunked framing)."""

    def __init__(self, pieces: Iterator[bytes | memoryview], length: int):
        self._pieces, self._length = pieces, length

    def __iter__(self) -> Iterator[bytes | memoryview]:
        return self._pieces

    def __len__(self) -> int:
        return self._length


class _CatStream:
    """A file's content as one ``cat`` response, read in order; opened at the first read.

    ``read_at(offset, n)`` gives the ``n`` bytes at ``offset`` (skipping what lies before it)
    (read straight from the socket), or None once the stream cannot give them:
    it was refused, broke, ended early, or is past that offset. None is final; the caller
    then reads blocks instead. Its own connection (http.client, which reads a chunk into
    one bytes object, where a generic response reader copies it again), closed at the end.
    """

    def __init__(self, store: KuboStore, root: CID):
        self._store = store
        self._root = root
        self._conn: http.client.HTTPConnection | None = None
        self._response: http.client.HTTPResponse | None = None
        self._pos = 0
        self._broken = False

    def __enter__(self) -> _CatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = self._response = None

    def _open(self) -> http.client.HTTPResponse:
        store = self._store
        url = urlsplit(store.url)
        kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        self._conn = kind(url.hostname or "127.0.0.1", url.port, timeout=store.timeout + 5.0)
        query = urlencode({"arg": str(self._root), "timeout": f"{store.timeout:g}s"})
        path = f"{url.path.rstrip('/')}/api/v0/cat?{query}"
        self._conn.request("POST", path, None, store._headers)
        response = self._conn.getresponse()
        if response.status != 200:
            raise StorageError(f"cat {self._root}: {response.status}")
        return response

    def _read(self, n: int) -> bytes:
        # A read of one whole chunk of the response (the dev service sends a leaf per chunk)
        # is one bytes object filled from the socket: no zeroing and no second copy.
        assert self._response is not None
        piece = self._response.read(n)
        while 0 < len(piece) < n:
            more = self._response.read(n - len(piece))
            if not more:
                break
            piece += more
        if len(piece) != n:
            raise EOFError
        self._pos += n
        return piece

    def _read_into(self, view: memoryview) -> memoryview:
        assert self._response is not None
        got = 0
        while got < len(view):
            n = self._response.readinto(view[got:])
            if not n:
                raise EOFError
            got += n
        self._pos += got
        return view

    def read_at(
        self, offset: int, n: int, into: memoryview | None = None
    ) -> bytes | memoryview | None:
        """(``into``: a view of ``n`` bytes to read them into, returned.)"""
        if self._broken or offset < self._pos:
            self._broken = True
            self._close()
            return None
        try:
            if self._response is None:
                self._response = self._open()
            while self._pos < offset:
                self._read(min(offset - self._pos, READ_SIZE))
            return self._read(n) if into is None else self._read_into(into)
        except Exception:  # noqa: BLE001 - refused, cut off, truncated: read blocks instead
            self._broken = True
            self._close()
            return None


_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14  # Linux


def _libc_madvise() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None


_madvise = _libc_madvise()


def _advise_huge_pages(view: memoryview) -> None:
    """Ask the kernel to back a large new buffer (not yet touched) with transparent huge
    pages, as mmap.madvise does for a mapping: its first touch then costs a sixth of what
    4 KiB pages do. Only advice: nothing happens where the kernel or the buffer says no."""
    if _madvise is None or len(view) < 4 * _HUGE_PAGE:
        return
    try:
        anchor = ctypes.c_char.from_buffer(view)
    except (TypeError, ValueError):
        return
    addr = ctypes.addressof(anchor)
    del anchor  # releases the buffer export at once
    start = -(-addr // _HUGE_PAGE) * _HUGE_PAGE
    end = (addr + len(view)) // _HUGE_PAGE * _HUGE_PAGE
    if end > start:
        _madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_HUGEPAGE)


class _FillOnce(io.RawIOBase):
    """A raw stream of ``size`` bytes whose one read has ``fill`` write them into the
    caller's buffer: io.BufferedReader(raw, buffer_size=1).read(size) then hands that buffer
    over as the bytes it returns, filled in place, without a copy."""

    def __init__(self, size: int, fill: Callable[[memoryview], None]):
        self._size = size
        self._fill = fill
        self.whole = False  # whether the buffer filled was the whole result

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.whole:
            return 0
        with memoryview(buffer) as view, view.cast("B") as out:
            if len(out) != self._size:
                return 0  # not the whole result at once: the caller reads otherwise
            self._fill(out)
        self.whole = True
        return self._size


class _CatReceiver:
    """A file's content received from one ``cat`` stream into ``out``, in order, on a thread
    of its own; ``wait_past(end)`` waits until the bytes before ``end`` have arrived.

    The stream is opened at once and read to ``len(out)`` bytes; if it is refused, breaks or
    ends early, the thread stops writing and ``wait_past`` answers False from there on (the
    reader then takes blocks instead). Leaving the context stops and joins the thread, so
    that ``out`` is never written after it.
    """

    PIECE = 1 << 20  # received at a time; the reader is told after each

    def __init__(self, store: KuboStore, root: CID, out: memoryview):
        self._store = store
        self._root = root
        self._out = out
        self._filled = 0
        self._ended = False  # the thread writes no more (done, broken or stopped)
        self._stopping = False
        self._cond = threading.Condition()
        self._conn: http.client.HTTPConnection | None = None
        self._sock: Any = None
        self._thread = threading.Thread(target=self._run, name="dfml-cat", daemon=True)

    def __enter__(self) -> _CatReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._stopping = True
            sock = self._sock
        if sock is not None and not self._ended:
            try:  # ends a receive in progress
                sock.shutdown(2)
            except OSError:
                pass
        self._thread.join()
        if self._conn is not None:
            self._conn.close()

    def wait_past(self, end: int) -> bool:
        """Wait until the bytes of ``out`` before ``end`` have arrived (True), or the stream
        has ended short of them (False); either way the thread writes there no more."""
        with self._cond:
            while self._filled < end and not self._ended:
                self._cond.wait()
            return self._filled >= end

    def _run(self) -> None:
        try:
            response = self._open()
            out, total = self._out, len(self._out)
            while self._filled < total and not self._stopping:
                n = response.readinto(out[self._filled : min(total, self._filled + self.PIECE)])
                if not n:
                    break
                with self._cond:
                    self._filled += n
                    self._cond.notify_all()
        except Exception:  # noqa: BLE001 - refused, cut off, truncated: blocks instead
            pass
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _open(self) -> http.client.HTTPResponse:
        store = self._store
        url = urlsplit(store.url)
        kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = kind(url.hostname or "127.0.0.1", url.port, timeout=store.timeout + 5.0)
        self._conn = conn
        conn.connect()
        with self._cond:
            if self._stopping:
                raise EOFError
            self._sock = conn.sock
        query = urlencode({"arg": str(self._root), "timeout": f"{store.timeout:g}s"})
        conn.request("POST", f"{url.path.rstrip('/')}/api/v0/cat?{query}", None, store._headers)
        response = conn.getresponse()
        if response.status != 200:
            raise StorageError(f"cat {self._root}: {response.status}")
        return response


class _Prefetcher:
    """Fetches announced blocks ahead, at most ``window`` at a time (bounded memory)."""

    def __init__(self, store: KuboStore, window: int):
        self._store = store
        self._window = window
        self._pool = store._prefetchers()  # shared with the store's other reads
        self._queue: deque[CID] = deque()
        self._inflight: dict[CID, Future[bytes]] = {}

    def __enter__(self) -> _Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        # What this read started and no longer needs: cancelled, or waited for if running.
        for fut in self._inflight.values():
            fut.cancel()
        wait_futures(self._inflight.values())

    def announce(self, cids: list[CID]) -> None:
        # Children are read before the siblings of their parent (depth first): put them first.
        self._queue.extendleft(reversed(cids))
        self._fill()

    def _fill(self) -> None:
        while self._queue and len(self._inflight) < self._window:
            cid = self._queue.popleft()
            if cid not in self._inflight:
                self._inflight[cid] = self._pool.submit(self._store.block, cid)

    def fetch(self, cid: CID) -> bytes:
        fut = self._inflight.pop(cid, None)
        if fut is None:
            try:
                self._queue.remove(cid)
            except ValueError:
                pass
            block = self._store.block(cid)
        else:
            block = fut.result()
        self._fill()
        return block
