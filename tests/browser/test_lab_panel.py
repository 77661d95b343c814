"""JupyterLab in a real browser: the DecentralML side panel shows the dev chain (block height,
accounts, models, proposals), follows new blocks and votes; a notebook runs `%dfml`.
"""

from __future__ import annotations

import json
import re

import pytest

from decentralml_jupyter.cli import run

UNIT = 10**12
TIMEOUT_MS = 60_000  # JupyterLab's first load on two shared cores


@pytest.fixture(scope="module")
def dfml(devchain_url, storage_url):
    def call(*args: str, key: str = "//Alice"):
        return run(["--url", devchain_url, "--storage", storage_url, "--key", key, *args])

    return call


@pytest.fixture(scope="module")
def proposal(dfml, tmp_path_factory):
    """A model named `panel-demo` that Bob stakes on, with an open ApproveModel proposal."""
    from decentralml_jupyter import fl

    path = tmp_path_factory.mktemp("model") / "panel-demo.keras"
    fl.mlp(64, 10, hidden=(8,)).save(path)
    mid = dfml("model", "submit", str(path), "--validator", "Dev1", "--validator", "Dev2")[
        "model_id"
    ]
    dfml("stake", str(mid), str(25 * UNIT), key="//Bob")
    pid = dfml("propose", str(mid), "ApproveModel", "--deadline", "20")["proposal_id"]
    return mid, pid


def shown_block(page) -> int:
    text = page.inner_text('[data-dfml="block"]')
    return int(text.lstrip("#"))


def test_side_panel_shows_the_dev_chain_and_votes(page, proposal, dfml, screenshot):
    mid, pid = proposal
    page.click('li.lm-TabBar-tab[data-id="decentralml-panel"]', timeout=TIMEOUT_MS)
    panel = page.locator("#decentralml-panel")
    panel.locator('[data-dfml="block"]').wait_for(timeout=TIMEOUT_MS)
    head = dfml("chain", "status")["block"]
    assert shown_block(page) == head

    # the lists load with the status: dev accounts, the model, its proposal with vote buttons
    aye = panel.locator(f'[data-dfml="vote-{pid}-aye"]')
    aye.wait_for(timeout=TIMEOUT_MS)
    accounts = panel.locator('[data-dfml="accounts"]').inner_text()
    assert "Alice" in accounts and "Bob" in accounts
    assert "panel-demo" in panel.locator('[data-dfml="models"]').inner_text()
    assert "ApproveModel" in panel.locator('[data-dfml="proposals"]').inner_text()
    screenshot(page, "lab-panel")

    # a new block shows within a poll or two
    dfml("chain", "advance", "1")
    page.wait_for_function(
        "n => document.querySelector('[data-dfml=\"block\"]')?.textContent === '#' + n",
        arg=head + 1,
        timeout=15_000,
    )

    # Aye signs with the server's key (Bob, who staked), and the tally on chain moves
    aye.click()
    notice = panel.locator('[data-dfml="notice"]')
    notice.filter(has_text=f"voted aye on proposal {pid}").wait_for(timeout=TIMEOUT_MS)
    tally = next(p for p in dfml("proposals") if p["id"] == pid)
    assert tally["ayes"] == 25 * UNIT
    ayes = panel.locator(f'[data-dfml="ayes-{pid}"]')
    # the panel reloads after its vote; amounts in the chain's own token
    ayes.filter(has_text="25 ROC").wait_for(timeout=15_000)
    # u128 balances beyond 2^53 exactly, with every decimal the chain's 12 give them: Eve
    # receives 1.234567890123 ROC, and Alice (beyond 2^53 units) pays a fee
    dfml("account", "transfer", "Eve", "1234567890123")
    dfml("chain", "advance", "1")
    accounts = panel.locator('[data-dfml="accounts"]')
    rows = {a["name"]: a for a in dfml("account", "list")}
    for name in ("Alice", "Eve"):
        expected = in_tokens(rows[name]["free"])
        decimals = expected.split(" ")[0].partition(".")[2]
        assert name != "Eve" or len(decimals) >= 10, expected  # more than any float keeps
        accounts.filter(has_text=expected).wait_for(timeout=15_000)
    assert rows["Alice"]["free"] > 2**53
    screenshot(page, "lab-panel-voted")
    assert not [e for e in page.page_errors if "decentralml" in e.lower()]


def in_tokens(amount: int, decimals: int = 12, symbol: str = "ROC") -> str:
    """How the panel shows an amount: exact, every significant decimal, en-US grouping."""
    whole, frac = divmod(amount, 10**decimals)
    frac_text = f"{frac:0{decimals}d}".rstrip("0")
    return f"{whole:,}" + (f".{frac_text}" if frac_text else "") + f" {symbol}"


def test_the_command_palette_opens_and_refreshes_the_panel(page, screenshot):
    panel = page.locator("#decentralml-panel")
    page.click('li.lm-TabBar-tab[data-id="filebrowser"]', timeout=TIMEOUT_MS)
    panel.wait_for(state="hidden", timeout=TIMEOUT_MS)
    # the palette as its shortcut (Ctrl+Shift+C) opens it: a headless page has no focus to
    # send the keys to reliably
    page.evaluate("window.jupyterapp.commands.execute('apputils:activate-command-palette')")
    search = page.locator(".lm-CommandPalette-input")
    search.wait_for(state="visible", timeout=TIMEOUT_MS)
    search.fill("DecentralML")
    items = page.locator(".lm-CommandPalette-item:not(.lm-mod-hidden)")
    labels = items.all_inner_texts()
    assert any("Show the DecentralML panel" in x for x in labels), labels
    assert any("Refresh the DecentralML panel" in x for x in labels), labels
    screenshot(page, "lab-palette")
    items.filter(has_text="Show the DecentralML panel").first.click()
    panel.wait_for(state="visible", timeout=TIMEOUT_MS)
    panel.locator('[data-dfml="block"]').wait_for(timeout=TIMEOUT_MS)


def test_notebook_runs_dfml_magics(page, lab, devchain_url, screenshot):
    notebook = {
        "cells": [
            {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
             "source": source}
            for source in ("%load_ext decentralml_jupyter", "%dfml chain status")
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }  # fmt: skip
    (lab.root / "dfml.ipynb").write_text(json.dumps(notebook))
    page.evaluate("window.jupyterapp.commands.execute('docmanager:open', {path: 'dfml.ipynb'})")
    cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first
    cell.locator(".cm-content").click(timeout=TIMEOUT_MS)
    # run both cells as a person would, once the kernel is up
    page.wait_for_selector(
        '.jp-NotebookPanel:not(.lm-mod-hidden) [data-status="idle"]', timeout=TIMEOUT_MS
    )
    page.keyboard.press("Shift+Enter")
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output").last
    output.filter(has_text=devchain_url).wait_for(timeout=TIMEOUT_MS)
    text = output.inner_text()
    assert "statemine" in text and re.search(r"\bTrue\b|running", text)
    screenshot(page, "lab-notebook")


def test_settings_set_the_poll_interval(browser, lab, screenshot):
    """The panel's settings (schema/panel.json) through JupyterLab's settings: a 1 s poll
    interval makes it ask the server's status about every second (3 s by default)."""
    import time

    import requests

    from tests.browser.conftest import open_lab

    url = f"{lab.base}/lab/api/settings/decentralml-jupyter:panel"
    auth = {"Authorization": f"token {lab.token}"}
    schema = requests.get(url, headers=auth, timeout=30).json()["schema"]
    assert schema["properties"]["pollInterval"]["default"] == 3

    def polls(seconds: float) -> tuple[str | None, int]:
        page = open_lab(browser, lab)
        try:
            page.click('li.lm-TabBar-tab[data-id="decentralml-panel"]', timeout=TIMEOUT_MS)
            panel = page.locator("#decentralml-panel")
            panel.locator('[data-dfml="block"]').wait_for(timeout=TIMEOUT_MS)
            asked: list[float] = []
            page.on(
                "request",
                lambda r: asked.append(time.monotonic()) if "/decentralml/status" in r.url else 0,
            )
            page.wait_for_timeout(seconds * 1000)
            if seconds == 6:
                screenshot(page, "lab-panel-settings")
            return panel.get_attribute("data-poll-ms"), len(asked)
        finally:
            page.close()

    assert requests.put(
        url, headers=auth, json={"raw": json.dumps({"pollInterval": 1})}, timeout=30
    ).status_code in (200, 204)
    try:
        every, count = polls(6)
        assert every == "1000" and count >= 5, (every, count)
    finally:
        requests.put(url, headers=auth, json={"raw": "{}"}, timeout=30)
    every, count = polls(6)
    assert every == "3000" and count <= 3, (every, count)
