"""`Session`: reads answer from the state it holds, a write is seen by the next read, a chain
that is restarted under it is followed, and errors carry their HTTP status."""

from __future__ import annotations

import pytest

from decentralml_jupyter import Session, errors
from tests.conftest import free_port, wait_until

CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
UNIT = 10**12


def _count_requests(session: Session) -> list[str]:
    """Every RPC the session's chain connection makes from now on, by method."""
    substrate = session.chain.substrate
    made: list[str] = []
    original = substrate.rpc_request

    def counting(method, params, *args, **kwargs):
        made.append(method)
        return original(method, params, *args, **kwargs)

    substrate.rpc_request = counting
    return made


def _register(session: Session, name: str) -> int:
    validators = [session.chain.address(v) for v in ("Dev1", "Dev2")]
    sub = session.protocol.register_model(session._key, name, CID, CID, validators=validators)
    return sub.created_id("model")


@pytest.mark.chain
def test_reads_make_no_request_until_a_block_is_finalized(devchain_url):
    with Session(devchain_url) as reader, Session(devchain_url, key="//Bob") as writer:
        reader.models()
        wait_until(lambda: reader._heads.generation > 0, 30, "the head subscription")
        reader.models()  # checked against the subscription's chain once
        made = _count_requests(reader)
        for _ in range(20):
            reader.models(), reader.proposals(), reader.stakes(), reader.payouts()
            reader.rounds(), reader.errors()
        assert made == []  # all from memory
        mid = _register(writer, "seen-by-the-other")
        # another process's write reaches this session by its head subscription
        wait_until(lambda: any(m.id == mid for m in reader.models()), 30, "the new model")
        assert made  # the new blocks were read, and only then
        seen = len(made)
        reader.model(mid)
        assert len(made) == seen


@pytest.mark.chain
def test_a_read_right_after_a_write_sees_it(devchain_url):
    with Session(devchain_url, key="//Charlie") as s:
        mid = _register(s, "read-your-writes")
        assert s.model(mid).name == "read-your-writes"  # no waiting, no polling
        staked = s.stake(mid, 3 * UNIT)
        assert staked.stake.amount == 3 * UNIT and staked.receipt.success
        assert [x.amount for x in s.stakes(model_id=mid, account="Charlie")] == [3 * UNIT]
        proposed = s.propose(mid, "ApproveModel", deadline=10)
        assert proposed.proposal_id in [p.id for p in s.proposals(open_only=True)]
        voted = s.vote(proposed.proposal_id, True)
        ayes = next(p.ayes for p in s.proposals() if p.id == proposed.proposal_id)
        assert voted.receipt.success and ayes == 3 * UNIT
        # a typed error, with its class's HTTP status, for what does not exist
        with pytest.raises(errors.NotFound) as missing:
            s.model(10**6)
        assert missing.value.http_status == 404 and "model list" in missing.value.hint


@pytest.mark.chain
def test_a_chain_restarted_under_a_session_is_followed(tmp_path, monkeypatch):
    from decentralml_jupyter.chain import devchain

    monkeypatch.setenv("DFML_HOME", str(tmp_path))  # its own index, apart from other tests
    port = free_port()
    url = devchain.up(port=port, accounts=4)["url"]
    try:
        with Session(url, key="//Alice") as s:
            mid = _register(s, "before-the-restart")
            assert [m.id for m in s.models()] == [mid]
            devchain.down(port)
            with pytest.raises(errors.ChainNotReachable) as down:
                s.balance("Alice")
            assert down.value.http_status == 503
            devchain.up(port=port, accounts=4)  # a new chain at the same URL: another history
            wait_until(lambda: s.models() == [], 60, "the index of the new chain")
            again = _register(s, "after-the-restart")
            assert [m.name for m in s.models()] == ["after-the-restart"] and again == 1
    finally:
        devchain.down(port)


def test_every_error_is_defined_once_with_the_status_of_its_class():
    from decentralml_jupyter.fl.types import FlError
    from decentralml_jupyter.protocol.client import ProtocolRejected
    from decentralml_jupyter.protocol.errors import CodecError
    from decentralml_jupyter.storage.store import ArtifactTooLarge, StorageUnavailable

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    found = set(subclasses(errors.DfmlError))
    assert {FlError, ProtocolRejected, CodecError, ArtifactTooLarge, StorageUnavailable} <= found
    assert {c.__module__ for c in found} == {"decentralml_jupyter.errors"}
    statuses = {
        errors.UsageError: 400,
        errors.NotFound: 404,
        errors.KeyLoadError: 400,
        errors.ChainNotReachable: 503,
        errors.TransactionRejected: 409,
        ProtocolRejected: 409,
        CodecError: 400,
        StorageUnavailable: 503,
        ArtifactTooLarge: 413,
        errors.SnapshotError: 500,
        errors.DfmlError: 500,
    }
    assert {cls: cls.http_status for cls in statuses} == statuses


def test_a_session_never_shows_its_key(tmp_path):
    secret = tmp_path / "key"
    secret.write_text("bottom drive obey lake curtain smoke basket hold race lonely fit walk\n")
    secret.chmod(0o600)
    s = Session("ws://127.0.0.1:1", key_file=str(secret))
    assert "bottom" not in repr(s) and str(secret) not in repr(s)
    secret.chmod(0o644)
    with pytest.raises(errors.KeyLoadError, match="can be read by other users"):
        Session("ws://127.0.0.1:1", key_file=str(secret))
