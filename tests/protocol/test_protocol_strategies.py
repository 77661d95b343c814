"""A model's strategy and its parameters in the protocol: recorded at registration and by
governance, refused with the reason when malformed, and a stateful strategy's server state
carried from round to round by the attested CID (and reset when the strategy changes)."""

from __future__ import annotations

import pytest
from protocol_sim import CID_A, CID_W, Sim, ok, pass_proposal, rejected, replay
from test_protocol_rounds import CID_AGG, VALIDATORS, start, submit_all, training_model

from decentralml_jupyter.protocol import calls as C
from decentralml_jupyter.protocol import encode_call, encoders
from decentralml_jupyter.protocol.errors import CodecError

CID_S1 = "QmServerState1111111111111111111111111111111111"
CID_S2 = "QmServerState2222222222222222222222222222222222"


def _register(sim: Sim, strategy: str, params) -> object:
    remark = encoders.register_model(
        "m", CID_A, CID_W, validators=VALIDATORS, strategy=strategy, strategy_params=params
    )
    return sim.call("alice", remark)


def test_parameters_recorded_at_registration_and_shown_with_defaults(sim: Sim) -> None:
    out = _register(sim, "multikrum", {"f": 1, "keep": 3})
    assert out.ok, out.reason
    m = sim.state.model(out.entity_id)
    assert m.strategy == "multikrum" and m.strategy_params == {"f": 1, "keep": 3}
    adam = sim.state.model(_register(sim, "fedadam", {"eta": 0.05}).entity_id)
    assert adam.strategy_params == {"eta": 0.05, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-9}
    assert adam.to_json()["strategy_params"]["eta"] == 0.05
    # none given: the strategy's defaults; the remark is the very bytes of before
    plain = encoders.register_model("m", CID_A, CID_W, validators=VALIDATORS)
    assert not plain.endswith(b"\x00")
    assert sim.state.model(ok(sim, "alice", plain).entity_id).strategy_params == {}


@pytest.mark.parametrize(
    "strategy, params, why",
    [
        ("fedprox", {"mu": "-0.5"}, "out of range"),
        ("fedadam", {"beta_2": "1.5"}, "out of range"),
        ("fedavg", {"mu": "0.1"}, "has no parameter mu"),
        ("krum", {"f": "0.5"}, "must be an integer"),
        ("fedmedian:secure", {}, "cannot run on secure aggregation"),
        ("sgd", {}, "unknown strategy"),
    ],
)
def test_malformed_strategies_are_refused_with_the_reason(sim: Sim, strategy, params, why):
    remark = encoders.register_model(
        "m", CID_A, CID_W, validators=VALIDATORS, strategy=strategy, strategy_params=params
    )
    reason = rejected(sim, "alice", remark)
    assert why in reason, reason


def test_the_wire_refuses_a_parameter_twice_and_non_numbers():
    with pytest.raises(CodecError):
        C.StrategyParam("eta", "0.1; drop")
    twice = (C.StrategyParam("eta", "0.1"), C.StrategyParam("eta", "0.2"))
    call = C.RegisterModel("m", CID_A, CID_W, strategy="fedadam", strategy_params=twice)
    sim = Sim()
    reason = rejected(sim, "alice", encode_call(call))
    assert "given twice" in reason
    # an explicit empty parameter list is a second encoding of "none": refused as bytes
    plain = encoders.register_model("m", CID_A, CID_W)
    with pytest.raises(CodecError, match="non-canonical"):
        C.decode_call(plain + b"\x00")


def test_governance_sets_strategy_and_parameters_and_resets_the_state(sim: Sim) -> None:
    mid = training_model(sim)
    action = encoders.action_from_params("SetStrategy", {"strategy": "fedavgm", "eta": "0.5"})
    assert isinstance(action, C.ConfigureStrategy)
    # a malformed one is refused when proposed, not when it passes
    bad = encoders.action_from_params("SetStrategy", {"strategy": "fedavgm", "momentum": "1"})
    assert "out of range" in rejected(sim, "alice", encoders.propose(mid, bad, 10))
    pass_proposal(sim, mid, action, voters=("alice",))
    m = sim.state.model(mid)
    assert m.strategy == "fedavgm" and m.strategy_params == {"eta": 0.5, "momentum": 0.9}
    # the plain SetStrategy of before still works, and takes the defaults
    pass_proposal(sim, mid, C.SetStrategy("fedyogi"), voters=("alice",))
    assert sim.state.model(mid).strategy_params["eta"] == 0.01


def _attest_all(sim: Sim, rid: int, state_cid: str | None) -> None:
    selected = sim.state.round(rid).selected
    for v in ("bob", "carol"):
        call = encoders.attest(
            rid, CID_AGG, accuracy=0.9, loss=0.2,
            contributions={w: 1.0 for w in selected}, state_cid=state_cid,
        )  # fmt: skip
        ok(sim, v, encode_call(call))


def test_server_state_travels_with_the_quorums_verdict(sim: Sim) -> None:
    mid = training_model(sim)
    pass_proposal(sim, mid, C.ConfigureStrategy("fedadam", ()), voters=("alice",))
    rid = start(sim, mid)
    assert sim.state.round(rid).base_state_cid is None  # a first round starts afresh
    submit_all(sim, rid)
    sim.tick(6)
    _attest_all(sim, rid, CID_S1)
    r = sim.state.round(rid)
    assert r.status == "finalized" and r.state_cid == CID_S1
    assert sim.state.model(mid).state_cid == CID_S1
    assert all(a.state_cid == CID_S1 for a in r.attestations)
    rid2 = start(sim, mid)
    assert sim.state.round(rid2).base_state_cid == CID_S1  # the next starts from it
    submit_all(sim, rid2)
    sim.tick(6)
    # validators that disagree on the state do not make a quorum, whatever the aggregate
    selected = sim.state.round(rid2).selected
    for v, cid in (("bob", CID_S2), ("carol", None)):
        call = encoders.attest(
            rid2, CID_AGG, accuracy=0.9, loss=0.2,
            contributions={w: 1.0 for w in selected}, state_cid=cid,
        )  # fmt: skip
        ok(sim, v, encode_call(call))
    assert sim.state.round(rid2).status == "aggregating"
    # a new strategy (or new settings) starts its state afresh
    sim.tick(10)
    pass_proposal(sim, mid, C.ConfigureStrategy("fedadam", (C.StrategyParam("eta", "0.2"),)))
    assert sim.state.model(mid).state_cid is None
    assert replay(sim.log).state_hash() == sim.state.state_hash()
