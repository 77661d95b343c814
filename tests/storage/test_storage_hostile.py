"""Hostile and malformed input: the storage service answers with Kubo's JSON errors, caps what a
request may cost (memory, threads, connections), and the client's reads are bounded.

Requests are written byte by byte on raw sockets, so that nothing between the test and the
service repairs them. Memory and thread counts are read from the service's process (psutil).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psutil
import pytest
import requests

from decentralml_jupyter.errors import IntegrityError, StorageError
from decentralml_jupyter.storage import (
    CID,
    ArtifactTooLarge,
    KuboStore,
    StorageTimeout,
    StorageUnavailable,
    storage_down,
    storage_up,
)
from decentralml_jupyter.storage.artifacts import get_weights, put_weights
from decentralml_jupyter.storage.server import flatfs_path
from tests.conftest import free_port

Service = Any  # tests/storage/conftest.py's Service: url, port, pid, repo, home

MiB = 1 << 20
UNKNOWN = "QmQpeUrxtQE5N2SVog1ZCxd7c7RN4fBNQu5aLwkk5RY9EE"  # well-formed, never added
TIGHT = {"max_body": MiB, "workers": 4, "backlog": 4, "max_connections": 100, "max_timeout": 1}
# one worker and short timeouts: what a stalled or vanished client leaves behind shows at once
QUICK = {"workers": 1, "header_timeout": 0.5, "idle_timeout": 0.5, "io_timeout": 1.0}


@pytest.fixture(scope="module")
def tight(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A second service with small limits: a 1 MiB add, 4 workers, 4 waiting, 100 connections."""
    port = free_port()
    repo = tmp_path_factory.mktemp("tight-repo")
    info = storage_up(port=port, repo=repo, limits=TIGHT)
    try:
        yield dataclasses.replace(service, url=info["url"], port=port, pid=info["pid"], repo=repo)
    finally:
        storage_down(port)


@pytest.fixture(scope="module")
def quick(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    port = free_port()
    repo = tmp_path_factory.mktemp("quick-repo")
    info = storage_up(port=port, repo=repo, limits=QUICK)
    try:
        yield dataclasses.replace(service, url=info["url"], port=port, pid=info["pid"], repo=repo)
    finally:
        storage_down(port)


# -- raw HTTP ---------------------------------------------------------------------------------


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=60)


def request(path: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("latin-1") + b"\r\n" + body


def read_response(sock: socket.socket) -> tuple[int, http.client.HTTPResponse, bytes]:
    resp = http.client.HTTPResponse(sock, method="POST")
    resp.begin()
    return resp.status, resp, resp.read()


def exchange(url: str, raw: bytes, *, half_close: bool = False) -> tuple[int, dict, bytes]:
    """Send ``raw`` on a fresh connection; the status, headers and body of the answer."""
    with connect(url) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        status, resp, body = read_response(sock)
        return status, dict(resp.getheaders()), body


def assert_kubo_error(body: bytes, fragment: str) -> dict:
    err = json.loads(body)
    assert set(err) == {"Message", "Code", "Type"}, err
    assert err["Type"] == "error" and isinstance(err["Code"], int), err
    assert fragment.lower() in err["Message"].lower(), err
    return err


def multipart(boundary: str, data: bytes) -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


ADD = "/api/v0/add"
PART = b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\n0123456789'
FORM = ("Content-Type", "multipart/form-data; boundary=xyz")
CHUNKED = ("Transfer-Encoding", "chunked")


def cl(n: int | str) -> tuple[str, str]:
    return ("Content-Length", str(n))


MALFORMED = {
    # Content-Length
    "negative Content-Length": (request(ADD, [FORM, cl(-1)]), 400, "Content-Length"),
    "non-numeric Content-Length": (request(ADD, [FORM, cl("abc")]), 400, "Content-Length"),
    "hexadecimal Content-Length": (request(ADD, [FORM, cl("0x10")]), 400, "Content-Length"),
    "conflicting Content-Lengths": (
        request("/api/v0/version", [cl(3), cl(4)], b"abcd"),
        400,
        "conflicting",
    ),
    "add over its 1 GiB cap": (request(ADD, [FORM, cl(2 << 30)]), 413, "exceeds the limit"),
    "a body for a command that takes none": (
        request("/api/v0/version", [cl(100_000)]),
        413,
        "exceeds the limit",
    ),
    "Transfer-Encoding and Content-Length": (
        request(ADD, [FORM, CHUNKED, cl(5)], b"0\r\n\r\n"),
        400,
        "both",
    ),
    "an unknown Transfer-Encoding": (
        request(ADD, [FORM, ("Transfer-Encoding", "gzip, chunked")], b"0\r\n\r\n"),
        501,
        "Transfer-Encoding",
    ),
    # multipart
    "add without multipart": (
        request(ADD, [("Content-Type", "application/octet-stream"), cl(3)], b"abc"),
        400,
        "multipart/form-data",
    ),
    "multipart without a boundary": (
        request(ADD, [("Content-Type", "multipart/form-data"), cl(3)], b"abc"),
        400,
        "boundary",
    ),
    "a boundary of 71 characters": (
        request(
            ADD, [("Content-Type", f"multipart/form-data; boundary={'b' * 71}"), cl(3)], b"abc"
        ),
        400,
        "boundary",
    ),
    "a boundary with a forbidden character": (
        request(ADD, [("Content-Type", 'multipart/form-data; boundary="a<b"'), cl(3)], b"abc"),
        400,
        "boundary",
    ),
    "a body in which the boundary never appears": (
        request(ADD, [FORM, cl(300_000)], b"a" * 300_000),
        400,
        "malformed multipart",
    ),
    "only the closing delimiter": (
        request(ADD, [FORM, cl(9)], b"--xyz--\r\n"),
        400,
        "file argument",
    ),
    "a part that never ends": (
        request(ADD, [FORM, cl(len(PART))], PART),
        400,
        "truncated multipart",
    ),
    # chunked framing
    "a chunk size that is not hexadecimal": (
        request(ADD, [FORM, CHUNKED], b"zz\r\nabc\r\n0\r\n\r\n"),
        400,
        "chunk-size",
    ),
    "a negative chunk size": (
        request(ADD, [FORM, CHUNKED], b"-5\r\nabcde\r\n0\r\n\r\n"),
        400,
        "chunk-size",
    ),
    "a chunk not followed by CRLF": (
        request(ADD, [FORM, CHUNKED], b"3\r\nabcXY\r\n0\r\n\r\n"),
        400,
        "CRLF",
    ),
    "an endless chunk-size line": (
        request(ADD, [FORM, CHUNKED], b"1" * 5000 + b"\r\n"),
        400,
        "chunk-size line",
    ),
    "a chunk over the cap of a command": (
        request("/api/v0/version", [CHUNKED], b"20000\r\n"),
        413,
        "exceeds the limit",
    ),
    # commands and arguments
    "an unknown command": (request("/api/v0/swarm/peers"), 404, "unknown command"),
    "a missing argument": (request("/api/v0/block/get"), 400, "argument"),
    "an empty argument": (request("/api/v0/cat?arg="), 400, "argument"),
    "an argument that is no CID": (request("/api/v0/block/get?arg=nope"), 400, "invalid path"),
    "a timeout that is no duration": (
        request(f"/api/v0/block/get?arg={UNKNOWN}&timeout=soon"),
        400,
        "invalid timeout",
    ),
    "a negative timeout": (
        request(f"/api/v0/pin/add?arg={UNKNOWN}&timeout=-1s"),
        400,
        "invalid timeout",
    ),
    # request line and headers
    "a request line of 10 KiB": (
        request("/api/v0/version?x=" + "a" * 10_000),
        414,
        "request line",
    ),
    "a header field of 9 KiB": (request("/api/v0/version", [("X-Junk", "j" * 9000)]), 431, "8192"),
    "70 header fields": (
        request("/api/v0/version", [(f"X-H{i}", "v") for i in range(70)]),
        431,
        "header fields",
    ),
    "80 KiB of header fields": (
        request("/api/v0/version", [(f"X-H{i}", "v" * 4000) for i in range(20)]),
        431,
        "exceed",
    ),
    "a bad HTTP version": (b"POST /api/v0/version HTTP/x\r\n\r\n", 400, "version"),
    "a request line that is no request line": (b"hello\r\n\r\n", 400, "syntax"),
    "GET": (b"GET /api/v0/version HTTP/1.1\r\nHost: x\r\n\r\n", 405, "Method Not Allowed"),
    "PUT": (b"PUT /api/v0/add HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, "Method Not Allowed"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_requests_get_a_kubo_json_error(service: Service, case: str) -> None:
    raw, status, fragment = MALFORMED[case]
    got, headers, body = exchange(service.url, raw)
    assert got == status, body
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    err = assert_kubo_error(body, fragment)
    assert err["Code"] == (1 if status < 500 else 0)  # Kubo's ErrClient for a client's error


def test_a_truncated_chunked_body_gets_an_answer(service: Service) -> None:
    # The client sends half a chunk and ends its side: an answer, not a dropped connection.
    raw = request(ADD, [FORM, CHUNKED], b"10\r\n--xyz\r\n")
    status, _, body = exchange(service.url, raw, half_close=True)
    assert status == 400
    assert_kubo_error(body, "truncated")


def test_a_small_refused_body_keeps_the_connection(service: Service) -> None:
    payload = multipart("xyz", b"refused before it is read")
    with connect(service.url) as sock:
        sock.sendall(request(f"{ADD}?cid-version=1", [FORM, cl(len(payload))], payload))
        status, resp, body = read_response(sock)
        assert status == 400 and resp.getheader("Connection") != "close"
        assert_kubo_error(body, "cid-version")
        sock.sendall(request("/api/v0/version", [cl(0)]))
        status, _, body = read_response(sock)
        assert status == 200 and json.loads(body)["Version"]


def test_a_refused_large_body_closes_the_connection_after_the_answer(service: Service) -> None:
    with connect(service.url) as sock:
        sock.sendall(request(ADD, [FORM, cl(2 << 30)]))
        status, resp, body = read_response(sock)
        assert status == 413 and resp.getheader("Connection") == "close"
        assert_kubo_error(body, "exceeds the limit of 1073741824 bytes for add")
        assert sock.recv(1) == b""  # nothing more: the service closed its side


def test_expect_100_continue_is_answered_after_the_checks(service: Service) -> None:
    expect = ("Expect", "100-continue")
    with connect(service.url) as sock:  # too large: the final answer comes instead of 100
        sock.sendall(request(ADD, [FORM, expect, cl(2 << 30)]))
        first = sock.recv(12)
        assert first == b"HTTP/1.1 413", first
    payload = multipart("xyz", b"continued")
    with connect(service.url) as sock:
        sock.sendall(request(ADD, [FORM, expect, cl(len(payload))]))
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(1)
        assert interim.startswith(b"HTTP/1.1 100")
        sock.sendall(payload)
        status, _, body = read_response(sock)
        assert status == 200 and json.loads(body)["Size"] == "9"


# -- memory -----------------------------------------------------------------------------------


class PeakRss:
    """The growth of a process's peak RSS over a block: from the kernel's high-water mark
    (VmHWM, reset on entry through /proc/PID/clear_refs where allowed) and from psutil samples."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.pid = pid

    def _hwm(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # VmHWM := current RSS
            self.exact = True
        except OSError:
            self.exact = False
        self.before = self.proc.memory_info().rss
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.exact:
            self.peak = max(self.peak, self._hwm())
        self.growth = self.peak - self.before


def send_while_reading(url: str, head: bytes, pieces: Callable[[], Iterator[bytes]]):
    """Send ``head`` then ``pieces()`` from a thread while the answer is read; the sender may
    be cut off once the service has answered."""
    with connect(url) as sock:
        sock.sendall(head)
        sent = [0]

        def sender() -> None:
            try:
                for piece in pieces():
                    sock.sendall(piece)
                    sent[0] += len(piece)
            except OSError:
                pass  # the service answered and closed: the rest is not wanted

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        status, resp, body = read_response(sock)
        t.join(120)
        assert not t.is_alive()
        return status, resp, body, sent[0]


BIG = 64 * MiB


def zeros_in_chunks(n: int, chunk: int = MiB, first: bytes = b"") -> Callable[[], Iterator[bytes]]:
    def gen() -> Iterator[bytes]:
        if first:
            yield f"{len(first):x}\r\n".encode() + first + b"\r\n"
        piece = b"\0" * chunk
        frame = f"{chunk:x}\r\n".encode() + piece + b"\r\n"
        for _ in range(n // chunk):
            yield frame
        yield b"0\r\n\r\n"

    return gen


def plain(n: int, chunk: int = MiB) -> Callable[[], Iterator[bytes]]:
    def gen() -> Iterator[bytes]:
        piece = b"\0" * chunk
        for _ in range(n // chunk):
            yield piece

    return gen


ATTACKS = {
    # name: (which service, head, body, status, message)
    "64 MiB declared against a 1 MiB cap": (
        "tight",
        request(ADD, [FORM, cl(BIG)]),
        plain(BIG),
        413,
        "exceeds the limit of 1048576 bytes",
    ),
    "64 MiB chunked against a 1 MiB cap": (
        "tight",
        request(ADD, [FORM, CHUNKED]),
        zeros_in_chunks(BIG, first=PART),  # a well-formed part that outgrows the cap
        413,
        "exceeds the limit of 1048576 bytes",
    ),
    "64 MiB chunked without the boundary, under the 1 GiB cap": (
        "service",
        request(ADD, [FORM, CHUNKED]),
        zeros_in_chunks(BIG),
        400,
        "malformed multipart",
    ),
    "64 MiB without the boundary, with a Content-Length under the cap": (
        "service",
        request(ADD, [FORM, cl(BIG)]),
        plain(BIG),
        400,
        "malformed multipart",
    ),
}


@pytest.mark.parametrize("case", list(ATTACKS))
def test_big_hostile_bodies_are_refused_without_buffering(
    service: Service, tight: Service, case: str
) -> None:
    which, head, body, status, fragment = ATTACKS[case]
    target = tight if which == "tight" else service
    with PeakRss(target.pid) as rss:
        got, resp, answer, sent = send_while_reading(target.url, head, body)
    print(
        f"{case}: server RSS {rss.before / MiB:.1f} -> peak {rss.peak / MiB:.1f} MiB "
        f"(+{rss.growth / MiB:.1f}; {sent / MiB:.0f} MiB sent; exact peak: {rss.exact})"
    )
    assert got == status
    assert resp.getheader("Connection") == "close"
    assert_kubo_error(answer, fragment)
    assert rss.growth < 16 * MiB  # buffering the body would be 64 MiB or more
    # and the service still works
    with KuboStore(target.url, timeout=10) as store:
        assert store.get(store.put(b"still here")) == b"still here"


def test_an_upload_over_the_cap_is_refused_to_the_client(tight: Service) -> None:
    with KuboStore(tight.url, timeout=10) as store:
        with pytest.raises(StorageError, match="exceeds the limit") as err:
            store.put(os.urandom(2 * MiB))
        assert "DFML_STORAGE_MAX_BODY" in err.value.hint
        data = os.urandom(MiB // 2)
        assert store.get(store.put(data)) == data  # under the cap, as before


# -- threads and connections ------------------------------------------------------------------


def busy_answers(url: str) -> tuple[int, bytes]:
    status, _, body = exchange(url, request("/api/v0/version", [cl(0)]))
    return status, body


def until(predicate: Callable[[], bool], tries: int = 300) -> bool:
    """Poll a condition (no duration is asserted: a busy machine may take its time)."""
    stop = threading.Event()
    for _ in range(tries):
        if predicate():
            return True
        stop.wait(0.1)
    return False


def test_parked_connections_do_not_add_threads(tight: Service) -> None:
    proc = psutil.Process(tight.pid)
    assert busy_answers(tight.url)[0] == 200
    before = proc.num_threads()
    bound = before + TIGHT["workers"] + 2  # the pool may not have started all its workers yet
    parked: list[socket.socket] = []
    stalled: list[socket.socket] = []
    try:
        for i in range(80):  # connected and silent, or a request head that never ends
            sock = connect(tight.url)
            if i % 2:
                sock.sendall(b"POST /api/v0/version HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            parked.append(sock)
        assert busy_answers(tight.url)[0] == 200  # they cost no worker
        during_parked = proc.num_threads()
        # Heads whose bodies never come: they take every worker and every waiting place ...
        for _ in range(TIGHT["workers"] + TIGHT["backlog"]):
            sock = connect(tight.url)
            sock.sendall(request(ADD, [FORM, cl(1000)]))
            stalled.append(sock)
        # ... so that one more request is refused, at once, with a 503.
        answers: list[tuple[int, bytes]] = []
        assert until(lambda: answers.append(busy_answers(tight.url)) or answers[-1][0] == 503)
        assert_kubo_error(answers[-1][1], "busy")
        during_stalled = proc.num_threads()
        print(
            f"threads: {before} before, {during_parked} with 80 parked connections, "
            f"{during_stalled} with 8 stalled bodies more (bound {bound})"
        )
        assert during_parked <= bound and during_stalled <= bound
    finally:
        for sock in stalled:
            sock.close()
    # The stalled clients give up: their workers are free again.
    assert until(lambda: busy_answers(tight.url)[0] == 200)
    for sock in parked:
        sock.close()


def test_connections_beyond_the_cap_close_the_quietest(tight: Service) -> None:
    proc = psutil.Process(tight.pid)
    cap = TIGHT["max_connections"]
    socks = [connect(tight.url) for _ in range(cap + 50)]
    try:
        assert busy_answers(tight.url)[0] == 200  # a new client still gets in
        open_now = [c for c in proc.net_connections(kind="tcp") if c.status == "ESTABLISHED"]
        assert len(open_now) <= cap + 1
        # the first, longest quiet, were closed by the service
        socks[0].settimeout(30)
        assert socks[0].recv(1) == b""
    finally:
        for sock in socks:
            sock.close()


def test_a_head_that_never_ends_is_answered_408(quick: Service) -> None:
    with connect(quick.url) as sock:
        sock.sendall(b"POST /api/v0/version HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and no more
        status, _, body = read_response(sock)
        assert status == 408
        assert_kubo_error(body, "headers not received")


def test_a_body_that_stops_arriving_is_answered_408(quick: Service) -> None:
    with connect(quick.url) as sock:
        sock.sendall(request(ADD, [FORM, cl(1000)], b"--xyz\r\n"))  # and no more
        status, _, body = read_response(sock)
        assert status == 408
        assert_kubo_error(body, "stopped arriving")


def test_an_idle_connection_is_closed(quick: Service) -> None:
    with connect(quick.url) as sock:
        sock.sendall(request("/api/v0/version", [cl(0)]))
        assert read_response(sock)[0] == 200
        assert sock.recv(1) == b""  # no second request came: the service hung up


def test_a_client_that_hangs_up_frees_its_worker(quick: Service) -> None:
    # The only worker waits for content that never comes, for as long as the client asked ...
    with connect(quick.url) as sock:
        sock.sendall(request(f"/api/v0/block/get?arg={UNKNOWN}&timeout=1h"))
        # ... until the client gives up: then the next request gets the worker.
    assert until(lambda: busy_answers(quick.url)[0] == 200)


def test_timeouts_are_clamped(tight: Service) -> None:
    raw = request(f"/api/v0/block/get?arg={UNKNOWN}&timeout=10000h")
    status, _, body = exchange(tight.url, raw)  # answered after max_timeout (1 s), not 10000 h
    assert status == 500
    assert_kubo_error(body, "deadline exceeded")


# -- bounded reads in the client --------------------------------------------------------------


def counting_blocks(store: KuboStore, monkeypatch: pytest.MonkeyPatch) -> list[CID]:
    fetched: list[CID] = []
    real = store.block

    def block(cid):
        fetched.append(cid)
        return real(cid)

    monkeypatch.setattr(store, "block", block)
    return fetched


@pytest.mark.parametrize("prefetch", [1, 4])
def test_get_refuses_content_over_max_bytes_from_its_root(
    service: Service, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, prefetch: int
) -> None:
    data = os.urandom(700_000)  # 3 leaves under a root
    with KuboStore(service.url, timeout=5, prefetch=prefetch) as store:
        cid = store.put(data)
        fetched = counting_blocks(store, monkeypatch)
        with pytest.raises(ArtifactTooLarge) as err:
            store.get(cid, max_bytes=len(data) - 1)
        assert (err.value.cid, err.value.size, err.value.limit) == (cid, len(data), len(data) - 1)
        assert err.value.hint and isinstance(err.value, StorageError)
        assert fetched == [CID.parse(cid)]  # the root only: no leaf was read
        out = tmp_path / "out.bin"
        with pytest.raises(ArtifactTooLarge):
            store.get_file(cid, out, max_bytes=1000)
        assert list(tmp_path.iterdir()) == []
        assert store.get(cid, max_bytes=len(data)) == data
        assert store.get(cid) == data  # no limit: as before


def test_a_deduplicated_giant_is_refused_before_it_is_read(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 64 MiB of zeros are two blocks on disk, but 64 MiB in the reader's memory.
    with KuboStore(service.url, timeout=10, max_bytes=MiB) as store:
        cid = store.put(bytes(BIG))
        fetched = counting_blocks(store, monkeypatch)
        with pytest.raises(ArtifactTooLarge, match=f"{BIG} bytes"):
            store.get(cid)  # the store's default limit
        assert len(fetched) == 1


def test_artefact_readers_take_max_bytes(store: KuboStore) -> None:
    cid = put_weights(store, [np.arange(250, dtype=np.float32)])
    with pytest.raises(ArtifactTooLarge):
        get_weights(store, cid, max_bytes=500)
    assert get_weights(store, cid, max_bytes=10_000).as_list()[0].nbytes == 1000


def test_a_block_larger_than_any_block_is_not_read(service: Service, store: KuboStore) -> None:
    cid = CID.for_block(b"never added: " + os.urandom(16))
    path = flatfs_path(service.repo / "blocks", cid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(5 * MiB))  # what a broken or hostile node would send
    try:
        with pytest.raises(IntegrityError, match="more than any block"):
            store.block(cid)
    finally:
        path.unlink()


def test_a_read_cut_off_is_sent_again_but_an_upload_is_not(
    store: KuboStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a client sees when the service closes an idle connection just as it is reused.
    session = store._session
    real = session.post
    calls: list[str] = []

    def cut_off_once(url: str, **kw: Any):
        calls.append(url)
        if len(calls) == 1:
            raise requests.ConnectionError("connection closed by the server")
        return real(url, **kw)

    monkeypatch.setattr(session, "post", cut_off_once)
    assert store.version()["Version"] and len(calls) == 2
    calls.clear()
    with pytest.raises(StorageUnavailable):
        store.put(b"an upload is not replayed")
    assert len(calls) == 1


def test_reads_do_not_leave_connections_behind(service: Service) -> None:
    me = psutil.Process()

    def to_service() -> int:
        return sum(
            1
            for c in me.net_connections(kind="tcp")
            if c.raddr and c.raddr.port == service.port and c.status == "ESTABLISHED"
        )

    with KuboStore(service.url, timeout=5, prefetch=4) as store:
        cid = store.put(os.urandom(700_000))
        for _ in range(10):
            store.get(cid)
        assert to_service() <= 1 + 4  # the caller's connection and the prefetchers'
    assert to_service() == 0


def test_block_reads_keep_their_connection_and_survive_its_loss(store: KuboStore) -> None:
    """``block`` reads on one kept connection per thread; one the node closed (or that broke)
    is opened again once, transparently; a node that does not answer is StorageUnavailable,
    content nobody stored StorageTimeout, and the errors say so."""
    cids = [CID.parse(c) for c in store.put_many([os.urandom(1000) for _ in range(3)])]
    first = store.block(cids[0])  # verified against its CID, or it raises
    conn = store._local.conn
    assert store.block(cids[1]) and store._local.conn is conn  # the same connection
    conn.sock.shutdown(socket.SHUT_RDWR)  # the connection breaks under the client
    assert store.block(cids[2]) and store.block(cids[0]) == first
    assert store._local.conn is not conn and list(store._conns) == [store._local.conn]
    gone = CID.for_block(b"stored by nobody: " + os.urandom(8))
    with pytest.raises(StorageTimeout, match="not found in storage"):
        store.block(gone, timeout=0.3)
    with KuboStore(f"http://127.0.0.1:{free_port()}", timeout=2) as nobody:
        with pytest.raises(StorageUnavailable, match="no storage service answers"):
            nobody.block(cids[0])


def test_reads_from_short_lived_threads_leave_no_connections_open(store: KuboStore) -> None:
    """A validator reads each round's updates on a thread pool made for that round: the
    connections (and sessions) of threads that ended are closed with them, not kept open for
    good (16 sockets a round before, which a long-running validator would run out of)."""
    from concurrent.futures import ThreadPoolExecutor

    cids = store.put_many([os.urandom(1000) for _ in range(32)])

    def sockets() -> int:
        return len(psutil.Process().net_connections(kind="tcp"))

    for _ in range(2):  # warm: the main thread's own connections are made here
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda c: store.block(c), cids))
            list(pool.map(lambda c: store.stat(c), cids))
    before = sockets()
    for _ in range(10):
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda c: store.block(c), cids))
            list(pool.map(lambda c: store.stat(c), cids))
    assert sockets() <= before + 2  # not 10 rounds x 16 threads x 2 kinds of connection
    assert len(store._conns) <= 1 and len(store._sessions) <= 1
