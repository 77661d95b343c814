"""CIDs and the UnixFS builder/reader without a service: encodings, streaming, verification."""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decentralml_jupyter.errors import IntegrityError, UsageError
from decentralml_jupyter.storage.cid import CID, RAW, decode_varint, encode_varint
from decentralml_jupyter.storage.unixfs import (
    CHUNK_SIZE,
    FileDagBuilder,
    compute_cid,
    iter_file,
    read_root,
)

EMPTY_FILE = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"  # `ipfs add` of an empty file


def build(data: bytes) -> tuple[CID, dict[CID, bytes]]:
    blocks: dict[CID, bytes] = {}
    b = FileDagBuilder(sink=lambda c, blk: blocks.__setitem__(c, blk))
    b.write(data)
    return b.finish(), blocks


def test_empty_file_has_kubos_well_known_cid() -> None:
    assert compute_cid(b"") == EMPTY_FILE


@given(st.integers(min_value=0, max_value=2**63))
def test_varint_round_trip(n: int) -> None:
    assert decode_varint(encode_varint(n)) == (n, len(encode_varint(n)))


def test_cid_text_round_trips_and_v1_names_the_same_block() -> None:
    v0 = CID.parse(EMPTY_FILE)
    assert str(v0) == EMPTY_FILE and v0.version == 0
    v1 = CID(1, v0.codec, v0.digest)
    assert str(v1).startswith("bafy")
    assert CID.parse(str(v1)) == v1
    assert CID.parse("/ipfs/" + EMPTY_FILE) == v0


@pytest.mark.parametrize("bad", ["", "Qm123", "not-a-cid", "Qm" + "0" * 44, "bafyINVALID!"])
def test_invalid_cids_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        CID.parse(bad)


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), min_size=1, max_size=10))
def test_streamed_writes_give_the_same_cid_as_one_write(data: bytes, cuts: list[int]) -> None:
    b = FileDagBuilder()
    pos, i = 0, 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        b.write(data[pos : pos + step])
        pos, i = pos + step, i + 1
    assert str(b.finish()) == compute_cid(data) == compute_cid(io.BytesIO(data))


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 5])
def test_reader_returns_exactly_what_the_builder_wrote(size: int) -> None:
    data = random.Random(size).randbytes(size)  # distinct leaves: no deduplication
    root, blocks = build(data)
    assert b"".join(iter_file(root, blocks.__getitem__)) == data
    assert read_root(root, blocks[root]).size == size
    expected_blocks = 1 if size <= CHUNK_SIZE else -(-size // CHUNK_SIZE) + 1
    assert len(blocks) == expected_blocks


def test_a_tampered_leaf_raises_before_its_bytes_are_yielded() -> None:
    data = random.Random(1).randbytes(4 * CHUNK_SIZE)  # four distinct leaves under one root
    root, blocks = build(data)
    leaves = [c for c in blocks if c != root]
    bad = bytearray(blocks[leaves[2]])
    bad[-1] ^= 1
    blocks[leaves[2]] = bytes(bad)
    got = bytearray()
    with pytest.raises(IntegrityError):
        for piece in iter_file(root, blocks.__getitem__):
            got += piece
    assert bytes(got) == data[: len(got)]  # only verified bytes came out
    assert len(got) < len(data)


def test_a_truncated_root_is_an_integrity_error() -> None:
    root, blocks = build(b"x" * 1000)
    with pytest.raises(IntegrityError):
        list(iter_file(root, lambda c: blocks[c][:-3]))


def test_raw_leaf_cids_are_read_too() -> None:
    # Other producers use raw leaves (CIDv1, codec raw): the reader accepts them.
    block = b"raw block bytes"
    cid = CID.for_block(block, version=1, codec=RAW)
    assert b"".join(iter_file(cid, {cid: block}.__getitem__)) == block
