"""The side panel when its services are gone: it says what went wrong and what to do, in
its message line and in each section, instead of failing silently."""

from __future__ import annotations

import pytest

from tests.browser.conftest import open_lab, start_lab
from tests.conftest import dead_services

TIMEOUT_MS = 60_000  # JupyterLab's first load on two shared cores


@pytest.fixture(scope="module")
def dead_lab(tmp_path_factory):
    """A lab whose chain refuses connections and whose storage never answers."""
    with dead_services() as (url, storage):
        with start_lab(tmp_path_factory.mktemp("dead-lab"), url, storage) as lab:
            yield lab, url


def test_the_panel_shows_a_dead_chain_with_the_fix(browser, dead_lab, screenshot):
    lab, url = dead_lab
    page = open_lab(browser, lab)
    try:
        page.click('li.lm-TabBar-tab[data-id="decentralml-panel"]', timeout=TIMEOUT_MS)
        panel = page.locator("#decentralml-panel")
        message = panel.locator('[data-dfml="message"].dfml-error')
        message.wait_for(timeout=TIMEOUT_MS)
        screenshot(page, "lab-panel-dead-chain")
        text = message.inner_text()
        assert "dfml chain up" in text, text
        assert f"no chain answers at {url} — start one" in text  # what is wrong — what to do
        for section in ("accounts", "models", "proposals", "rounds"):
            body = panel.locator(f'[data-dfml="{section}"]').inner_text()
            assert body == "chain not running", (section, body)
        assert not [e for e in page.page_errors if "decentralml" in e.lower()]
    finally:
        page.close()
