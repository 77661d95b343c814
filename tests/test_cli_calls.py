"""`dfml call NAME ...` and `dfml decode HEX`: every protocol call is a verb read from its
declaration, and any remark reads back as JSON."""

from __future__ import annotations

import dataclasses

import pytest

from decentralml_jupyter import cli
from decentralml_jupyter.errors import CodecError, UsageError
from decentralml_jupyter.protocol import calls as C
from decentralml_jupyter.protocol import encoders

CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
UNIT = 10**12


def test_every_call_is_a_verb_with_exactly_its_declared_fields():
    parser = cli.build_parser("dfml").verbs["call"]
    assert list(parser.verbs) == [c.NAME for c in C.CALLS]
    for cls in C.CALLS:
        verb = parser.verbs[cls.NAME]
        options = {a.dest: a for a in verb.arguments if a.dest != "help"}
        assert list(options) == [name for name, _ in cls.SCHEMA], cls.NAME
        for f in dataclasses.fields(cls):
            assert options[f.name].required == (f.default is dataclasses.MISSING), f.name
            assert cls.HELP[f.name] and cls.HELP[f.name] in options[f.name].help


@pytest.mark.parametrize(
    "call",
    [
        C.Vote(7, False),
        C.Stake(1, 5 * UNIT, None),
        encoders.registration("m", CID, CID, jurisdictions=["EU"], strategy="fedprox"),
        C.Propose(2, encoders.action_from_params("SetLicence", {"licence": "mit"}), 12),
        C.StartRounds(3, encoders.round_spec(4, 2, reward=9, clip_norm=1.5), 5),
    ],
    ids=lambda c: c.NAME,
)
def test_calls_read_back_from_their_json_and_their_bytes(call):
    assert type(call).from_json(call.to_json()) == call
    decoded = cli.run(["decode", C.encode_call(call).hex()])
    assert decoded["call"] == call.NAME
    assert type(call).from_json(decoded["fields"]) == call


def test_bad_input_to_call_and_decode_says_what_is_wrong():
    with pytest.raises(CodecError, match="unknown fields"):
        C.RoundSpec.from_json({"clients": 4, "rounds": 2})
    with pytest.raises(CodecError, match='needs "type"'):
        C.ACTION.from_json({"licence": "mit"})
    with pytest.raises(UsageError, match="required: --proposal-id"):
        cli.run(["call", "vote", "--aye", "true"])
    with pytest.raises(UsageError, match="not true or false"):
        cli.run(["--url", "ws://127.0.0.1:1", "call", "vote", "--proposal-id", "1", "--aye", "x"])
    with pytest.raises(CodecError):
        cli.run(["decode", b"not a protocol remark".hex()])
    with pytest.raises(UsageError, match="not hex"):
        cli.run(["decode", "zz"])


@pytest.mark.chain
def test_a_call_sent_by_its_declaration_does_what_its_verb_does(devchain_url):
    base = ["--url", devchain_url, "--json"]
    sent = cli.run(
        [*base[:2], "--key", "//Ferdie", "call", "register_model", "--name", "by-declaration",
         "--architecture-cid", CID, "--weights-cid", CID,
         "--validators", "Dev1", "--validators", "Dev2",
         "--reward-policy", '{"kind": "equal", "slash_permill": 1000}'],
    )  # fmt: skip
    assert sent["call"] == "register_model" and sent["receipt"]["success"]
    mid = sent["created"]["model"]
    model = cli.run([*base[:2], "model", "show", str(mid)])
    assert model["reward_policy"]["kind"] == "equal" and len(model["validators"]) == 2
    staked = cli.run(
        [
            *base[:2],
            "--key",
            "//Eve",
            "call",
            "stake",
            "--model-id",
            str(mid),
            "--amount",
            str(UNIT),
        ]
    )
    assert staked["created"] == {} and staked["receipt"]["success"]
    rows = cli.run([*base[:2], "stakes", "--model", str(mid), "--account", "Eve"])
    assert [r["amount"] for r in rows] == [UNIT]  # the transfer travelled with it, as `stake` does


def test_an_agents_own_options_pass_through_to_it():
    parser = cli.build_parser("dfml")
    line = ["--key", "//Dev5", "worker", "--data", "mine.csv", "--target", "y", "--model", "3"]
    head, rest = cli._agent_split(parser, line)
    assert head == ["--key", "//Dev5", "worker"]
    assert rest == ["--data", "mine.csv", "--target", "y", "--model", "3"]
    assert cli._agent_split(parser, ["--url=ws://x", "validator", "--data", "v.npz"])[1] == [
        "--data",
        "v.npz",
    ]
    assert cli._agent_split(parser, ["model", "list"]) == (["model", "list"], None)
