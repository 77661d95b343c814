"""Run a tutorial notebook headless with papermill against a fresh dev network on free ports.

The notebook brings its own dev network up and down (`devnet=True`); the fixture only picks the
ports and, whatever happened in the notebook, stops every process left on them by pid.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import free_port

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def outputs_text(nb) -> str:
    """Every stream and plain-text output of an executed notebook, joined."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out:
                parts.append(out["data"].get("text/plain", ""))
            elif out.get("output_type") == "error":
                parts.append("\n".join(out.get("traceback", [])))
    return "\n".join(parts)


@pytest.fixture()
def run_notebook(tmp_path):
    """Execute notebooks/NAME.ipynb with parameters; returns (executed nb, summary dict)."""
    import nbformat
    import papermill

    urls: list[tuple[str, str]] = []

    def run(name: str, **parameters):
        url = f"ws://127.0.0.1:{free_port()}"
        storage = f"http://127.0.0.1:{free_port()}"
        urls.append((url, storage))
        out_dir = tmp_path / name
        params = {"url": url, "storage": storage, "out_dir": str(out_dir), **parameters}
        executed = tmp_path / f"{name}.executed.ipynb"
        papermill.execute_notebook(
            str(NOTEBOOKS / f"{name}.ipynb"),
            str(executed),
            parameters=params,
            kernel_name="python3",
            cwd=str(tmp_path),
            execution_timeout=300,
            progress_bar=False,
        )
        nb = nbformat.read(executed, as_version=4)
        summary_file = out_dir / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        return nb, summary

    yield run
    # A failed cell skips the notebook's own clean-up cell: stop whatever is left, by pid.
    from decentralml_jupyter.agents import devnet
    from decentralml_jupyter.chain import devchain
    from decentralml_jupyter.storage import storage_down

    for url, storage in urls:
        for stop, where in ((devnet.down, url), (storage_down, storage)):
            try:
                stop(where)
            except Exception:
                pass  # nothing was left there
        devchain.down(int(url.rsplit(":", 1)[1]))
