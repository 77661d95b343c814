"""Browser fixtures: Debian's Chromium driven by Playwright (never a downloaded browser), and a
JupyterLab server on 127.0.0.1 against the session's dev chain, each stopped by its pid.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from decentralml_jupyter import procs
from tests.conftest import require, stop_process_tree, unavailable

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "out" / "screenshots"
LOAD_TIMEOUT_MS = 60_000  # JupyterLab's first load on two shared cores
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _install_chromium() -> str | None:
    """apt-get install chromium where we may (root, Debian); None where we may not."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode != 0:
            return None
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium") or _install_chromium()
    if path is None:
        unavailable("no Chromium: install Debian's chromium (apt-get install chromium, as root)")
    return path


@pytest.fixture(scope="session")
def browser(chromium, tmp_path_factory):
    """A fresh Chromium profile; Playwright talks to it over a pipe, no network needed."""
    sync_api = require("playwright.sync_api", "pip install -e '.[test]'")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@dataclass
class Lab:
    base: str
    token: str
    root: Path


_stop = stop_process_tree


@pytest.fixture(scope="module")
def lab(devchain_url, storage_url, tmp_path_factory) -> Iterator[Lab]:
    """`jupyter lab` whose extension and kernels use the dev chain; it signs votes as Bob."""
    with start_lab(tmp_path_factory.mktemp("lab"), devchain_url, storage_url) as running:
        yield running


@contextlib.contextmanager
def start_lab(tmp: Path, url: str, storage: str, app: str = "jupyterlab") -> Iterator[Lab]:
    """`jupyter lab` (or, with ``app="notebook"``, Notebook 7) on 127.0.0.1 with the extension
    pointed at ``url`` and ``storage``."""
    if not (ROOT / "decentralml_jupyter/labextension/package.json").exists():
        unavailable("the side panel is not built (needs Node.js 20+ and npm): run make setup")
    for d in ("config", "runtime", "root", "settings", "workspaces", "ipython"):
        (tmp / d).mkdir()
    # no "get Jupyter news?" toast over the page (and no request for it)
    notes = tmp / "settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
    notes.parent.mkdir(parents=True)
    notes.write_text('{"fetchNews": "false", "checkForUpdates": false}')
    port, token = procs.free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "IPYTHONDIR": str(tmp / "ipython"),
        "DFML_URL": url,
        "DFML_STORAGE": storage,
        "DFML_KEY": "//Bob",
    }
    log = open(tmp / "lab.log", "wb")  # noqa: SIM115 - the process writes it until stopped
    if app == "jupyterlab":
        # nothing is fetched from outside: no news, no update check, no extension listing
        own = ["--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]  # fmt: skip
        cls = "LabApp"
    else:
        own, cls = [], "JupyterNotebookApp"
    proc = subprocess.Popen(
        [sys.executable, "-m", app, "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
         f"--ServerApp.root_dir={tmp / 'root'}", "--allow-root",
         f"--{cls}.user_settings_dir={tmp / 'settings'}",
         f"--{cls}.workspaces_dir={tmp / 'workspaces'}",
         f"--{cls}.expose_app_in_browser=True", *own],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{app} did not start: {(tmp / 'lab.log').read_text()}")
            try:
                if requests.get(f"{base}/api/status", params={"token": token}, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        yield Lab(base, token, tmp / "root")
    finally:
        _stop(proc)
        log.close()


@pytest.fixture()
def screenshot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path))
        return path

    take.dir = SCREENSHOTS  # for a screenshot of one element
    return take


def open_lab(browser, lab: Lab):
    """A page showing ``lab``, its page errors collected in ``page.page_errors``."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{lab.base}/lab?reset&token={lab.token}", timeout=LOAD_TIMEOUT_MS)
    page.wait_for_selector("#jp-main-dock-panel", timeout=LOAD_TIMEOUT_MS)
    page.page_errors = errors
    return page


@pytest.fixture(scope="module")
def page(browser, lab):
    page = open_lab(browser, lab)
    try:
        yield page
    finally:
        page.close()
