"""The service's blockstore (packstore.py): blocks in pack files, crash safety on restart,
pins that survive restarts, garbage collection, and the add path that receives into slabs.

Each test that restarts or collects runs its own service on its own repository (the
package's shared service holds other tests' blocks); all use the real service, no mock."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from decentralml_jupyter import procs
from decentralml_jupyter.errors import IntegrityError
from decentralml_jupyter.storage import CID, KuboStore, StorageTimeout, storage_down, storage_up
from decentralml_jupyter.storage.packstore import INDEX_ENTRY, MAGIC, RECORD_HEAD, PackStore
from decentralml_jupyter.storage.server import PACK_DIR, _SlabPool, receive_first_file
from decentralml_jupyter.storage.unixfs import CHUNK_SIZE, decode_dag_pb
from tests.storage.conftest import Pieces, Service, stored_block


class Restartable:
    """A service of the test's own, on one repository, that can be stopped and started."""

    def __init__(self, home: Path):
        self.home = home
        self.repo = home / "repo"
        self.port = procs.free_port()
        self.service: Service | None = None

    def start(self) -> KuboStore:
        info = storage_up(port=self.port, repo=self.repo)
        self.service = Service(info["url"], self.port, info["pid"], self.repo, self.home)
        return KuboStore(info["url"], timeout=3.0)

    def stop(self) -> None:
        storage_down(self.port)
        self.service = None

    @property
    def packs(self) -> Path:
        return self.repo / PACK_DIR

    def log(self) -> str:
        return (self.home / "run" / f"storage-{self.port}.log").read_text()


@pytest.fixture
def own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Restartable]:
    monkeypatch.setenv("DFML_HOME", str(tmp_path))
    node = Restartable(tmp_path)
    try:
        yield node
    finally:
        if node.service is not None:
            node.stop()


def leaves(store: KuboStore, cid: str) -> list[CID]:
    return [link.cid for link in decode_dag_pb(store.block(CID.parse(cid))).links]


def pack_files(own: Restartable) -> list[Path]:
    return sorted(own.packs.glob("*.pack"))


def test_blocks_go_into_a_few_pack_files_not_a_file_each(own: Restartable) -> None:
    with own.start() as store:
        flatfs = sorted((own.repo / "blocks").rglob("*"))  # what Kubo's init wrote there
        data = os.urandom(40 * CHUNK_SIZE + 7)
        cid = store.put(data)
        assert store.get(cid) == data
        assert sorted((own.repo / "blocks").rglob("*")) == flatfs  # no file more
        assert len(pack_files(own)) == 1
        index = (own.packs / "00000001.idx").stat().st_size
        assert index == INDEX_ENTRY.size * 42  # 41 leaves and their root, each indexed once
        assert store.put(data) == cid  # stored blocks are not written again
        assert (own.packs / "00000001.idx").stat().st_size == index


def test_a_half_written_record_is_cut_off_on_restart(own: Restartable) -> None:
    # The service is killed while it appends a block: its record is in the pack only in
    # part. On restart nothing stored before is lost, and the half block is never served.
    store = own.start()
    data = os.urandom(3 * CHUNK_SIZE + 10)
    cid = store.put(data)
    store.close()
    own.stop()
    pack = pack_files(own)[-1]
    whole = pack.stat().st_size
    block = b"never whole " + os.urandom(2000)
    half = CID.for_block(block)
    with open(pack, "ab") as f:
        f.write(RECORD_HEAD.pack(MAGIC, half.digest, len(block)) + block[:1000])
    with own.start() as store:
        assert store.get(cid) == data
        assert not store.has(str(half))
        assert pack.stat().st_size == whole  # cut back to the last whole record
        assert "cut off" in own.log()
        # appends go on where the whole records end, and survive the next restart
        more = os.urandom(CHUNK_SIZE + 1)
        cid2 = store.put(more)
    own.stop()
    with own.start() as store:
        assert store.get(cid) == data and store.get(cid2) == more


def test_records_written_but_not_indexed_are_verified_on_restart(own: Restartable) -> None:
    # Killed after writing records but before writing their index entries: the records are
    # read again and kept when their bytes hash to their digest; a damaged one and all after
    # it are dropped (never served).
    store = own.start()
    data = os.urandom(4 * CHUNK_SIZE)
    cid = store.put(data)
    first, second = leaves(store, cid)[:2]
    store.close()
    own.stop()
    idx = own.packs / "00000001.idx"
    idx.write_bytes(b"")  # no entry was written
    with own.start() as store:
        assert store.get(cid) == data  # every record re-indexed, verified
        assert "verified and indexed" in own.log()
        assert own.service is not None
        damaged = stored_block(own.service, second)
    own.stop()
    idx.write_bytes(b"")
    raw = bytearray(damaged.read())
    raw[5] ^= 0x01
    damaged.write(bytes(raw))
    with own.start() as store:
        assert store.has(str(first))
        assert not store.has(str(second))  # refused: its bytes do not hash to its digest
        assert not store.has(cid)  # written after it: dropped with it
    with KuboStore(store.url, timeout=0.5) as impatient, pytest.raises(StorageTimeout):
        impatient.get(cid)  # never bytes


def test_a_corrupted_record_is_refused_on_read(own: Restartable) -> None:
    with own.start() as store:
        data = os.urandom(3 * CHUNK_SIZE + 10)
        cid = store.put(data)
        leaf = leaves(store, cid)[1]
        assert own.service is not None
        block = stored_block(own.service, leaf)
        raw = bytearray(block.read())
        raw[len(raw) // 2] ^= 0x40
        block.write(bytes(raw))
        for read in (store.get, store.get_buffer, lambda c: b"".join(store.iter_bytes(c))):
            with pytest.raises(IntegrityError, match="failed verification"):
                read(cid)
        with pytest.raises(IntegrityError):
            store.block(leaf)
        with KuboStore(own.service.url, timeout=3.0, stream_reads=False) as blockwise:
            with pytest.raises(IntegrityError):
                blockwise.get(cid)


def test_pins_survive_a_restart(own: Restartable) -> None:
    store = own.start()
    pinned = store.put(os.urandom(2 * CHUNK_SIZE))
    loose = store.put(os.urandom(1000), pin=False)
    later = store.put(os.urandom(5000), pin=False)
    store.pin(later)
    store.close()
    own.stop()
    with own.start() as store:
        assert store.is_pinned(pinned) and store.is_pinned(later)
        assert not store.is_pinned(loose)
        assert store.has(loose)  # unpinned is not deleted, until gc


def gc(store: KuboStore) -> set[str]:
    r = requests.post(f"{store.url}/api/v0/repo/gc", timeout=30)
    r.raise_for_status()
    return {json.loads(line)["Key"]["/"] for line in r.text.splitlines() if line.strip()}


def test_gc_reclaims_what_no_pin_reaches(own: Restartable) -> None:
    with own.start() as store:
        kept_data = os.urandom(6 * CHUNK_SIZE)
        kept = store.put(kept_data)
        loose = store.put(os.urandom(5 * CHUNK_SIZE), pin=False)
        dropped = store.put(os.urandom(4 * CHUNK_SIZE))
        shared = store.put(kept_data[: 2 * CHUNK_SIZE], pin=False)  # its leaves are kept's
        store.unpin(dropped)
        expect = {str(c) for c in [CID.parse(loose), *leaves(store, loose)]}
        before = sum(p.stat().st_size for p in pack_files(own))
        removed = gc(store)
        assert expect <= removed
        assert str(CID.parse(dropped)) in removed
        assert not store.has(loose) and not store.has(dropped)
        assert store.get(kept) == kept_data  # pinned: whole
        assert all(store.has(str(c)) for c in leaves(store, kept))
        assert not store.has(shared)  # its root was reachable from no pin
        after = sum(p.stat().st_size for p in pack_files(own))
        assert after < before - 8 * CHUNK_SIZE  # the space of 9 leaves is given back
        assert gc(store) == set()  # nothing more to remove
    own.stop()
    with own.start() as store:  # the rewritten packs are what opens
        assert store.get(kept) == kept_data and not store.has(loose)
        more = os.urandom(CHUNK_SIZE)
        assert store.get(store.put(more)) == more


def test_gc_removes_nothing_when_a_pinned_dag_is_damaged(own: Restartable) -> None:
    with own.start() as store:
        cid = store.put(os.urandom(3 * CHUNK_SIZE))
        loose = store.put(os.urandom(1000), pin=False)
        assert own.service is not None
        root = stored_block(own.service, cid)
        raw = bytearray(root.read())
        raw[-1] ^= 0x80
        root.write(bytes(raw))
        r = requests.post(f"{store.url}/api/v0/repo/gc", timeout=30)
        assert r.status_code == 500 and "nothing removed" in r.json()["Message"]
        assert store.has(loose)


def test_a_large_add_through_several_slabs_reads_back(own: Restartable) -> None:
    # More than a few slabs (4 MiB each), with a tail that is no whole chunk: the add is
    # received, hashed and written in pieces, in order; read back by every path.
    with own.start() as store:
        data = os.urandom(5 * (16 * CHUNK_SIZE) + CHUNK_SIZE // 3)
        cid = store.put(data)
        got = store.get(cid)
        assert type(got) is bytes and got == data  # filled in place, still plain bytes
        assert store.get_buffer(cid) == data
        with KuboStore(store.url, timeout=10, stream_reads=False) as blockwise:
            assert blockwise.get(cid) == data
        path = own.home / "big.bin"
        path.write_bytes(data)
        assert store.put_file(path).cid == cid  # chunked transfer encoding


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=300).map(lambda b: b.replace(b"\r\n--bnd", b"")),
    st.lists(st.integers(1, 90), min_size=1, max_size=20),
    st.sampled_from([b"", b"\r\n--bn", b"\r\n-", b"\r", b"--bnd", b"\n--bnd"]),
    st.integers(1, 40),
)
def test_a_multipart_file_received_into_slabs_is_exact(
    content: bytes, cuts: list[int], tease: bytes, slab: int
) -> None:
    # Slabs of a few bytes: the file crosses many, near-delimiters straddle their margins.
    data = content + tease + content
    assume(b"\r\n--bnd" not in data)
    body = b'--bnd\r\nContent-Disposition: form-data; name="file"\r\n\r\n' + data
    body += b"\r\n--bnd--\r\n"
    got: list[tuple[bytes, bool]] = []
    pool = _SlabPool(content=slab, margin=8)
    n = receive_first_file(
        Pieces(body, cuts), b"bnd", lambda s, k, last: got.append((bytes(s[:k]), last)), pool
    )
    assert n == len(data) and b"".join(g for g, _ in got) == data
    assert [last for _, last in got] == [False] * (len(got) - 1) + [True]
    assert all(len(g) == slab for g, _ in got[:-1])


def test_blocks_left_in_two_packs_by_a_crash_during_gc_are_cleaned_by_the_next(
    tmp_path: Path,
) -> None:
    # gc copies live records into a new pack before removing the old one: killed between,
    # the records are in both. On opening the newer copy is used; the next gc drops the older.
    blocks = [os.urandom(n) for n in (1000, 2000, 3000)]
    digests = [CID.for_block(b).digest for b in blocks]
    store = PackStore(tmp_path)
    for digest, block in zip(digests, blocks, strict=True):
        store.put(digest, [block])
    store.flush()
    del store
    for ext in ("pack", "idx"):  # the copy a killed gc left
        (tmp_path / f"00000002.{ext}").write_bytes((tmp_path / f"00000001.{ext}").read_bytes())
    store = PackStore(tmp_path)
    assert all(store.get(d) == b for d, b in zip(digests, blocks, strict=True))
    assert {store.locate(d).pack.number for d in digests} == {2}  # type: ignore[union-attr]
    removed = store.gc(lambda d: d != digests[1])
    assert removed == [digests[1]]
    assert len(list(tmp_path.glob("*.pack"))) == 1
    del store
    store = PackStore(tmp_path)
    assert store.get(digests[0]) == blocks[0] and store.get(digests[2]) == blocks[2]
    assert store.get(digests[1]) is None and len(store) == 2


def test_concurrent_adds_and_reads_of_large_files_are_exact(own: Restartable) -> None:
    # Several adds at once share the hashing threads and append to one pack; two of them add
    # the same bytes (each block stored once); reads run meanwhile.
    from concurrent.futures import ThreadPoolExecutor

    with own.start() as store:
        datas = [os.urandom(3 * 16 * CHUNK_SIZE + i) for i in range(3)]
        datas.append(datas[0])
        first = store.put(datas[1])

        def add(data: bytes) -> str:
            with KuboStore(store.url, timeout=30) as s:
                return s.put(data)

        def read(_: int) -> bytes:
            with KuboStore(store.url, timeout=30) as s:
                return s.get(first)

        with ThreadPoolExecutor(6) as pool:
            cids = list(pool.map(add, datas))
            reads = list(pool.map(read, range(2)))
        assert cids[0] == cids[3] and all(r == datas[1] for r in reads)
        for cid, data in zip(cids, datas, strict=True):
            assert store.get(cid) == data and store.get_buffer(cid) == data
    own.stop()
    with own.start() as store:
        assert all(store.get(c) == d for c, d in zip(cids, datas, strict=True))
        index = sum(p.stat().st_size for p in own.packs.glob("*.idx")) // INDEX_ENTRY.size
        assert index == (48 + 1) + 2 * (49 + 1)  # each file's leaves and root, none twice
