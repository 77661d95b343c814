"""The fast paths of storage: leaves hashed in place, and reads that take a file's leaves from
one ``cat`` stream (each checked against its CID) and fall back to blocks for anything else."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from decentralml_jupyter.errors import IntegrityError
from decentralml_jupyter.storage import CID, KuboStore
from decentralml_jupyter.storage.cid import RAW
from decentralml_jupyter.storage.server import flatfs_path
from decentralml_jupyter.storage.unixfs import (
    CHUNK_SIZE,
    T_RAW,
    Link,
    encode_dag_pb,
    encode_unixfs_file,
    is_leaf_content,
    leaf_cid,
)
from tests.storage.conftest import stored_block
from tests.storage.test_storage_kubo_cids import kubo_add


@pytest.mark.parametrize("size", [0, 1, 100, 127, 128, 16383, 16384, CHUNK_SIZE, 2_100_000])
def test_a_leaf_hashed_in_place_has_the_cid_of_its_encoded_block(size: int) -> None:
    chunk = random.Random(size).randbytes(size)
    block = encode_dag_pb((), encode_unixfs_file(chunk, len(chunk)))
    assert leaf_cid(chunk) == (CID.for_block(block), len(block))
    assert leaf_cid(memoryview(bytearray(chunk))) == leaf_cid(chunk)
    assert is_leaf_content(CID.for_block(block), chunk)
    assert not is_leaf_content(CID.for_block(block), chunk + b"x")
    assert is_leaf_content(CID.for_block(chunk, version=1, codec=RAW), chunk)


def _put_blocks(service, blocks: list[bytes]) -> CID:
    """Blocks written into the service's repository as another producer's DAG would be (in
    Kubo's flatfs, which the service reads besides its own packs)."""
    cid = None
    for block in blocks:
        cid = CID.for_block(block)
        path = flatfs_path(service.repo / "blocks", cid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(block)
    assert cid is not None
    return cid


def test_leaves_in_another_encoding_are_read_block_by_block(service, store: KuboStore) -> None:
    # Leaves of UnixFS type Raw (as older importers wrote them) are not in the form that a
    # stream is checked against: the reader must fall back to their blocks, and get them right.
    pieces = [os.urandom(1000), os.urandom(2000), os.urandom(10)]
    leaves = [encode_dag_pb((), _unixfs(T_RAW, p)) for p in pieces]
    links = [Link(CID.for_block(b), "", len(b)) for b in leaves]
    sizes = [len(p) for p in pieces]
    root = encode_dag_pb(links, encode_unixfs_file(b"", sum(sizes), sizes))
    cid = _put_blocks(service, [*leaves, root])
    streamed = KuboStore(service.url, timeout=5)
    blockwise = KuboStore(service.url, timeout=5, stream_reads=False)
    with streamed, blockwise:
        assert streamed.get(str(cid)) == blockwise.get(str(cid)) == b"".join(pieces)
        # read into one buffer: the leaves that fall back are copied into their place
        assert streamed.get_buffer(str(cid)) == blockwise.get_buffer(str(cid)) == b"".join(pieces)


def _unixfs(kind: int, data: bytes) -> bytes:
    raw = bytearray(encode_unixfs_file(data, len(data)))
    raw[1] = kind  # the type field's value (08 <type>)
    return bytes(raw)


def test_streamed_and_blockwise_reads_agree(service) -> None:
    data = os.urandom(5 * CHUNK_SIZE + 17)
    with (
        KuboStore(service.url, timeout=5) as fast,
        KuboStore(service.url, timeout=5, stream_reads=False) as slow,
    ):
        cid = fast.put(data)
        assert fast.get(cid) == slow.get(cid) == data
        assert b"".join(fast.iter_bytes(cid)) == data


def test_a_leaf_whose_parent_lies_about_its_size_is_an_integrity_error(service, store) -> None:
    # The root declares a leaf one byte shorter than it is: the stream is cut in the wrong
    # place, and the block it falls back to does not match the size the root declares.
    piece = os.urandom(3000)
    leaf = encode_dag_pb((), encode_unixfs_file(piece, len(piece)))
    link = Link(CID.for_block(leaf), "", len(leaf))
    root = encode_dag_pb([link, link], encode_unixfs_file(b"", 5999, [3000, 2999]))
    cid = _put_blocks(service, [leaf, root])
    with pytest.raises(IntegrityError):
        store.get(str(cid))
    with pytest.raises(IntegrityError):
        store.get_buffer(str(cid))


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, 3 * CHUNK_SIZE + 1, 174 * CHUNK_SIZE + 1])
def test_a_stored_add_gives_kubos_cid_and_is_pinned_and_read_back(
    service, store: KuboStore, size: int
) -> None:
    # The service builds stored adds itself; Kubo's importer (only-hash) is the reference.
    data = random.Random(size + 7).randbytes(size)
    cid = store.put(data)
    assert cid == kubo_add(service.url, data)
    assert store.is_pinned(cid)
    assert store.get(cid) == data
    store.unpin(cid)
    assert not store.is_pinned(cid)
    unpinned = store.put(data, pin=False)
    assert unpinned == cid and not store.is_pinned(cid)


def test_get_buffer_gives_the_bytes_in_one_buffer_within_limits(store: KuboStore) -> None:
    from decentralml_jupyter.storage import ArtifactTooLarge

    data = os.urandom(3 * CHUNK_SIZE + 5)
    cid = store.put(data)
    got = store.get_buffer(cid, max_bytes=len(data))
    assert isinstance(got, memoryview) and not got.readonly and got == data
    assert store.get_buffer(store.put(b"")) == b""
    with pytest.raises(ArtifactTooLarge):
        store.get_buffer(cid, max_bytes=len(data) - 1)


def test_a_flipped_bit_read_into_a_buffer_is_detected(service, store: KuboStore) -> None:
    from decentralml_jupyter.storage.unixfs import decode_dag_pb

    data = os.urandom(3 * CHUNK_SIZE + 10)
    cid = store.put(data)
    leaf = stored_block(service, decode_dag_pb(store.block(CID.parse(cid))).links[1].cid)
    raw = bytearray(leaf.read())
    raw[100] ^= 0x01
    leaf.write(bytes(raw))
    with pytest.raises(IntegrityError, match="failed verification"):
        store.get_buffer(cid)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=300).map(lambda b: b.replace(b"\r\n--bnd", b"")),
    st.lists(st.integers(1, 90), min_size=1, max_size=20),
    st.sampled_from([b"", b"\r\n--bn", b"\r\n-", b"\r", b"--bnd", b"\n--bnd"]),
)
def test_a_multipart_file_split_anywhere_is_saved_exactly(
    content: bytes, cuts: list[int], tease: bytes
) -> None:
    # The service saves an add's file from views of the pieces as they arrive; wherever the
    # pieces are cut, and with near-delimiters in the data, the bytes saved are the file's.
    from decentralml_jupyter.storage.server import save_first_file

    data = content + tease + content  # a delimiter's beginning inside the data
    assume(b"\r\n--bnd" not in data)  # a sender picks a boundary its data does not hold
    body = b'--bnd\r\nContent-Disposition: form-data; name="file"\r\n\r\n' + data
    body += b"\r\n--bnd--\r\n"
    pieces, pos, i = [], 0, 0
    while pos < len(body):
        pieces.append(body[pos : pos + cuts[i % len(cuts)]])
        pos, i = pos + cuts[i % len(cuts)], i + 1

    class Out:
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def write(self, view: memoryview) -> None:
            self.parts.append(bytes(view))

    out = Out()
    assert save_first_file(pieces, b"bnd", out) == len(data)
    assert b"".join(out.parts) == data
