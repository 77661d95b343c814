"""Each call is declared once: its fields (with wire types), and what travels with it.

The schema every codec path uses is derived from the dataclass fields; the encoders and the
client's named methods only build the declared call; ``ProtocolClient.send`` finds the
model's pool and asset from the declaration and refuses, before sending anything, what the
protocol would refuse and could not give back.
"""

from __future__ import annotations

import dataclasses
import inspect
from types import SimpleNamespace

import pytest
from protocol_sim import ACCOUNTS, CID_A, CID_W, VALS, Sim

from decentralml_jupyter.errors import NotFound
from decentralml_jupyter.protocol import calls as C
from decentralml_jupyter.protocol import encoders
from decentralml_jupyter.protocol.client import ProtocolClient
from decentralml_jupyter.protocol.errors import CodecError, ProtocolError
from decentralml_jupyter.protocol.scale import Struct, struct, wire

A, B = ACCOUNTS["alice"], ACCOUNTS["bob"]
NESTED = (
    C.RewardPolicy,
    C.Anyone,
    C.AllowList,
    C.MinStake,
    C.DpParams,
    C.RoundSpec,
    C.Contribution,
    C.Rejection,
)
STRUCTS = (*C.CALLS, *C.ACTIONS, *NESTED)


@pytest.mark.parametrize("cls", STRUCTS, ids=lambda c: c.__name__)
def test_schema_is_derived_from_the_fields_in_order(cls) -> None:
    fields = dataclasses.fields(cls)
    assert [n for n, _ in cls.SCHEMA] == [f.name for f in fields]
    assert list(cls.HELP) == [f.name for f in fields]
    for (_, kind), f in zip(cls.SCHEMA, fields, strict=True):
        assert kind is f.metadata["dfml.wire"]
    assert cls.__dataclass_params__.frozen


def test_call_fields_carry_help() -> None:
    for cls in C.CALLS:
        for name, text in cls.HELP.items():
            assert text, f"{cls.__name__}.{name} has no help text"


def test_a_field_without_a_wire_type_is_refused() -> None:
    with pytest.raises(TypeError, match="declare the field with wire"):

        @struct
        class Bad(Struct):
            ok: int = wire(C.ID)
            missing: int = 0


def test_declared_bounds_are_the_codecs() -> None:
    spec = C.RoundSpec(clients=4, min_clients=4, reward=3)
    C.StartRounds(1, spec, C.MAX_PLAN)
    with pytest.raises(CodecError, match="rounds"):
        C.StartRounds(1, spec, C.MAX_PLAN + 1)
    C.CreateTask(1, "data_annotator", 1, C.MAX_ASSIGNMENTS, 5)
    with pytest.raises(CodecError, match="max_assignments"):
        C.CreateTask(1, "data_annotator", 1, C.MAX_ASSIGNMENTS + 1, 5)
    with pytest.raises(CodecError, match="epochs"):
        C.RoundSpec(epochs=C.MAX_EPOCHS + 1)
    with pytest.raises(CodecError, match="clients"):
        C.RoundSpec(clients=C.MAX_CLIENTS + 1)
    with pytest.raises(CodecError, match="reason"):
        C.RejectSubmission(1, "x" * (C.MAX_DECISION_BYTES + 1))
    with pytest.raises(CodecError, match="description"):
        C.CreateTask(1, "data_annotator", 1, 1, 5, description="x" * (C.MAX_DESCRIPTION_BYTES + 1))


def test_encoder_defaults_are_the_declared_ones() -> None:
    """An encoder that spells out a field's default says what the call class says (None:
    "the declared default", for parameters the encoder converts)."""
    for cls in C.CALLS:
        fn = getattr(encoders, cls.NAME, None)
        if fn is None:
            continue
        declared = {f.name: f.default for f in dataclasses.fields(cls)}
        for p in inspect.signature(fn).parameters.values():
            if p.name in declared and p.default not in (p.empty, None):
                assert p.default == declared[p.name], (cls.NAME, p.name)


SPEC = C.RoundSpec(clients=2, min_clients=2, reward=7)
FUNDS = [
    (C.Stake(3, 50), 3, 50, True),
    (C.CreateTask(3, "model_engineer", 4, 5, 10), 3, 20, True),
    (C.StartRound(3, SPEC), 3, 7, True),
    (C.StartRound(3), 3, 0, False),
    (C.StartRounds(3, SPEC, 6), 3, 42, True),
    (C.Propose(3, C.StartRoundProposal(SPEC), 10), 3, 7, True),
    (C.Propose(3, C.AddValidator(A), 10), 3, 0, False),
    (C.Propose(None, C.SetProtocolParam("quorum_permill", 300_000), 10), None, 0, False),
    (C.Unstake(3, 5), 3, 0, False),
    (C.StartTraining(3), 3, 0, False),
    (C.RegisterModel("m", CID_A, CID_W), None, 0, False),
    (C.Vote(1, True), None, 0, False),
    (C.SubmitUpdate(1, CID_W, 3), None, 0, False),
    (C.SettlePayout(1), None, 0, False),
]


@pytest.mark.parametrize("call,model,funds,pays", FUNDS, ids=lambda x: getattr(x, "NAME", ""))
def test_what_travels_with_each_call(call, model, funds, pays) -> None:
    assert call.target_model() == model
    assert call.funds() == funds
    assert call.pays_pool() is pays


# -- send, against a fake chain fed by a simulated state -----------------------------------


class FakeChain:
    """Records what the client would submit; every receipt is extrinsic 0 of block 1."""

    def __init__(self, existing: set[str] = frozenset()):
        self.submitted: list[tuple[str, object]] = []
        self.existing = set(existing)

    def existential_deposit(self) -> int:
        return 10

    def remark_call(self, remark: bytes):
        return ("remark", C.decode_call(remark))

    def transfer_call(self, dest: str, amount: int):
        return ("transfer", dest, amount, None)

    def call(self, module: str, function: str, params: dict):
        assert (module, function) == ("Assets", "transfer_keep_alive")
        return ("transfer", params["target"], params["amount"], params["id"])

    def batch_all_call(self, calls):
        return ("batch_all", tuple(calls))

    def balance(self, dest: str):
        return SimpleNamespace(free=10 if dest in self.existing else 0)

    def submit(self, key, call):
        self.submitted.append((key, call))
        return SimpleNamespace(block_number=1, extrinsic_index=0, block_hash="0x01")

    def block_hash(self, number: int) -> str:
        return self.canonical  # the chain's block at that height now

    canonical = "0x01"


@pytest.fixture
def world():
    sim = Sim()
    for asset, validators in ((None, VALS), (7, VALS), (None, VALS[:1])):
        remark = encoders.register_model(
            "m", CID_A, CID_W, stake_asset=asset, validators=validators
        )
        assert sim.call("alice", remark).ok
    sim.tick()
    state = sim.state
    indexer = SimpleNamespace(sync=lambda *a: state, wait_for=lambda *a: state)
    chain = FakeChain()
    return ProtocolClient(chain, indexer), chain, state  # models: 1 native, 2 asset 7, 3 single


def test_send_refuses_a_stake_in_the_wrong_asset(world) -> None:
    proto, chain, _ = world
    with pytest.raises(ProtocolError, match="takes stakes in asset 7, not asset 8"):
        proto.send("//Bob", C.Stake(2, 5, 8))
    with pytest.raises(ProtocolError, match="takes stakes in the native token, not asset 7"):
        proto.stake("//Bob", 1, 5, 7)
    assert chain.submitted == []


def test_send_refuses_funds_for_a_pool_one_person_holds(world) -> None:
    proto, chain, _ = world
    for call in (
        C.Stake(3, 5),
        C.CreateTask(3, "data_annotator", 1, 1, 5),
        C.StartRound(3, SPEC),
        C.StartRounds(3, SPEC, 3),
        C.Propose(3, C.StartRoundProposal(SPEC), 10),
    ):
        with pytest.raises(ProtocolError, match="one person's account"):
            proto.send("//Bob", call)
    with pytest.raises(NotFound, match="no model 9"):
        proto.send("//Bob", C.Stake(9, 5))
    with pytest.raises(NotFound, match="no model 9"):
        proto.start_round("//Bob", 9, C.RoundSpec())  # even without a reward
    assert chain.submitted == []


def test_send_batches_the_declared_transfer(world) -> None:
    proto, chain, state = world
    native, token = state.model(1).pool, state.model(2).pool
    proto.stake("//Bob", 1, 5)
    proto.stake("//Bob", 2, 6)  # the asset is the model's: filled in, pool provided for first
    proto.create_task("//Bob", 1, "data_annotator", 4, 3, 10, validation="auto")
    proto.start_rounds("//Bob", 2, SPEC, 4)
    proto.start_rounds("//Bob", 1, SPEC, 1)  # one round is a plain start_round
    proto.propose("//Bob", 1, C.StartRoundProposal(SPEC), 10)
    proto.propose("//Bob", 1, C.ApproveModel(), 10)
    proto.start_round("//Bob", 1, C.RoundSpec())
    proto.unstake("//Bob", 3, 1)
    proto.vote("//Bob", 1, True)

    def batch(call, dest, amount, asset):
        return ("batch_all", (("transfer", dest, amount, asset), ("remark", call)))

    assert [c for _, c in chain.submitted] == [
        batch(C.Stake(1, 5), native, 5, None),
        ("transfer", token, 10, None),  # the existential deposit, an extrinsic of its own
        batch(C.Stake(2, 6, 7), token, 6, 7),
        batch(C.CreateTask(1, "data_annotator", 4, 3, 10, "auto"), native, 12, None),
        ("transfer", token, 10, None),
        batch(C.StartRounds(2, SPEC, 4), token, 28, 7),
        batch(C.StartRound(1, SPEC), native, 7, None),
        batch(C.Propose(1, C.StartRoundProposal(SPEC), 10), native, 7, None),
        ("remark", C.Propose(1, C.ApproveModel(), 10)),
        ("remark", C.StartRound(1)),
        ("remark", C.Unstake(3, 1)),
        ("remark", C.Vote(1, True)),
    ]


def test_register_model_keeps_its_conveniences(world) -> None:
    proto, chain, _ = world
    proto.register_model(
        "//Alice", "m", CID_A, CID_W, validators=[B, A], jurisdictions=["EU"], reward_policy=None
    )
    [(_, (_, call))] = chain.submitted
    assert call == C.RegisterModel("m", CID_A, CID_W, jurisdictions=("EU",), validators=(B, A))
    with pytest.raises(TypeError):
        encoders.register_model("m", CID_A, CID_W, "description given by position")


def test_a_transaction_whose_block_was_replaced_is_reported_as_not_taken(world) -> None:
    """A busy dev chain can build a second block at one height and keep it: the receipt's
    block is then not the chain's, and the call is reported as not taken (ChainError), never
    as done or as refused by the protocol."""
    from decentralml_jupyter.errors import ChainError

    proto, chain, _ = world
    chain.canonical = "0x02"
    with pytest.raises(ChainError, match="was replaced"):
        proto.stake("//Bob", 1, 5)
