"""`dfml decode`: every protocol call reads back from its remark's bytes, and from where it is
on chain (BLOCK:EXTRINSIC, several in one batch behind a proxy, each with its signer); what
people see spells addresses in the chain's own SS58 format."""

from __future__ import annotations

import dataclasses

import pytest
from scalecodec.utils.ss58 import ss58_decode, ss58_encode

from decentralml_jupyter import cli
from decentralml_jupyter.chain.client import address_of, in_chain_format
from decentralml_jupyter.errors import UsageError
from decentralml_jupyter.jupyter.server import amounts_as_text
from decentralml_jupyter.protocol import calls as C
from decentralml_jupyter.protocol import scale

ALICE = address_of("Alice", 42)
BOB = address_of("Bob", 42)
CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
TEXTS = ("a", "mit", "m1", "abc", "EU", "x" * 8, "1.5", CID)  # tried in turn where a pattern rules


def example(field: scale.Field, name: str):
    """A value for ``field`` other than its default, so every byte of the encoding is used."""
    if isinstance(field, scale.Trailing | scale.Option):
        return example(field.inner, name)
    if isinstance(field, scale.Vec):
        return (example(field.inner, name),)
    if isinstance(field, scale.Bool):
        return True
    if isinstance(field, scale.UInt):
        return min(field.maximum, 3)
    if isinstance(field, scale.Account):
        return ALICE
    if isinstance(field, scale.Bytes32):
        return "0x" + "ab" * 32
    if isinstance(field, scale.Text):
        for text in TEXTS:
            try:
                return field.check(text, name)
            except Exception:  # noqa: BLE001 - the next candidate
                continue
        raise AssertionError(f"no example text fits {name}")
    if hasattr(field, "names"):  # an enum of names: the last, never its default
        return field.names[-1]
    if isinstance(field, getattr(scale, "Blob", ())):
        return "0x" + "ab" * max(field.min_bytes, min(field.max_bytes, 3))
    if isinstance(field, scale.StructField):
        return build(field.cls)
    if isinstance(field, scale.Variant):
        return build(field.classes[0])
    raise AssertionError(f"no example for {type(field).__name__} ({name})")


def build(cls):
    """An instance of a call or struct with every field set."""
    values = {name: example(field, name) for name, field in cls.SCHEMA}
    try:
        return cls(**values)
    except Exception:  # noqa: BLE001 - a rule across fields: fall back to the required ones
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        return cls(**{k: v for k, v in values.items() if k in required})


@pytest.mark.parametrize("cls", C.CALLS, ids=lambda c: c.NAME)
def test_every_call_kind_reads_back_from_its_hex(cls):
    call = build(cls)
    raw = C.encode_call(call)
    for text in (raw.hex(), "0x" + raw.hex()):
        decoded = cli.run(["decode", text])
        assert decoded["call"] == cls.NAME and "signer" not in decoded
        assert cls.from_json(decoded["fields"]) == call
        assert C.encode_call(cls.from_json(decoded["fields"])) == raw


@pytest.mark.chain
def test_a_place_that_is_not_on_chain_says_so(devchain_url):
    with pytest.raises(UsageError, match="not on this chain"):
        cli.run(["--url", devchain_url, "decode", "99999999:0"])
    with pytest.raises(UsageError, match="no extrinsic 99"):
        cli.run(["--url", devchain_url, "decode", "1:99"])


@pytest.mark.chain
def test_decode_block_extrinsic_reads_a_batch_behind_a_proxy(devchain_url):
    from decentralml_jupyter.chain import Chain

    votes = [C.Vote(9001, True), C.Vote(9002, False)]
    with Chain(devchain_url) as chain:
        added = chain.submit("//Charlie", chain.add_proxy_call(chain.address("Dave")))
        assert added.success, added.error
        batch = chain.batch_all_call([chain.remark_call(C.encode_call(v)) for v in votes])
        sent = chain.submit("//Dave", chain.proxy_call("Charlie", batch))
        assert sent.success, sent.error
        plain = chain.submit("//Alice", chain.remark_call(b"not the protocol"))
    where = f"{sent.block_number}:{sent.extrinsic_index}"
    decoded = cli.run(["--url", devchain_url, "decode", where])
    charlie = address_of("Charlie", 42)
    # the origin the chain gave the remarks is the proxied account, not the proxy's signer
    assert [(c["call"], c["fields"], c["signer"], c["batch_index"]) for c in decoded["calls"]] == [
        ("vote", {"proposal_id": 9001, "aye": True}, charlie, 0),
        ("vote", {"proposal_id": 9002, "aye": False}, charlie, 1),
    ]
    assert (decoded["call"], decoded["fields"], decoded["signer"]) == (
        "vote",
        {"proposal_id": 9001, "aye": True},
        charlie,
    )
    assert decoded["block_number"] == sent.block_number
    second = cli.run(["--url", devchain_url, "--json", "decode", f"{where}:1"])
    assert second["fields"] == {"proposal_id": 9002, "aye": False} and second["batch_index"] == 1
    with pytest.raises(UsageError, match="no remark 2"):
        cli.run(["--url", devchain_url, "decode", f"{where}:2"])
    with pytest.raises(UsageError, match="executed no protocol remark"):
        cli.run(["--url", devchain_url, "decode", f"{plain.block_number}:{plain.extrinsic_index}"])
    # the magic has the same verb, from the same parser
    from decentralml_jupyter.jupyter.commands import has_verb

    assert has_verb(cli.build_parser("dfml"), "decode")


def test_addresses_show_in_the_chains_format_whatever_the_state_keeps():
    kusama, polkadot = ss58_encode(ss58_decode(ALICE), 2), ss58_encode(ss58_decode(BOB), 0)
    data = {
        "owner": ALICE,
        "rewards": {ALICE: 5, BOB: 7},
        "validators": [ALICE, BOB],
        "cid": CID,
        "name": "5" * 48,  # looks like an address, is not one (no checksum)
    }
    shown = in_chain_format(data, 2)
    assert shown["owner"] == kusama and shown["validators"][0] == kusama
    assert set(shown["rewards"]) == {kusama, ss58_encode(ss58_decode(BOB), 2)}
    assert shown["cid"] == CID and shown["name"] == "5" * 48
    assert in_chain_format(data, 42) == data
    assert in_chain_format([BOB], 0) == [polkadot]

    class Connected:  # a session connected to a chain whose ss58Format is 2
        class _chain:
            ss58_format = 2

    assert cli.shown(data, Connected())["owner"] == kusama
    assert cli.shown(data, object()) == data  # not connected: the generic spelling


def test_the_rest_api_sends_amounts_as_exact_decimal_strings():
    big = 2**128 - 1
    data = [
        {"name": "Alice", "free": big, "reserved": 0, "round": 3},
        {"stake": {"model_id": 1, "amount": 10**21}, "rewards": {ALICE: big}, "deadline": 9},
    ]
    assert amounts_as_text(data) == [
        {"name": "Alice", "free": str(big), "reserved": "0", "round": 3},
        {"stake": {"model_id": 1, "amount": str(10**21)}, "rewards": {ALICE: str(big)},
         "deadline": 9},
    ]  # fmt: skip


@pytest.mark.chain
def test_a_chain_with_its_own_format_shows_every_address_in_it(devchain_url, tmp_path, monkeypatch):
    """The dev chain declares no ss58Format; one that declares 2 (Kusama's) gets every
    address of the CLI's output in format 2, the protocol state's and decoded remarks' too."""
    from decentralml_jupyter.chain import Chain
    from decentralml_jupyter.chain import client as client_module

    with Chain(devchain_url) as chain:
        sent = chain.submit("//Ferdie", chain.remark_call(C.encode_call(C.Vote(9003, True))))
        assert sent.success, sent.error
    registered = cli.run(
        ["--url", devchain_url, "--key", "//Ferdie", "call", "register_model",
         "--name", "kusama-shown", "--architecture-cid", CID, "--weights-cid", CID,
         "--validators", "Dev1", "--validators", "Dev2"]
    )  # fmt: skip
    mid = registered["created"]["model"]
    kusama = {"ss58Format": 2, "tokenDecimals": [12], "tokenSymbol": ["KSM"]}
    monkeypatch.setattr(client_module._Substrate, "properties", property(lambda self: kusama))
    monkeypatch.setenv("DFML_HOME", str(tmp_path))
    ferdie = ss58_encode(ss58_decode(address_of("Ferdie", 42)), 2)
    decoded = cli.run(
        ["--url", devchain_url, "decode", f"{sent.block_number}:{sent.extrinsic_index}"]
    )
    assert decoded["signer"] == ferdie and decoded["calls"][0]["signer"] == ferdie
    shown = cli.run(["--url", devchain_url, "model", "show", str(mid)])
    assert shown["owner"] == ferdie  # the state keeps format 42; what is shown is the chain's
    assert all(ss58_decode(v, valid_ss58_format=2) for v in shown["validators"])
