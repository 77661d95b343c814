"""Many files in one ``add``: the service's multipart adds and ``KuboStore.put_many``.

Against the real dev storage service. The service adds every part of an add's body as a file
of its own and answers a JSON line per file, in order; a body refused anywhere (malformed,
truncated, over a limit) pins nothing and reports no file.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from decentralml_jupyter import procs
from decentralml_jupyter.errors import IntegrityError, StorageError
from decentralml_jupyter.storage import (
    CHUNK_SIZE,
    KuboStore,
    compute_cid,
    storage_down,
    storage_up,
)
from decentralml_jupyter.storage import client as client_module
from decentralml_jupyter.storage.server import RpcError, _part_info, _Parts, receive_file
from tests.storage.conftest import Pieces, Service

MiB = 1 << 20
ADD = "/api/v0/add"
# A second service: adds of 1 MiB at most, 5 files at most in one
TIGHT = {"max_body": MiB, "max_add_files": 5}


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory, service: Service) -> Iterator[str]:
    port = procs.free_port()
    info = storage_up(port=port, repo=tmp_path_factory.mktemp("put-many-tight"), limits=TIGHT)
    try:
        yield info["url"]
    finally:
        storage_down(port)


def fresh(n: int, size: int = 10_000) -> list[bytes]:
    """``n`` objects never stored before (so that a pin or a block found is this test's)."""
    return [os.urandom(size) for _ in range(n)]


def form(parts: list[tuple[str | None, bytes]], boundary: str = "bnd", close: bool = True) -> bytes:
    """A multipart/form-data body of files (name or None for no filename, bytes)."""
    out = b""
    for i, (name, data) in enumerate(parts):
        disposition = 'form-data; name="file"' + (f'; filename="{name}"' if name else "")
        out += b"\r\n" if i else b""
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data
    return out + (f"\r\n--{boundary}--\r\n".encode() if close else b"")


def add(url: str, body: bytes | Iterator[bytes], **params: str) -> requests.Response:
    return requests.post(
        f"{url}{ADD}",
        params=params,
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=bnd"},
        timeout=60,
    )


def kubo_error(r: requests.Response, status: int, fragment: str) -> None:
    """A refusal, as Kubo gives one: nothing in it reports a file as added."""
    assert r.status_code == status, r.text
    err = r.json()
    assert set(err) == {"Message", "Code", "Type"} and err["Type"] == "error", err
    assert fragment.lower() in err["Message"].lower(), err


def raw_add(url: str, body: bytes, length: int | None = None) -> tuple[int, dict[str, Any]]:
    """An add whose Content-Length is ``length`` (default: the body's), on a connection whose
    sending side ends after ``body``: the status and JSON answer."""
    parts = urlsplit(url)
    head = (
        f"POST {ADD} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: multipart/form-data; boundary=bnd\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while piece := sock.recv(1 << 16):
            answer += piece
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def pinned(url: str, cids: list[str]) -> list[bool]:
    with KuboStore(url, timeout=2.0) as s:
        return [s.is_pinned(c) for c in cids]


def requests_of(store: KuboStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs of the requests ``store`` sends from now on (sent as they would be)."""
    calls: list[str] = []
    real = store._session.post

    def counted(url: str, **kw: Any) -> requests.Response:
        calls.append(url)
        return real(url, **kw)

    monkeypatch.setattr(store._session, "post", counted)
    return calls


# -- KuboStore.put_many -----------------------------------------------------------------------


def test_put_many_round_trips_in_order_and_pins(store: KuboStore) -> None:
    one = os.urandom(10_000)
    items: list[bytes | bytearray | memoryview] = [
        b"",
        one,
        os.urandom(2 * CHUNK_SIZE + 123),  # three leaves and their parent
        bytearray(os.urandom(300)),
        memoryview(os.urandom(4000))[100:3000],
        one,  # the same object twice: the same CID, at both places
        b"\r\n--not the boundary--\r\n",
    ]
    cids = store.put_many(items)
    assert cids == [compute_cid(bytes(x)) for x in items]
    assert cids[1] == cids[5]
    for cid, item in zip(cids, items, strict=True):
        assert store.get(cid) == bytes(item)
        assert store.is_pinned(cid)


def test_put_many_without_pin_stores_but_pins_nothing(store: KuboStore) -> None:
    items = fresh(3)
    cids = store.put_many(items, pin=False)
    assert [store.get(c) for c in cids] == items
    assert not any(store.is_pinned(c) for c in cids)


def recorded_posts(store: KuboStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs the store's session posts to from now on (each still sent)."""
    calls: list[str] = []
    real = store._session.post
    monkeypatch.setattr(
        store._session, "post", lambda url, **kw: calls.append(url) or real(url, **kw)
    )
    return calls


def test_put_many_of_nothing_sends_no_request(
    store: KuboStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = recorded_posts(store, monkeypatch)
    assert store.put_many([]) == []
    assert calls == []


def test_put_many_takes_no_stream(store: KuboStore) -> None:
    import io

    with pytest.raises(TypeError, match="item 1"):
        store.put_many([b"a", io.BytesIO(b"b")])  # type: ignore[list-item]


def test_put_many_splits_a_large_batch_into_several_requests(
    store: KuboStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = recorded_posts(store, monkeypatch)
    monkeypatch.setattr(client_module, "PUT_MANY_FILES", 3)
    items = fresh(10, 1000)
    assert store.put_many(items) == [compute_cid(x) for x in items]
    assert len(calls) == 4  # 3 + 3 + 3 + 1
    calls.clear()
    monkeypatch.setattr(client_module, "PUT_MANY_BYTES", 2500)
    items = fresh(4, 1000) + fresh(1, 5000) + fresh(1, 1000)  # the big one goes alone
    assert store.put_many(items) == [compute_cid(x) for x in items]
    assert len(calls) == 4  # 2 + 2 + 1 + 1
    assert all(store.is_pinned(compute_cid(x)) for x in items)


class _Tampered:
    """A request body changed in transit: ``old`` replaced by ``new`` (of its length)."""

    def __init__(self, body: Any, old: bytes, new: bytes):
        self._body, self._old, self._new = body, old, new

    def __iter__(self) -> Iterator[bytes]:
        for piece in self._body:
            yield bytes(piece).replace(self._old, self._new)

    def __len__(self) -> int:
        return len(self._body)


@pytest.mark.parametrize("many", [True, False])
def test_a_node_that_stores_other_bytes_is_detected(
    store: KuboStore, monkeypatch: pytest.MonkeyPatch, many: bool
) -> None:
    # The service really stores (and honestly answers the CID of) bytes other than those
    # sent: put_many checks every CID as put checks its one.
    real = store._session.post

    def in_transit(url: str, **kw: Any) -> requests.Response:
        kw["data"] = _Tampered(kw["data"], b"ORIGINAL", b"TAMPERED")
        return real(url, **kw)

    monkeypatch.setattr(store._session, "post", in_transit)
    items = [os.urandom(100), b"ORIGINAL" + os.urandom(100), os.urandom(100)]
    with pytest.raises(IntegrityError, match="stored the data as") as err:
        store.put_many(items) if many else store.put(items[1])
    assert compute_cid(items[1]) in str(err.value) and err.value.hint


def test_put_many_over_the_services_file_cap_raises_storage_error(tight: str) -> None:
    items = fresh(6, 100)
    with KuboStore(tight, timeout=5.0) as s:
        assert s.put_many(items[:5]) == [compute_cid(x) for x in items[:5]]
        with pytest.raises(StorageError, match="more than 5 files"):
            s.put_many(items)
        assert not s.is_pinned(compute_cid(items[5]))


def test_put_many_over_the_services_body_cap_raises_storage_error(tight: str) -> None:
    items = fresh(1, 100) + fresh(1, MiB + 1)
    with KuboStore(tight, timeout=5.0) as s:
        with pytest.raises(StorageError, match="exceeds the limit") as err:
            s.put_many(items)
        assert err.value.hint
    assert pinned(tight, [compute_cid(items[0])]) == [False]


# -- the service's add of many files ----------------------------------------------------------


def test_an_add_of_many_files_answers_a_line_per_file_in_order(service: Service) -> None:
    files = [("a", os.urandom(1000)), ("b", b""), ("c d%2F", os.urandom(CHUNK_SIZE + 1))]
    files += [(None, os.urandom(10))]
    r = add(service.url, form(files))
    assert r.status_code == 200, r.text
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines == [
        {"Name": name, "Hash": compute_cid(data), "Size": str(len(data))}
        for name, data in [files[0], files[1], ("c d/", files[2][1]), ("file", files[3][1])]
    ]
    assert pinned(service.url, [x["Hash"] for x in lines]) == [True] * 4


def test_a_chunked_add_of_many_files(service: Service) -> None:
    files = [(str(i), os.urandom(7000)) for i in range(20)]
    body = form(files)
    r = add(service.url, (body[i : i + 4096] for i in range(0, len(body), 4096)))
    assert r.status_code == 200, r.text
    assert [json.loads(x)["Hash"] for x in r.text.splitlines()] == [
        compute_cid(d) for _, d in files
    ]


def test_only_hash_of_many_files_gives_kubos_cids_and_stores_nothing(
    service: Service, store: KuboStore
) -> None:
    # Kubo's own importer answers each file: the reference for the CIDs built by the service
    files = [("x", os.urandom(500)), ("y", os.urandom(2 * CHUNK_SIZE + 7)), ("z", b"")]
    r = add(service.url, form(files), **{"only-hash": "true", "pin": "false"})
    assert r.status_code == 200, r.text
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [x["Hash"] for x in lines] == [compute_cid(d) for _, d in files]
    assert [x["Name"] for x in lines] == ["x", "y", "z"]
    assert not store.has(lines[0]["Hash"]) and not store.has(lines[1]["Hash"])


def test_wrap_with_directory_is_refused_clearly(service: Service) -> None:
    r = add(service.url, form([("a", b"a"), ("b", b"b")]), **{"wrap-with-directory": "true"})
    kubo_error(r, 400, "wrap-with-directory")


def _first_part_is_pinned(url: str, first: bytes) -> bool:
    return pinned(url, [compute_cid(first)])[0]


TRUNCATIONS = {
    "in the second file's data": lambda body, second: body.index(second) + 10,
    "after the second file's delimiter": lambda body, second: (
        body.index(second) + len(second) + len(b"\r\n--bnd")
    ),
    "in the third file's headers": lambda body, second: body.index(second) + len(second) + 30,
    "before the closing delimiter's dashes": lambda body, second: len(body) - len(b"--\r\n"),
}


@pytest.mark.parametrize("where", list(TRUNCATIONS))
def test_a_truncated_body_pins_and_reports_nothing(service: Service, where: str) -> None:
    first, second = os.urandom(3000), os.urandom(3000)
    body = form([("a", first), ("b", second), ("c", os.urandom(3000))])
    cut = body[: TRUNCATIONS[where](body, second)]
    status, answer = raw_add(service.url, cut)  # a complete request whose body ends early
    assert status == 400 and answer["Type"] == "error", answer
    assert "truncated multipart body" in answer["Message"]
    status, answer = raw_add(service.url, cut, len(body))  # the request itself cut off
    assert status == 400 and "truncated" in answer["Message"], answer
    assert not _first_part_is_pinned(service.url, first)


MALFORMED = {
    "a delimiter followed by something else": (
        b"\r\n--bndX\r\nContent-Disposition: form-data\r\n\r\nxyz\r\n--bnd--\r\n",
        "neither a line end nor",
    ),
    "a directory": (
        b'\r\n--bnd\r\nContent-Disposition: form-data; name="file"; filename="d"\r\n'
        b"Content-Type: application/x-directory\r\n\r\n\r\n--bnd--\r\n",
        "part 2 of the body is a directory",
    ),
    "a symlink": (
        b"\r\n--bnd\r\nContent-Type: application/symlink\r\n\r\ntarget\r\n--bnd--\r\n",
        "is a symlink",
    ),
    "endless part headers": (b"\r\n--bnd\r\nX-Junk: " + b"j" * (70 << 10), "headers exceed"),
    "part headers of 70 KiB": (
        b"\r\n--bnd\r\nX-Junk: " + b"j" * (70 << 10) + b"\r\n\r\nxyz\r\n--bnd--\r\n",
        "headers exceed",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_later_part_pins_and_reports_nothing(service: Service, case: str) -> None:
    first = os.urandom(2000)
    tail, fragment = MALFORMED[case]
    r = add(service.url, form([("a", first)], close=False) + tail)
    kubo_error(r, 400, fragment)
    assert not _first_part_is_pinned(service.url, first)


def test_a_directory_as_the_first_part_is_refused(service: Service) -> None:
    body = b"--bnd\r\nContent-Type: application/x-directory\r\n\r\n\r\n--bnd--\r\n"
    kubo_error(add(service.url, body), 400, "part 1 of the body is a directory")


def test_a_part_over_the_size_limit_pins_and_reports_nothing(tight: str) -> None:
    # Sent chunked: the service reads the first file, then the second goes over the cap.
    first = os.urandom(1000)
    body = form([("a", first), ("b", os.urandom(MiB + 10))])
    r = add(tight, (body[i : i + 65536] for i in range(0, len(body), 65536)))
    kubo_error(r, 413, "exceeds the limit of 1048576 bytes for add")
    assert not _first_part_is_pinned(tight, first)


def test_the_cap_on_files_in_one_add(tight: str) -> None:
    files = [(str(i), os.urandom(100)) for i in range(6)]
    r = add(tight, form(files[:5]))
    assert r.status_code == 200 and len(r.text.splitlines()) == 5, r.text
    files[0] = ("0", os.urandom(100))  # new: not pinned by the add above
    kubo_error(add(tight, form(files)), 400, "more than 5 files in one add request")
    assert pinned(tight, [compute_cid(files[0][1]), compute_cid(files[5][1])]) == [False, False]
    kubo_error(add(tight, form(files), **{"only-hash": "true"}), 400, "more than 5 files")


# -- parsing, wherever the body is cut --------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.binary(max_size=200).map(lambda b: b.replace(b"\r\n--bnd", b"")), min_size=1, max_size=6
    ),
    st.lists(st.integers(1, 90), min_size=1, max_size=20),
    st.sampled_from([b"", b"\r\n--bn", b"\r\n-", b"\r", b"--bnd", b"\n--bnd"]),
)
def test_every_file_of_a_body_cut_anywhere_is_read_exactly(
    contents: list[bytes], cuts: list[int], tease: bytes
) -> None:
    # The first file as a stored add takes it (receive_file), the others through _Parts;
    # and all of them through _Parts alone (only-hash): the same files either way.
    files = [c + tease + c for c in contents]  # a delimiter's beginning inside the data
    assume(all(b"\r\n--bnd" not in f for f in files))
    body = form([(f"f{i}", f) for i, f in enumerate(files)])

    def read_rest(parts: _Parts, got: list[tuple[str | None, bytes]]) -> None:
        while (head := parts.next_head()) is not None:
            data = bytearray()
            parts.read_data(data.extend)
            got.append((_part_info(head, len(got)), bytes(data)))

    slabs: list[bytes] = []
    source = Pieces(body, cuts)
    size, head, rest = receive_file(source, b"bnd", lambda s, k, last: slabs.append(bytes(s[:k])))
    got = [(_part_info(head, 0), b"".join(slabs))]
    assert size == len(files[0])
    read_rest(_Parts(source, b"bnd", rest), got)
    want = [(f"f{i}", f) for i, f in enumerate(files)]
    assert got == want
    got = []
    read_rest(_Parts(Pieces(body, cuts), b"bnd", at_start=True), got)
    assert got == want


def test_parts_refuse_a_body_without_its_closing_delimiter() -> None:
    body = form([("a", b"abc")], close=False)
    parts = _Parts(Pieces(body, [7]), b"bnd", at_start=True)
    assert parts.next_head() is not None
    with pytest.raises(RpcError, match="truncated multipart body"):
        parts.read_data(lambda v: None)
