"""Notebook 7 in a real browser: the DecentralML side panel loads there too (the plugin needs
no JupyterLab-only shell), opens from its command and shows the dev chain."""

from __future__ import annotations

import pytest

from tests.browser.conftest import LOAD_TIMEOUT_MS, start_lab
from tests.conftest import require


@pytest.fixture(scope="module")
def notebook7(devchain_url, storage_url, tmp_path_factory):
    require("notebook", "Notebook 7: pip install notebook (in the [test] extra)")
    with start_lab(tmp_path_factory.mktemp("nb7"), devchain_url, storage_url, "notebook") as nb:
        yield nb


def test_the_panel_loads_in_notebook_7(browser, notebook7, devchain_url, screenshot):
    from decentralml_jupyter.cli import run

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{notebook7.base}/tree?token={notebook7.token}", timeout=LOAD_TIMEOUT_MS)
        page.wait_for_function("() => window.jupyterapp?.commands", timeout=LOAD_TIMEOUT_MS)
        page.wait_for_function(
            "() => window.jupyterapp.commands.hasCommand('decentralml:show-panel')",
            timeout=LOAD_TIMEOUT_MS,
        )
        page.evaluate("window.jupyterapp.commands.execute('decentralml:show-panel')")
        panel = page.locator("#decentralml-panel")
        panel.wait_for(state="visible", timeout=LOAD_TIMEOUT_MS)
        block = panel.locator('[data-dfml="block"]')
        block.wait_for(timeout=LOAD_TIMEOUT_MS)
        head = run(["--url", devchain_url, "chain", "status"])["block"]
        assert int(block.inner_text().lstrip("#")) >= head - 1
        # the lists load after the status (the block shows first): wait for them, then check
        accounts = panel.locator('[data-dfml="accounts"]')
        accounts.filter(has_text="Alice").wait_for(timeout=LOAD_TIMEOUT_MS)
        assert "Bob" in accounts.inner_text()
        screenshot(page, "notebook7-panel")
        assert not [e for e in errors if "decentralml" in e.lower()]
    finally:
        page.close()
