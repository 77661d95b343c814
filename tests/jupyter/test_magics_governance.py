"""A model's life from a notebook: a Keras variable submitted by name, staked, proposed in a
`%%dfml` cell, voted on with the proposals widget, and shown in a model card (real chain)."""

from __future__ import annotations

import pytest

from decentralml_jupyter.jupyter import ModelCard, ProposalsWidget
from tests.conftest import require

pytestmark = pytest.mark.chain
UNIT = 10**12


@pytest.fixture()
def gov_ip(chain_ip, storage_url, tmp_path, monkeypatch):
    monkeypatch.setenv("DFML_HOME", str(tmp_path / "home"))  # a fresh protocol index
    chain_ip.run_line_magic("config", f'DFMLMagics.storage = "{storage_url}"')
    yield chain_ip
    chain_ip.run_line_magic("config", 'DFMLMagics.key = "//Alice"')


def test_model_to_vote_from_a_notebook(gov_ip):
    keras = require("keras")
    inputs = keras.Input(shape=(8,))
    gov_ip.user_ns["tiny"] = keras.Model(inputs, keras.layers.Dense(2)(inputs))

    sub = gov_ip.run_cell_magic(
        "dfml",
        "-o sub model submit tiny",
        "license: apache-2.0\njurisdiction: [EU, CH]\nvalidator: [Dev1, Dev2, Dev3]\n",
    )
    assert sub["receipt"]["success"] and gov_ip.user_ns["sub"] == sub
    mid = sub["model_id"]

    card = ModelCard(mid)
    alice = gov_ip.run_line_magic("dfml", "account balance Alice")["address"]
    for text in (f"tiny (#{mid})", alice, "apache-2.0", "EU, CH", sub["pool"]):
        assert text in card.card.value

    gov_ip.run_line_magic("config", 'DFMLMagics.key = "//Bob"')
    gov_ip.run_line_magic("dfml", f"stake {mid} {25 * UNIT}")
    gov_ip.run_line_magic("config", 'DFMLMagics.key = "//Alice"')
    prop = gov_ip.run_cell_magic("dfml", f"propose {mid} ApproveModel", "deadline: 20\n")
    pid = str(prop["proposal_id"])

    widget = ProposalsWidget(open_only=True)
    assert pid in widget.buttons
    # the widget follows %config: this click votes as Bob, whose stake weighs the tally
    gov_ip.run_line_magic("config", 'DFMLMagics.key = "//Bob"')
    widget.buttons[pid][0].click()
    assert widget.last_vote.receipt.success, widget.status.value
    tallied = next(p for p in widget.proposals if str(p["id"]) == pid)
    assert tallied["ayes"] == 25 * UNIT and tallied["nays"] == 0
    assert "✓ included" in widget.status.value
