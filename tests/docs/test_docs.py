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


def test_python_api_reference_is_generated_from_the_code(site):
    """Session, every value and receipt class, the widgets and the errors have entries made by
    autodoc from the code (one anchor per documented object)."""
    from decentralml_jupyter import errors, receipts
    from decentralml_jupyter.jupyter import widgets
    from decentralml_jupyter.protocol import values
    from decentralml_jupyter.session import Session

    html = (site / "reference" / "api.html").read_text()
    anchors = set(re.findall(r'<dt class="sig sig-object py" id="([^"]+)"', html))
    public = [m for m in vars(Session) if not m.startswith("_") and callable(getattr(Session, m))]
    assert {"submit_model", "start_rounds", "watch_round", "models"} <= set(public)
    for method in public:
        assert f"decentralml_jupyter.session.Session.{method}" in anchors, method
    classes = [n for n, v in vars(values).items() if isinstance(v, type) and n[0] != "_"]
    classes = [n for n in classes if getattr(values, n).__module__ == values.__name__]
    assert {"ModelInfo", "RoundInfo", "ProposalInfo"} <= set(classes)
    for name in classes:
        assert f"decentralml_jupyter.protocol.values.{name}" in anchors, name
    for module in (receipts, widgets):
        for name in module.__all__:
            assert f"{module.__name__}.{name}" in anchors, name
    assert "decentralml_jupyter.errors.StorageError" in anchors and errors.StorageError
    assert "decentralml_jupyter.chain.Receipt" in anchors


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


@pytest.mark.parametrize("cwd", ["notebooks", "."])
def test_tutorial_outputs_land_where_git_ignores_them(cwd):
    """A tutorial run from notebooks/ (papermill --cwd notebooks, Binder's JupyterLab) or from
    the repository's root writes under its default out_dir, which git must ignore."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    written = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        (out_dir,) = re.findall(r'^out_dir = "([^"]+)"', params.source, re.M)
        written.append(f"{Path(cwd) / out_dir}/summary.json")
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "--verbose", "--non-matching", *written],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    not_ignored = [ln.split("\t")[-1] for ln in done.stdout.splitlines() if ln.startswith("::")]
    assert not_ignored == [] and len(done.stdout.splitlines()) == len(written), done.stdout
