"""The documentation site builds with warnings as errors, its CLI reference covers every verb of
the parser, its notebooks pass nbval, and the tutorials are ready for papermill."""

from __future__ import annotations

import html as html_lib
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _verbs():
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from dfml_reference import verbs
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    from decentralml_jupyter.cli import build_parser

    return [" ".join(path) for path, _ in verbs(build_parser("dfml"))]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q", DOCS, out],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return out


def test_site_builds_strict(site):
    for page in ("index", "architecture", "results", "tutorials", "cli", "concepts/rounds"):
        assert (site / f"{page}.html").exists(), page
    assert (site / "notebooks" / "protocol-in-process.html").exists()
    # the diagrams are files of the site, not fetched from anywhere
    assert (site / "_images" / "round-lifecycle.svg").exists()


def test_cli_reference_is_generated_from_the_parser(site):
    html = (site / "reference" / "cli.html").read_text()
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", html))
    verbs = _verbs()
    assert {"round start", "devnet up", "task accept", "model submit", "stake"} <= set(verbs)
    for verb in verbs:  # each verb has its usage line
        assert f"dfml {verb} [-h]" in text, verb
    assert "--noise-multiplier" in text and "--stake-asset" in text


def test_docs_notebooks_pass_nbval():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval",
            "--nbval-sanitize-with",
            str(DOCS / "sanitize.cfg"),
            "-p",
            "no:cacheprovider",
            "-q",
            str(DOCS / "notebooks"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_tutorial_is_ready_for_papermill(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged parameters"
    for name in ("url", "storage", "out_dir"):
        assert f"\n{name} = " in "\n" + tagged[0].source, name
    # stored clean: outputs belong to runs, not to the repository
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
