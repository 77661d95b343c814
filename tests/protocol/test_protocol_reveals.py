"""Secure rounds survive dropouts: once a secure round stops taking updates, each worker
whose update is in it reveals its own mask seed and its seeds shared with the selected
workers that did not submit; only those, once each, while the round is aggregating."""

from __future__ import annotations

from protocol_sim import Sim, ok, pass_proposal, rejected, replay
from test_protocol_rounds import CID_U, start, training_model

from decentralml_jupyter.protocol import calls as C
from decentralml_jupyter.protocol import encoders

SEED = b"\x11" * 32


def test_survivors_reveal_seeds_for_exactly_the_dropped(sim: Sim) -> None:
    mid = training_model(sim)
    pass_proposal(sim, mid, C.SetStrategy("fedavg:secure"))
    rid = start(sim, mid, clients=4, min_clients=2, submit_blocks=5)
    selected = sim.state.round(rid).selected
    survivors, dropped = selected[:2], selected[2:]
    for i, w in enumerate(survivors):
        ok(sim, w, encoders.submit_update(rid, CID_U[i], 100))
    reveal = encoders.reveal_seeds(rid, SEED, dict.fromkeys(dropped, SEED))
    assert "takes no reveals" in rejected(sim, survivors[0], reveal)  # still open
    sim.tick(6)
    assert sim.state.round(rid).status == "aggregating"
    assert "has no update" in rejected(sim, dropped[0], reveal)  # a dropped worker
    partial = encoders.reveal_seeds(rid, SEED, {dropped[0]: SEED})
    assert "exactly the 2 selected workers" in rejected(sim, survivors[0], partial)
    ok(sim, survivors[0], reveal)
    assert "already revealed" in rejected(sim, survivors[0], reveal)
    ok(sim, survivors[1], reveal)
    r = sim.state.round(rid)
    assert set(r.reveals) == set(survivors)
    assert set(r.reveals[survivors[0]]["dropped"]) == set(dropped)
    assert replay(sim.log).state_hash() == sim.state.state_hash()


def test_plain_rounds_take_no_reveals(sim: Sim) -> None:
    mid = training_model(sim)
    rid = start(sim, mid, clients=3, min_clients=2, submit_blocks=5)
    w = sim.state.round(rid).selected[0]
    ok(sim, w, encoders.submit_update(rid, CID_U[0], 100))
    sim.tick(6)
    assert "not secure" in rejected(sim, w, encoders.reveal_seeds(rid, SEED, {}))
