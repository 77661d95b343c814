"""How long `%load_ext decentralml_jupyter` takes in a fresh process (target: under 1 s), and
that it imports nothing heavy. Prints the median of a few runs."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

PROBE = r"""
import json, sys, time
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
t = time.perf_counter()
ip.run_line_magic("load_ext", "decentralml_jupyter")
elapsed = time.perf_counter() - t
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print(json.dumps({"elapsed": elapsed, "heavy": heavy}))
"""


def main(runs: int = 5) -> None:
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
        report = json.loads(out.stdout.strip().splitlines()[-1])
        assert report["heavy"] == [], report
        times.append(report["elapsed"])
    median = statistics.median(times)
    print(f"%load_ext: median {median * 1000:.0f} ms over {runs} runs (target < 1000 ms)")
    print(f"ratio to the target: {median / 1.0:.2f}")


if __name__ == "__main__":
    main()
