"""A chain with a history: `--from-block N` reads and applies nothing before block N, an
index built from another block is refused, a long catch-up says how far it is, and the
token and the address format are the chain's own (its `system_properties`)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from decentralml_jupyter import Session, cli, config, errors
from decentralml_jupyter.protocol.accounts import normalize_address
from decentralml_jupyter.protocol.indexer import Indexer

CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
UNIT = 10**12
ALICE_42 = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


class _Chain:
    """The few calls the indexer makes of a chain, recording every block number asked."""

    url = "ws://127.0.0.1:1"

    def __init__(self, head: int):
        self.head, self.asked = head, []

    def block_hash(self, number: int) -> str | None:
        self.asked.append(number)
        return f"0x{number:064x}" if 0 <= number <= self.head else None

    def finalized_number(self) -> int:
        return self.head

    def events(self, block_hash: str) -> list:
        self.asked.append(int(block_hash, 16))
        return []


# -- without a chain --------------------------------------------------------------------------


def test_a_fresh_index_starts_at_its_first_block_and_asks_nothing_before(tmp_path):
    chain = _Chain(head=12)
    idx = Indexer(chain, tmp_path / "i.sqlite", from_block=9)
    assert (idx.block_number, idx.block_hash) == (8, None)
    idx.sync()
    assert idx.block_number == 12 and min(chain.asked) == 9
    assert sorted(set(chain.asked)) == [9, 10, 11, 12]  # 4 blocks' worth, not 12
    chain.asked.clear()
    chain.head = 14
    idx.sync()  # the indexed block (to check it is still this chain's), then the new ones
    assert sorted(set(chain.asked)) == [12, 13, 14]
    idx.close()
    # a head below the first block: nothing to read yet
    early = _Chain(head=3)
    idx = Indexer(early, None, from_block=9)
    idx.sync()
    assert idx.block_number == 8 and early.asked == []
    # a call included before the first block is never applied, and the caller hears why
    with pytest.raises(errors.UsageError, match="before the protocol's first block 9"):
        idx.wait_for(5)


def test_an_index_built_from_another_block_is_refused_never_reused(tmp_path):
    path = tmp_path / "i.sqlite"
    idx = Indexer(_Chain(head=20), path, from_block=10)
    idx.sync()
    idx.close()
    for other, option in (
        (12, "--from-block 10"),
        (None, "--from-block 10"),
        (0, "--from-block 10"),
    ):
        with pytest.raises(errors.UsageError) as refused:
            Indexer(_Chain(head=20), path, from_block=other)
        assert "built from block 10" in str(refused.value)
        assert option in refused.value.hint and str(path) in refused.value.hint
        assert refused.value.http_status == 400
    again = Indexer(_Chain(head=20), path, from_block=10)  # the same first block resumes
    assert again.block_number == 20
    again.close()
    # an index from before the option was built from genesis (block 1)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE meta")
    conn.close()
    with pytest.raises(errors.UsageError) as legacy:
        Indexer(_Chain(head=20), path, from_block=10)
    assert "built from block 1," in str(legacy.value) and "no --from-block" in legacy.value.hint
    assert Indexer(_Chain(head=20), path).block_number == 20
    # an index that holds no state yet is nothing to reuse: it takes the new first block
    empty = tmp_path / "empty.sqlite"
    Indexer(_Chain(head=20), empty, from_block=3).close()
    assert Indexer(_Chain(head=20), empty, from_block=5).block_number == 4


def test_the_cache_keeps_one_index_per_first_block(tmp_path, monkeypatch):
    monkeypatch.setenv("DFML_HOME", str(tmp_path))
    chain = _Chain(head=30)
    genesis = Indexer.for_chain(chain)
    genesis.sync()
    genesis.close()
    later = Indexer.for_chain(chain, from_block=25)  # its own file: no clash, no reuse
    assert later.block_number == 24
    later.close()
    names = sorted(p.name for p in (tmp_path / "index").iterdir())
    assert names == ["ws_127.0.0.1_1-from-25.sqlite", "ws_127.0.0.1_1.sqlite"]
    assert Indexer.for_chain(chain, from_block=1).block_number == 30  # 1 is genesis


def test_from_block_comes_from_the_option_the_environment_or_the_traitlets(monkeypatch):
    monkeypatch.delenv("DFML_FROM_BLOCK", raising=False)
    assert cli.parser_for().parse_args(["chain", "status"]).from_block is None
    assert cli.parser_for().parse_args(["--from-block", "7", "chain", "status"]).from_block == 7
    with pytest.raises(errors.UsageError, match="block number"):
        cli.parser_for().parse_args(["--from-block", "-1", "chain", "status"])
    monkeypatch.setenv("DFML_FROM_BLOCK", "1200")
    assert cli.parser_for().parse_args(["chain", "status"]).from_block == 1200
    assert Session("ws://127.0.0.1:1").from_block == 1200
    assert Session("ws://127.0.0.1:1", from_block=0).from_block == 0  # genesis, explicitly
    from decentralml_jupyter.jupyter.server import DFMLServer

    assert DFMLServer().from_block == 1200
    assert DFMLServer(from_block=5).session.from_block == 5
    monkeypatch.setenv("DFML_FROM_BLOCK", "soon")
    with pytest.raises(errors.UsageError, match="DFML_FROM_BLOCK"):
        config.default_from_block()
    s = Session("ws://127.0.0.1:1", from_block=3)
    assert s.same_endpoints(s.url, s.storage, s._key, 3)
    assert not s.same_endpoints(s.url, s.storage, s._key, 4)
    assert s.same_endpoints(s.url, s.storage, s._key)  # not asked about: not compared


def test_the_magic_passes_its_from_block_to_its_session(monkeypatch):
    monkeypatch.delenv("DFML_FROM_BLOCK", raising=False)
    from decentralml_jupyter.jupyter.magics import DFMLMagics

    magics = DFMLMagics(shell=None)  # no shell needed (a global test shell would leak)
    assert magics.from_block is None and magics.session.from_block == 0  # genesis
    first = magics.session
    magics.from_block = 40
    assert magics.session is not first and magics.session.from_block == 40
    with pytest.raises(errors.UsageError, match="DFMLMagics.from_block"):
        magics.from_block = -2


def test_token_properties_follow_the_chain_and_addresses_any_format():
    from scalecodec.utils.ss58 import ss58_encode

    from decentralml_jupyter.chain.client import address_of, token_properties

    assert token_properties({"tokenDecimals": 12, "tokenSymbol": "ROC"}) == (42, "ROC", 12)
    assert token_properties(
        {"ss58Format": 0, "tokenDecimals": [10, 12], "tokenSymbol": ["DOT"]}
    ) == (
        0,
        "DOT",
        10,
    )
    assert token_properties(None) == (42, "UNIT", 12)
    pub = "d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d"
    polkadot, kusama = ss58_encode(pub, 0), ss58_encode(pub, 2)
    assert normalize_address(polkadot) == normalize_address(kusama) == ALICE_42
    assert address_of(ALICE_42, 2) == kusama and address_of(polkadot, 42) == ALICE_42
    assert address_of("Alice", 0) == polkadot


def test_a_catch_up_reports_when_it_starts_as_it_goes_and_at_its_end(monkeypatch):
    from decentralml_jupyter import session as session_module

    said: list[tuple[str, float | None]] = []
    report = session_module._catch_up_reporter(lambda m, f: said.append((m, f)), 101, 50)
    for done in range(1, 11):
        report(done, 10)  # shorter than 50 blocks: not worth a word
    assert said == []
    monkeypatch.setattr(session_module, "_REPORT_EVERY", 3600.0)
    for done in range(1, 1001):
        report(done, 1000)
    assert [f for _, f in said] == [0.001, 1.0]  # throttled: the start and the end
    assert said[0][0].startswith("indexing blocks 101..1100: 1/1000")
    assert said[-1][0].startswith("indexing blocks 101..1100: 1000/1000 (")


# -- on the dev chain -------------------------------------------------------------------------


@pytest.mark.chain
def test_from_block_reads_no_earlier_block_and_applies_only_calls_from_it(devchain_url, tmp_path):
    from decentralml_jupyter.chain import Chain
    from decentralml_jupyter.protocol.client import ProtocolClient

    chain = Chain(devchain_url)
    writer = ProtocolClient(chain, Indexer(chain, None, from_block=chain.finalized_number()))
    try:
        before = writer.register_model("//Alice", "before-the-protocol", CID, CID)
        first = before.receipt.block_number + 1
        chain.new_blocks(3)
        after = writer.register_model("//Bob", "from-the-protocol-on", CID, CID)
        assert after.receipt.block_number > first
        head = chain.finalized_number()
        early = set(chain.block_hashes(1, first - 1)) | {chain.block_hash(0)}

        reader_chain = Chain(devchain_url)
        sent = reader_chain.record_requests()
        reader = Indexer(reader_chain, tmp_path / "i.sqlite", from_block=first)
        state = reader.sync()
        assert reader.block_number == head
        assert [m.name for m in state.models()] == ["from-the-protocol-on"]
        assert state.models()[0].owner == reader_chain.address("Bob")
        # nothing about a block before ``first`` was asked: no number, no hash
        assert sent, "the indexer read the chain"
        for request in sent:
            params = json.dumps(request["params"])
            assert not any(h in params for h in early), request
            if request["method"] == "chain_getBlockHash":
                numbers = request["params"][0]
                numbers = numbers if isinstance(numbers, list) else [numbers]
                assert min(numbers) >= first, request
        # and blocks were not read one request at a time
        hash_requests = [r for r in sent if r["method"] == "chain_getBlockHash"]
        assert len(hash_requests) == 1
        # the same chain from genesis applies both calls
        full = Indexer(reader_chain, None).sync()
        names = [m.name for m in full.models()]
        assert names[-2:] == ["before-the-protocol", "from-the-protocol-on"]
        # a call in a block before the protocol's first is refused with the reason
        ahead = ProtocolClient(chain, Indexer(chain, None, from_block=head + 1000))
        with pytest.raises(errors.UsageError, match="before the protocol's first block"):
            ahead.register_model("//Charlie", "too-early", CID, CID)
        reader.close()
        reader_chain.close()
    finally:
        writer.close()


@pytest.mark.chain
def test_a_long_catch_up_reports_its_progress_on_stderr(
    devchain_url, tmp_path, monkeypatch, capsys
):
    from decentralml_jupyter import session as session_module
    from decentralml_jupyter.chain import Chain

    with Chain(devchain_url) as chain:
        first = chain.new_blocks(12) - 11
    monkeypatch.setenv("DFML_HOME", str(tmp_path))  # a fresh index
    monkeypatch.setattr(session_module, "LONG_SYNC", 10)  # 12 blocks count as long here
    code = cli.main(["--url", devchain_url, "--from-block", str(first), "--json", "model", "list"])
    out, err = capsys.readouterr()
    assert code == 0 and isinstance(json.loads(out), list)  # stdout: the one JSON document
    lines = [x for x in err.splitlines() if "indexing blocks" in x]
    assert lines and lines[0].startswith(f"[dfml] indexing blocks {first}..")
    assert "/" in lines[-1] and "blocks/s" in lines[-1]
    # a short catch-up (the next call's) says nothing
    assert cli.main(["--url", devchain_url, "--from-block", str(first), "model", "list"]) == 0
    assert "indexing blocks" not in capsys.readouterr().err
    # asked for, any catch-up reports (another first block: another index, read afresh)
    said = []
    with Session(devchain_url, from_block=first + 1) as s:
        s.state(progress=lambda m, f: said.append(f))
    assert said and said[-1] == 1.0


@pytest.mark.chain
def test_token_and_addresses_come_from_the_chain_properties(devchain_url, tmp_path, monkeypatch):
    from scalecodec.utils.ss58 import ss58_decode, ss58_encode

    from decentralml_jupyter.chain import Chain
    from decentralml_jupyter.chain import client as client_module

    with Chain(devchain_url) as plain:  # the dev chain declares no ss58Format: the generic 42
        assert plain.token() == {"symbol": "ROC", "decimals": 12, "ss58_format": 42}
        assert plain.address("Alice") == ALICE_42

    kusama = {"ss58Format": 2, "tokenDecimals": [10], "tokenSymbol": ["KSM"]}
    monkeypatch.setattr(client_module._Substrate, "properties", property(lambda self: kusama))
    monkeypatch.setenv("DFML_HOME", str(tmp_path))
    pub = ss58_decode(ALICE_42)
    alice_2, alice_0 = ss58_encode(pub, 2), ss58_encode(pub, 0)
    with Session(devchain_url, key="//Alice") as s:
        assert s.token() == {"symbol": "KSM", "decimals": 10, "ss58_format": 2}
        assert s.address == alice_2 and s.chain.address(ALICE_42) == alice_2
        assert s.balance(alice_0).address == alice_2  # any format in, the chain's out
        assert all(ss58_decode(a.address, valid_ss58_format=2) for a in s.accounts())
        validators = [s.chain.address(v) for v in ("Dev1", "Dev2")]
        sub = s.protocol.register_model(
            "//Alice", "kusama-spelled", CID, CID, validators=validators
        )
        model = s.model(sub.created_id("model"))
        # the state spells accounts one way (42); comparing in the chain's works
        assert model.owner == ALICE_42 == normalize_address(s.address)
        assert sorted(model.validators) == sorted(normalize_address(v) for v in validators)
        s.stake(model.id, 2 * UNIT)
        for who in (alice_2, alice_0, ALICE_42, "Alice"):
            assert [x.amount for x in s.stakes(model_id=model.id, account=who)] == [2 * UNIT]
        pool = next(p for p in s.pools() if p.pool.pool == model.pool)
        assert pool.on_chain is not None and pool.on_chain >= 2 * UNIT
