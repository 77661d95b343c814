"""The call codec: round trips, and every kind of malformed remark rejected with a reason."""

from __future__ import annotations

import pytest
from protocol_sim import ACCOUNTS, CID_A, CID_W

from decentralml_jupyter.protocol import (
    MAX_REMARK_BYTES,
    PREFIX,
    AllowList,
    CodecError,
    MinStake,
    SetEligibleWorkers,
    SetProtocolParam,
    decode_call,
    encode_call,
    encoders,
    multisig_address,
    pool_address,
)
from decentralml_jupyter.protocol import calls as C
from decentralml_jupyter.protocol.scale import Reader, encode_compact

A, B, CAROL = ACCOUNTS["alice"], ACCOUNTS["bob"], ACCOUNTS["carol"]

SAMPLES = [
    C.RegisterModel(
        name="digits-mlp ✓",
        architecture_cid=CID_A,
        weights_cid=CID_W,
        jurisdictions=("EU", "CH"),
        reward_policy=C.RewardPolicy("equal", 10**18, 50_000),
        stake_asset=1984,
        validators=(A, B),
    ),
    C.StartTraining(1),
    C.Stake(1, 2**128 - 1),
    C.Stake(2**64 - 1, 1, 7),
    C.Unstake(3, 5),
    C.CreateTask(1, "data_annotator", 100, 3, 50, "auto", "label 100 digits"),
    C.AssignTask(9),
    C.SubmitResult(9, CID_W),
    C.AcceptSubmission(4),
    C.RejectSubmission(4, "blurry"),
    C.Propose(None, SetProtocolParam("quorum_permill", 250_000), 10),
    C.Propose(1, SetEligibleWorkers(AllowList((A, B))), 10),
    C.Propose(1, SetEligibleWorkers(MinStake(10)), 10),
    C.Propose(1, C.AddValidator(CAROL), 5),
    C.Vote(1, False),
    C.SettlePayout(12),
    C.StartRound(1),
    C.StartRound(
        7,
        C.RoundSpec(64, 2, 10, 5, 3, 16, 1_000, C.DpParams(1_000_000, 1_100_000), 10**20),
    ),
    C.Propose(1, C.StartRoundProposal(C.RoundSpec(clients=4, min_clients=3, reward=9)), 10),
    C.StartRounds(2, C.RoundSpec(clients=8, min_clients=4, reward=5), 1000),
    C.SubmitUpdate(3, CID_W, 2**64 - 1),
    C.Attest(3, CID_A, 1_000_000, 2**64 - 1),
    C.Attest(
        3,
        CID_A,
        912_345,
        250_000,
        (C.Contribution(A, 600_000), C.Contribution(B, 400_000)),
        (C.Rejection(CAROL, "norm bound ✗"),),
    ),
]


@pytest.mark.parametrize("call", SAMPLES, ids=lambda c: c.NAME)
def test_round_trip(call: C.Call) -> None:
    raw = encode_call(call)
    assert raw.startswith(PREFIX + b"\x01")
    assert decode_call(raw) == call


def test_compact_encoding_matches_scale_vectors() -> None:
    # vectors from the SCALE specification
    assert encode_compact(0) == b"\x00"
    assert encode_compact(1) == b"\x04"
    assert encode_compact(42) == b"\xa8"
    assert encode_compact(69) == b"\x15\x01"
    assert encode_compact(65535) == b"\xfe\xff\x03\x00"
    assert encode_compact(100000000000000) == bytes.fromhex("0b00407a10f35a")
    for v in (0, 63, 64, 16383, 16384, 2**30 - 1, 2**30, 2**32, 2**128 - 1):
        assert Reader(encode_compact(v)).compact() == v


def test_matches_scalecodec_encoding() -> None:
    from scalecodec.base import RuntimeConfiguration
    from scalecodec.type_registry import load_type_registry_preset

    rc = RuntimeConfiguration()
    rc.update_type_registry(load_type_registry_preset("legacy"))
    for value in (0, 1, 300, 2**40, 2**127):
        ref = rc.create_scale_object("Compact<u128>").encode(value)
        assert encode_compact(value) == bytes(ref.data)
    ref = rc.create_scale_object("Bytes").encode("héllo".encode())
    assert C.Text(16).encode("héllo") == bytes(ref.data)


def _body(call: C.Call) -> bytes:
    return encode_call(call)[len(PREFIX) + 1 :]


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", "missing prefix"),
        (b"rmrk::MINT", "missing prefix"),
        (PREFIX, "missing protocol version"),
        (PREFIX + b"\x02" + _body(C.Vote(1, True)), "unknown protocol version 2"),
        (PREFIX + b"\x01", "truncated"),
        (PREFIX + b"\x01\x63", "unknown call index 99"),
        (PREFIX + b"\x01" + _body(C.Vote(1, True)) + b"\x00", "1 trailing bytes"),
        (PREFIX + b"\x01" + _body(C.Vote(1, True))[:-1], "truncated"),
        (PREFIX + b"\x01\x0a\x04\x02", "invalid bool"),
        (PREFIX + b"\x01\x0a\x05\x00\x01", "non-canonical compact"),  # 1 in two-byte mode
        (PREFIX + b"\x01\x02\x04" + encode_compact(2**128) + b"\x00", "out of range"),
        (PREFIX + b"\x01\x02\x04\x04\x02", "invalid option tag"),
        (PREFIX + b"\x01\x06\x04\x08\xff\xfe", "not valid UTF-8"),
        (PREFIX + b"\x01\x06\x04\x08Q!", "does not match"),
        (PREFIX + b"\x01\x09\x00\x0e\x28", "unknown proposal kind index 14"),
        (PREFIX + b"\x01\x2c", "unknown call index 44"),
        (PREFIX + b"\x01\x20\x04" + encode_compact(4097) + bytes(20), "out of range 0..4096"),
        (PREFIX + b"\x01\x21\x04\x08Q!\x00", "does not match"),
        (PREFIX + b"\x01\x22\x04\x08Qm" + encode_compact(10**6 + 1), "out of range"),
        (PREFIX + b"\x01" + bytes(MAX_REMARK_BYTES), "exceeds"),
    ],
)
def test_malformed_remarks_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(CodecError, match=reason):
        decode_call(raw)


def test_oversize_fields_are_rejected() -> None:
    with pytest.raises(CodecError, match="bytes, allowed"):
        C.RegisterModel(name="x" * 65, architecture_cid=CID_A, weights_cid=CID_W)
    with pytest.raises(CodecError, match="at most 16"):
        C.RegisterModel(
            name="x",
            architecture_cid=CID_A,
            weights_cid=CID_W,
            validators=tuple(ACCOUNTS.values()) * 3,
        )
    long_text = C.Text(1024).encode("x" * 2000)  # a length prefix beyond the field's bound
    raw = PREFIX + b"\x01\x08\x04" + long_text
    with pytest.raises(CodecError, match="exceeds 256"):
        decode_call(raw)


def test_values_are_checked_when_building_calls() -> None:
    with pytest.raises(CodecError, match="out of range"):
        C.Stake(1, -5)
    with pytest.raises(CodecError, match="expected an integer"):
        C.Stake(1, True)
    with pytest.raises(CodecError, match="not one of"):
        C.CreateTask(1, "janitor", 1, 1, 1)
    with pytest.raises(CodecError, match="invalid SS58"):
        C.AddValidator("not-an-address")
    with pytest.raises(CodecError, match="duplicate"):
        C.SetJurisdictions(("EU", "EU"))


def test_multisig_address_matches_substrate_interface_algorithm() -> None:
    from scalecodec.base import RuntimeConfiguration
    from scalecodec.type_registry import load_type_registry_preset
    from scalecodec.types import MultiAccountId
    from scalecodec.utils.ss58 import ss58_encode

    rc = RuntimeConfiguration()
    rc.update_type_registry(load_type_registry_preset("legacy"))
    MultiAccountId.runtime_config = rc
    for signers, k in (([A, B], 2), ([CAROL, A, B], 2), (list(ACCOUNTS.values()), 4)):
        ref = MultiAccountId.create_from_account_list(signers, k)
        assert multisig_address(signers, k) == ss58_encode(ref.value[2:], 42)
    # Alice, Bob, Charlie (sr25519 dev keys), 2 of 3: the widely published address
    dev = [
        "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY",
        "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty",
        "5FLSigC9HGRKVhB9FiEo4Y3koPsNmBmLJbpXg2mp1hXcS59Y",
    ]
    assert multisig_address(dev, 2) == "5DjYJStmdZ2rcqXbXGX7TW85JsrW6uG4y9MUcLq2BoPMpRA7"


def test_pool_address_rules() -> None:
    assert pool_address(A, []) == A  # no validators: the owner holds the funds
    assert pool_address(A, [B]) == B  # one validator: its own account
    assert pool_address(A, [B, CAROL]) == multisig_address([B, CAROL], 2)
    assert pool_address(A, [CAROL, B, A]) == multisig_address([A, B, CAROL], 2)


def test_action_from_cli_params() -> None:
    a = encoders.action_from_params("SetEligibleWorkers", {"allow": f"{A},{B}"})
    assert a == SetEligibleWorkers(AllowList((A, B)))
    a = encoders.action_from_params("set_protocol_param", {"name": "quorum_permill", "value": "7"})
    assert a == SetProtocolParam("quorum_permill", 7)
    assert encoders.action_from_params("approvemodel") == C.ApproveModel()
    with pytest.raises(CodecError, match="unknown proposal kind"):
        encoders.action_from_params("MakeMeRich")
    with pytest.raises(CodecError, match="does not take"):
        encoders.action_from_params("ApproveModel", {"x": "1"})
    with pytest.raises(CodecError, match="needs --param account"):
        encoders.action_from_params("AddValidator")


def test_payout_calls_are_canonical() -> None:
    from decentralml_jupyter.protocol import Payout

    native = Payout(3, 1, A, B, 50, None, "unstake", 9)
    byo = Payout(4, 1, A, B, 50, 1984, "unstake", 9)
    transfer, remark = encoders.payout_calls(native)
    # a payout may empty its pool (the last staker leaves): not transfer_keep_alive
    assert transfer == ("Balances", "transfer_allow_death", {"dest": B, "value": 50})
    assert decode_call(bytes.fromhex(remark[2]["remark"][2:])) == C.SettlePayout(3)
    assert encoders.payout_calls(byo)[0] == (
        "Assets",
        "transfer",
        {"id": 1984, "target": B, "amount": 50},
    )


def test_round_encoders_and_result_digest() -> None:
    spec = encoders.round_spec(4, learning_rate=0.05, clip_norm=1.5, reward=10)
    assert spec == C.RoundSpec(4, 4, 0, 0, 1, 32, 50_000, C.DpParams(1_500_000, 0), 10)
    assert encoders.round_spec(2, 1).dp is None
    assert decode_call(encoders.start_round(1, spec)) == C.StartRound(1, spec)
    assert decode_call(encoders.submit_update(2, CID_W, 60)) == C.SubmitUpdate(2, CID_W, 60)
    att = encoders.attest(
        2, CID_A, accuracy=0.9, loss=0.3, contributions={A: 2, B: 1}, rejected={CAROL: "nan"}
    )
    assert (att.accuracy_ppm, att.loss_ppm) == (900_000, 300_000)
    assert {c.account: c.score for c in att.accepted} == {A: 666_667, B: 333_333}
    assert (
        decode_call(
            encoders.attest_remark(
                2,
                CID_A,
                accuracy=0.9,
                loss=0.3,
                contributions={A: 2, B: 1},
                rejected={CAROL: "nan"},
            )
        )
        == att
    )
    # the digest ignores list order and changes with any part of the exact result...
    CID_B = "QmOther" + "b" * 40
    flipped = C.Attest(2, CID_A, 900_000, 300_000, att.accepted[::-1], att.rejected)
    assert flipped.result_digest() == att.result_digest()
    for other in (
        C.Attest(2, CID_B, 900_000, 300_000, att.accepted, att.rejected),
        C.Attest(2, CID_A, 900_000, 300_000, att.accepted[:1], att.rejected),
        C.Attest(2, CID_A, 900_000, 300_000, att.accepted, ()),
        C.Attest(2, CID_A, 900_000, 300_000, att.accepted, att.rejected, state_cid=CID_B),
        C.Attest(3, CID_A, 900_000, 300_000, att.accepted, att.rejected),
    ):
        assert other.result_digest() != att.result_digest()
    # ...but not with what evaluating a model reports (metrics, scores): machines differ in
    # a float's last bits, so those are combined by the quorum's median instead
    scores = tuple(C.Contribution(c.account, 10**6 - c.score) for c in att.accepted)
    for same in (
        C.Attest(2, CID_A, 900_001, 300_002, att.accepted, att.rejected),
        C.Attest(2, CID_A, 900_000, 300_000, scores, att.rejected, base_metric_ppm=5),
        C.AttestMetric(2, CID_A, 900_000, 300_000, att.accepted, att.rejected, 41),
    ):
        assert same.result_digest() == att.result_digest()
    with pytest.raises(CodecError, match="more than 4096"):
        reasons = {ACCOUNTS[n]: "r" * 64 for n in ACCOUNTS}
        many = {f"0x{i:064x}": "r" * 64 for i in range(58)}
        encode_call(
            encoders.attest(
                1, CID_A, accuracy=0, loss=0, contributions={}, rejected={**reasons, **many}
            )
        )


def test_contribution_scores_sum_to_a_million_exactly() -> None:
    scores = encoders.contribution_scores({A: 1, B: 1, CAROL: 1})
    assert sum(scores.values()) == 1_000_000 and sorted(scores.values()) == [
        333_333,
        333_333,
        333_334,
    ]
    assert encoders.contribution_scores({A: 0.1, B: 0.2}) == {A: 333_333, B: 666_667}
    assert encoders.contribution_scores({A: 600_000, B: 400_000}) == {A: 600_000, B: 400_000}
    with pytest.raises(CodecError, match="positive sum"):
        encoders.contribution_scores({A: 0})
    with pytest.raises(CodecError, match="non-negative"):
        encoders.contribution_scores({A: -1, B: 2})


def test_start_round_from_cli_params() -> None:
    a = encoders.action_from_params(
        "StartRound", {"clients": "5", "min_clients": "3", "reward": "100", "clip_norm": "1"}
    )
    assert a == C.StartRoundProposal(
        C.RoundSpec(5, 3, 0, 0, 1, 32, 10_000, C.DpParams(1_000_000, 0), 100)
    )
    with pytest.raises(CodecError, match="needs --param clients"):
        encoders.action_from_params("start_round")
    with pytest.raises(CodecError, match="must be a number"):
        encoders.action_from_params("StartRound", {"clients": "2", "learning_rate": "fast"})
