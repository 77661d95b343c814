"""The demo: tutorial 01 (notebooks/01-quickstart.ipynb) run headless with papermill.

The notebook brings up a dev network (chain, storage, workers, validators), submits a model,
has it approved by a stake-weighted vote, runs federated rounds, plots the global model's
accuracy and fetches the trained model, then stops everything. Run by `make demo`; results go
to out/demo/: the executed notebook, accuracy.png, results.json and trained.keras.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01-quickstart.ipynb"
OUT = Path("out/demo")


def free_port(preferred: int) -> int:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    from decentralml_jupyter import procs

    return procs.free_port()  # leave a service the user already runs alone


def main() -> int:
    import logging

    import papermill

    # papermill hands the notebook's outputs to its logger as they come: show them plainly
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("papermill").addHandler(handler)
    logging.getLogger("papermill").setLevel(logging.INFO)

    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT.resolve()
    url = f"ws://127.0.0.1:{free_port(9944)}"
    storage = f"http://127.0.0.1:{free_port(5001)}"
    executed = out / NOTEBOOK.name
    params = {
        "url": url,
        "storage": storage,
        "devnet": True,
        "workers": 5,
        "validators": 3,
        "rounds": 3,
        "epochs": 2,
        "out_dir": str(out),
    }
    print(f"== running {NOTEBOOK.relative_to(ROOT)} headless (papermill) on {url}", flush=True)
    t0 = time.monotonic()
    try:
        papermill.execute_notebook(
            str(NOTEBOOK),
            str(executed),
            parameters=params,
            kernel_name="python3",
            cwd=str(out),
            log_output=True,  # the notebook's prints stream here as it runs
            progress_bar=False,
        )
    except papermill.PapermillExecutionError as err:
        print(f"\nthe notebook failed in cell {err.exec_count}: {err.ename}: {err.evalue}")
        print(f"see the executed notebook: {executed}")
        return 1
    finally:
        # the notebook's last cell stops the dev network; a failed cell skips it
        from decentralml_jupyter.agents import devnet

        try:
            devnet.down(url)
        except Exception:
            pass  # already down
    summary = json.loads((out / "summary.json").read_text())
    summary["seconds"] = round(time.monotonic() - t0, 1)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    print("\n== results")
    print(f"  accuracy per round: {[round(a, 3) for a in summary['accuracy']]}")
    print(f"  executed notebook:  {OUT / executed.name}")
    print(f"  accuracy plot:      {OUT / 'accuracy.png'}")
    print(f"  summary:            {OUT / 'results.json'}")
    print(f"  trained model:      {OUT / 'trained.keras'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
