"""Widgets: accounts against the real dev chain; proposals, model card and round dashboard
rendering the typed values a `Session` returns, and acting through the same Session as `%dfml`.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

from decentralml_jupyter import Session
from decentralml_jupyter.chain import Receipt
from decentralml_jupyter.jupyter import (
    AccountsWidget,
    ModelCard,
    ProposalsWidget,
    RoundDashboard,
)
from decentralml_jupyter.protocol.values import ModelInfo, RoundInfo
from decentralml_jupyter.receipts import Done

ALICE = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
BOB = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
CHARLIE = "5FLSigC9HGRKVhB9FiEo4Y3koPsNmBmLJbpXg2mp1hXcS59Y"
RECEIPT = {
    "block_hash": "0x" + "cd" * 32,
    "block_number": 9,
    "extrinsic_index": 1,
    "success": True,
    "error": None,
}


def _real_proposals() -> list[dict]:
    """What `proposals` answers, produced by the protocol's own state machine: an open
    ApproveModel proposal (1) and a passed SetLicence one (2) on model 1."""
    from hashlib import blake2b

    from decentralml_jupyter.protocol import CallContext, State, Transfer, encoders
    from decentralml_jupyter.protocol.accounts import ss58

    alice, bob, v1, v2 = (ss58(blake2b(n.encode(), digest_size=32).digest()) for n in "abxy")
    state, block = State(), [0]

    def call(signer, remark, *transfers):
        ctx = CallContext(block[0], f"0x{block[0]:064x}", 0, 0, signer, transfers)
        assert state.apply(ctx, remark).ok
        state.tick(block[0], f"0x{block[0]:064x}")
        block[0] += 1

    cid = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
    call(alice, encoders.register_model("m", cid, cid, validators=[v1, v2]))
    pool = state.model(1).pool
    call(bob, encoders.stake(1, 50), Transfer(bob, pool, 50))
    call(alice, encoders.propose(1, encoders.action_from_params("ApproveModel"), 100))
    call(
        alice,
        encoders.propose(1, encoders.action_from_params("SetLicence", {"licence": "mit"}), 10),
    )
    call(bob, encoders.vote(2, True))
    for _ in range(11):
        state.tick(block[0], f"0x{block[0]:064x}")
        block[0] += 1
    return state.proposals()


PROPOSALS = _real_proposals()


class Recorder:
    """A stand-in Session that records the methods called (name and arguments) and answers
    with values the protocol itself produced, or built with its own value classes."""

    def __init__(self, answers: dict):
        self.answers, self.calls = answers, []

    def __getattr__(self, name):
        if name == "token":  # how amounts are shown, not a call the tests follow
            return lambda: {"symbol": "ROC", "decimals": 12, "ss58_format": 42}

        def method(*args, **kwargs):
            self.calls.append((name, *args, *kwargs.values()))
            answer = self.answers[name]
            return answer(*args, **kwargs) if callable(answer) else answer

        return method


def _receipt() -> Receipt:
    return Receipt(**{k: v for k, v in RECEIPT.items() if k != "error"}, error=None)


# -- accounts (real chain) ------------------------------------------------------------------


@pytest.mark.chain
def test_accounts_widget_shows_balances_and_refreshes(chain_ip, devchain_url):
    # no session given: it uses the loaded magic's (its %config: url, key), like %dfml does
    widget = AccountsWidget()
    assert widget.session.url == devchain_url
    names = [a["name"] for a in widget.accounts]
    assert names[0] == "Alice" and "Dev2" in names
    assert "<th>free</th>" in widget.table.value and ALICE in widget.table.value
    before = next(a["free"] for a in widget.accounts if a["name"] == "Dev2")
    chain_ip.run_line_magic("dfml", "account transfer Dev2 12345")
    widget.refresh_button.click()
    after = next(a["free"] for a in widget.accounts if a["name"] == "Dev2")
    assert after == before + 12345
    # in the chain's own token, exactly, with the integer amount as its tooltip
    from decentralml_jupyter.jupyter.results import tokens

    token = widget.session.token()
    assert token["symbol"] and token["decimals"] == 12
    assert f'title="{after}">{tokens(after, token)}</span>' in widget.table.value


def test_accounts_widget_shows_errors_instead_of_raising():
    widget = AccountsWidget(session=Session(url="ws://127.0.0.1:1"))
    assert widget.accounts == []
    assert "ChainNotReachable" in widget.status.value and "hint" in widget.status.value


# -- proposals ------------------------------------------------------------------------------


def test_proposals_widget_votes_through_the_session():
    session = Recorder({"proposals": PROPOSALS, "vote": Done(_receipt())})
    widget = ProposalsWidget(session=session)
    assert session.calls == [("proposals", False)]
    # buttons only where a vote is still possible
    assert [p.status for p in PROPOSALS] == ["open", "passed"]
    assert list(widget.buttons) == ["1"]
    texts = [getattr(c, "value", "") for c in widget.grid.children]
    assert "ApproveModel" in texts and "SetLicence" in texts and "passed" in texts
    aye, nay = widget.buttons["1"]
    aye.click()
    assert session.calls[1] == ("vote", 1, True)
    assert session.calls[2] == ("proposals", False)  # reloaded to show the new tally
    assert "aye on proposal 1" in widget.status.value and "✓ included" in widget.status.value
    widget.buttons["1"][1].click()
    assert session.calls[3] == ("vote", 1, False)


def test_open_only_asks_for_open_proposals():
    session = Recorder({"proposals": PROPOSALS[:1]})
    ProposalsWidget(session=session, open_only=True)
    assert session.calls == [("proposals", True)]


@pytest.mark.chain
def test_vote_button_uses_the_real_cli_and_reports_its_answer(devchain_url, tmp_path):
    from decentralml_jupyter.chain import Chain
    from decentralml_jupyter.protocol import encoders
    from decentralml_jupyter.protocol.client import ProtocolClient
    from decentralml_jupyter.protocol.indexer import Indexer

    chain = Chain(devchain_url)
    with ProtocolClient(chain, Indexer(chain, tmp_path / "i.sqlite")) as proto:
        cid = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
        validators = [chain.address(v) for v in ("Dev1", "Dev2")]
        mid = proto.register_model("//Alice", "w", cid, cid, validators=validators)
        mid = mid.created_id("model")
        proto.stake("//Charlie", mid, 10**12)
        action = encoders.action_from_params("ApproveModel")
        pid = proto.propose("//Alice", mid, action, 50).created_id("proposal")
    with Session(url=devchain_url, key="//Charlie") as charlie:
        widget = ProposalsWidget(session=charlie, open_only=True)
        assert str(pid) in widget.buttons
        widget.buttons[str(pid)][0].click()  # aye, signed by Charlie, who staked
        assert widget.last_vote.receipt.success is True
        assert f"aye on proposal {pid}" in widget.status.value
        assert "✓ included" in widget.status.value
        shown = next(p for p in widget.proposals if p["id"] == pid)
        assert shown["ayes"] == 10**12  # reloaded: the tally moved
        # a vote the protocol refuses (no such proposal): the error and its hint, buttons back on
        info = next(p for p in charlie.proposals() if p.id == pid)
        widget.set_data([dataclasses.replace(info, id=999_999)])
        _refused_vote(widget)


def _refused_vote(widget) -> None:
    widget.buttons["999999"][1].click()
    assert widget.last_vote is None
    assert "unknown proposal 999999" in widget.status.value and "hint" in widget.status.value
    assert not any(b.disabled for b in widget.buttons["999999"])


# -- model card -----------------------------------------------------------------------------


def _model(**fields) -> ModelInfo:
    base = {
        "id": 3, "name": "digits-mlp", "owner": ALICE, "status": "approved", "pool": BOB,
        "global_cid": "bafkreiglobal", "round": 2, "strategy": "fedavg",
        "validators": (BOB, CHARLIE), "total_stake": 5000, "description": "",
        "architecture_cid": "bafkarch", "weights_cid": "bafkw", "metric": "accuracy",
        "licence": "Apache-2.0", "jurisdictions": ("EU", "CH"), "reward_policy": {},
        "stake_asset": None, "eligibility": {}, "pool_threshold": 2, "created_block": 1,
        "created_extrinsic": 0,
    }  # fmt: skip
    return ModelInfo(**{**base, **fields})


def _round(round_id: int = 3, status: str = "open", submitted=(), **fields) -> RoundInfo:
    base = {
        "round_id": round_id, "model_id": 3, "status": status,
        "selected": (ALICE, BOB, CHARLIE), "submitted": tuple(submitted), "aggregate_cid": None,
        "metrics": {}, "rewards": {}, "slashes": {}, "number": None, "starter": ALICE,
        "proposal_id": None, "base_cid": "bafkbase", "clients": 3, "min_clients": 3,
        "eligible": 3, "reward": 0, "escrow": 0, "hints": {}, "dp": None, "seed": "0x00",
        "start_block": 10, "submit_deadline": 20, "aggregate_deadline": 30, "quorum": 2,
        "validators": 3, "digest": None, "note": "", "ended_block": None,
    }  # fmt: skip
    return RoundInfo(**{**base, **fields})


MODEL = _model()
HISTORY = [
    _round(
        1, "finalized", aggregate_cid="bafk1", number=1, metrics={"accuracy": 0.61, "loss": 1.2}
    ),
    _round(
        2, "finalized", aggregate_cid="bafk2", number=2, metrics={"accuracy": 0.83, "loss": 0.5}
    ),
]


def test_model_card_shows_owner_licence_jurisdictions_cid_and_history():
    setup = {
        "data": {"input_shape": [64], "dtype": "float32", "label": "classes:10", "features": []},
        "training": {"optimizer": "Adam", "learning_rate": 0.01, "loss": "sparse_ce"},
    }
    from decentralml_jupyter.protocol.values import ReputationInfo

    reputation = [
        ReputationInfo(BOB, 3, 1, 1, 200_000, 7, 10),
        ReputationInfo(ALICE, 3, 2, 0, 1_500_000, 30, 0),
    ]
    session = Recorder(
        {"model": MODEL, "round_history": HISTORY, "model_setup": setup, "reputation": reputation}
    )
    card = ModelCard(3, session=session)
    assert session.calls == [
        ("model", 3), ("round_history", 3), ("model_setup", 3), ("reputation", 3),
    ]  # fmt: skip
    html = card.card.value
    for text in ("digits-mlp (#3)", ALICE, "Apache-2.0", "EU, CH", "bafkreiglobal", "fedavg"):
        assert text in html
    # what it takes and how it trains, and its stake in the chain's token
    assert "(64,) float32, labels classes:10" in html
    assert "Adam (learning rate 0.01), loss sparse_ce" in html and "5e-09 ROC" not in html
    assert 'title="5000">0.000000005 ROC' in html
    assert "<h4>History</h4>" in html and "bafk2" in html and "0.83" in html
    assert "<svg" in html and "round 2: accuracy 0.83" in html
    # its workers by reputation, the best first
    ranked = html[html.index("Workers by reputation") :]
    assert ranked.index(ALICE) < ranked.index(BOB) and "1500000" in ranked


def test_model_card_without_history_or_licence():
    card = ModelCard(model=_model(id=7, name="m", owner=BOB, jurisdictions=()))
    assert "History" not in card.card.value and "—" in card.card.value


# -- round dashboard ------------------------------------------------------------------------


def test_dashboard_renders_progress_metrics_rewards_and_slashes():
    board = RoundDashboard(3, session=Recorder({}), start=False)
    board.update(_round(3, "open", [ALICE]), history=HISTORY)
    assert board.worker_progress() == {ALICE: 1.0, BOB: 0.0, CHARLIE: 0.0}
    assert "1/3 submitted" in board.workers.value and "waiting" in board.workers.value
    final = _round(
        3,
        "finalized",
        [ALICE, BOB, CHARLIE],
        aggregate_cid="bafk3",
        metrics={"accuracy": 0.9, "loss": 0.3},
        rewards={ALICE: 700, BOB: 300},
        slashes={CHARLIE: 50},
    )
    board.update(final)
    assert "finalized" in board.header.value and "bafk3" in board.header.value
    assert "accuracy 0.9" in board.header.value
    # rounds 1-2 from history plus this one: three points per metric
    assert sorted(board.metrics_by_round) == [1.0, 2.0, 3.0]
    assert "round 3: accuracy 0.9" in board.plots.value
    assert "round 3: loss 0.3" in board.plots.value
    assert board.plots.value.count("<circle") == 6
    assert "rewards" in board.payouts.value and "700" in board.payouts.value
    assert "slashes" in board.payouts.value and "50" in board.payouts.value
    assert board.payouts.value.index("5GrwvaEF") < board.payouts.value.index("5FHneW")


def test_dashboard_polls_in_the_background_until_final():
    gate = threading.Event()
    states = iter(["open", "aggregating", "finalized"])

    def status(round_id):
        gate.wait(10)
        state = next(states)
        return _round(round_id, state, [ALICE] if state == "open" else [ALICE, BOB, CHARLIE])

    session = Recorder({"round": status, "round_history": HISTORY, "next_round": None})
    board = RoundDashboard(3, session=session, interval=0.01)
    # the poll blocks on the chain, yet this (the kernel's) thread goes on
    assert board.watching and board.polls == 0
    gate.set()
    board.join(10)
    assert not board.watching and board.polls == 3
    assert board.round["status"] == "finalized" and board.stop_button.disabled
    # history at the first poll and once final, the round at every poll
    assert [c[0] for c in session.calls].count("round_history") == 2
    assert [c for c in session.calls if c[0] == "round"] == [("round", 3)] * 3


def test_dashboard_stop_ends_polling():
    session = Recorder({"round": _round(3, "open"), "round_history": []})
    board = RoundDashboard(3, session=session, interval=0.01)
    board.stop()
    board.join(5)
    assert not board.watching


@pytest.mark.chain
def test_dashboard_with_a_real_session_shows_why_it_cannot_poll(devchain_url):
    with Session(url=devchain_url) as session:
        board = RoundDashboard(999999, session=session, interval=0.05)
        board.join(30)  # an unknown round: polling ends by itself, no stop()
    assert not board.watching
    assert "no round 999999" in board.status.value and "hint" in board.status.value


def test_dashboard_follows_a_plan_from_round_to_round():
    answers = {
        3: [_round(3, "open", rounds_left=1),
            _round(3, "finalized", [ALICE, BOB, CHARLIE], metrics={"accuracy": 0.5})],
        4: [_round(4, "open"),
            _round(4, "finalized", [ALICE, BOB, CHARLIE], metrics={"accuracy": 0.7})],
    }  # fmt: skip
    nexts = {3: _round(4, "open"), 4: None}
    session = Recorder(
        {
            "round": lambda rid: answers[rid].pop(0),
            "round_history": [],
            "next_round": lambda rnd: nexts[rnd.round_id],
        }
    )
    board = RoundDashboard(3, session=session, interval=0.01)
    board.join(10)
    assert not board.watching and board.round_id == 4
    assert [c[1] for c in session.calls if c[0] == "round"] == [3, 3, 4, 4]
    assert board.metrics_by_round == {3.0: {"accuracy": 0.5}, 4.0: {"accuracy": 0.7}}
    assert "Round 4" in board.header.value
    # without follow_plan it stops at the first round's end
    answers[3] = [_round(3, "finalized", [ALICE])]
    alone = RoundDashboard(3, session=session, interval=0.01, follow_plan=False)
    alone.join(10)
    assert alone.round_id == 3 and not alone.watching


def test_dashboard_header_counts_the_rounds_left_in_a_plan():
    board = RoundDashboard(3, session=Recorder({}), start=False)
    board.update(_round(3, "open", rounds_left=2))
    assert "2 more in its plan" in board.header.value
    board.update(_round(3, "open"))
    assert "more in its plan" not in board.header.value
