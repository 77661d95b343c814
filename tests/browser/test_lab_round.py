"""JupyterLab in a real browser, against a whole dev network: a notebook cell starts a
federated round and the round dashboard in the output updates live until it is finalized.
"""

from __future__ import annotations

import json
import time

import pytest

from decentralml_jupyter.cli import run
from tests.conftest import free_port

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def training_model(tmp_path_factory):
    """A dev network (2 workers, 2 validators) with a model in training; stopped by pid."""
    from decentralml_jupyter import fl

    url, storage = f"ws://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"

    def dfml(*args, key="//Alice"):
        return run(["--url", url, "--storage", storage, "--key", key, *args])

    dfml("devnet", "up", "--workers", "2", "--validators", "2", "--clock", "1")
    try:
        path = tmp_path_factory.mktemp("model") / "lab-round.keras"
        fl.mlp(64, 10, hidden=(16,)).save(path)
        mid = str(dfml("model", "submit", str(path))["model_id"])
        deadline = time.monotonic() + 180
        while len(dfml("stakes", "--model", mid)) < 2:  # the workers stake by themselves
            assert time.monotonic() < deadline, "workers did not stake"
            time.sleep(0.5)
        pid = dfml("propose", mid, "ApproveModel", "--deadline", "30")["proposal_id"]
        dfml("vote", str(pid), "aye", key="//Dev3")
        dfml("chain", "advance", "31")
        while dfml("model", "show", mid)["status"] != "approved":
            assert time.monotonic() < deadline, "the model was not approved"
            time.sleep(0.5)
        dfml("model", "start", mid)
        yield url, storage, mid
    finally:
        dfml("devnet", "down")


def test_a_cell_starts_a_round_and_the_dashboard_follows_it(page, lab, training_model, screenshot):
    url, storage, mid = training_model
    sources = [
        "%load_ext decentralml_jupyter",
        f'%config DFMLMagics.url = "{url}"\n%config DFMLMagics.storage = "{storage}"\n'
        '%config DFMLMagics.key = "//Alice"',
        f"r = %dfml round start {mid} --clients 2 --epochs 1 --deadline 60 "
        "--aggregate-deadline 60\n"
        "from decentralml_jupyter.jupyter import RoundDashboard\n"
        "RoundDashboard(r['round_id'], interval=1.0)",
    ]
    notebook = {
        "cells": [
            {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
             "source": s}
            for s in sources
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }  # fmt: skip
    (lab.root / "round.ipynb").write_text(json.dumps(notebook))
    page.evaluate("window.jupyterapp.commands.execute('docmanager:open', {path: 'round.ipynb'})")
    panel = ".jp-NotebookPanel:not(.lm-mod-hidden)"
    page.locator(f"{panel} .jp-Cell").first.locator(".cm-content").click(timeout=TIMEOUT_MS)
    page.wait_for_selector(f'{panel} [data-status="idle"]', timeout=TIMEOUT_MS)
    for _ in sources:
        page.keyboard.press("Shift+Enter")
    # the widget renders in the output and moves from open to finalized by itself
    dashboard = page.locator(f"{panel} .jp-OutputArea-output").last
    dashboard.filter(has_text="round").wait_for(timeout=TIMEOUT_MS)
    dashboard.filter(has_text="finalized").wait_for(timeout=240_000)
    screenshot(page, "lab-round-dashboard")
    text = dashboard.inner_text()
    assert "finalized" in text

    # the plots read like plots: the model's metric by its name and the loss, over rounds
    plots = dashboard.locator(".dfml-plots")
    plots.scroll_into_view_if_needed()
    plots.screenshot(path=str(screenshot.dir / "lab-round-plots.png"))
    charts = plots.locator("svg")
    assert [charts.nth(i).get_attribute("data-metric") for i in range(charts.count())] == [
        "accuracy",
        "loss",
    ]
    assert "ppm" not in plots.inner_html()
    for i in range(charts.count()):
        chart = charts.nth(i)
        y_ticks = chart.locator("text.y-tick").all_text_contents()
        x_ticks = chart.locator("text.x-tick").all_text_contents()
        assert len(x_ticks) == len(set(x_ticks)) >= 1, x_ticks  # one label per round
        assert [int(x) for x in x_ticks] == sorted(int(x) for x in x_ticks)
        assert chart.locator("text.x-title").all_text_contents() == ["round"]
        values = [float(y) for y in y_ticks]
        assert values[0] == 0 and values == sorted(values) and len(values) >= 3, y_ticks
        if i == 0:  # accuracy: a fraction, drawn 0..1 with round ticks
            assert y_ticks == ["0", "0.25", "0.5", "0.75", "1"]
        assert chart.locator("circle").count() >= 1
