"""`%load_ext decentralml_jupyter` imports nothing heavy (in a fresh process); how fast it is
is measured by benchmarks/bench_load_ext.py, not asserted on a busy machine."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, sys, time
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
t = time.perf_counter()
ip.run_line_magic("load_ext", "decentralml_jupyter")
elapsed = time.perf_counter() - t
ip.run_line_magic("config", 'DFMLMagics.url = "ws://127.0.0.1:1"')
ip.run_line_magic("dfml", "--help")  # building the parser must stay light too
heavy = sorted(
    m for m in sys.modules
    if m.split(".")[0] in ("tensorflow", "keras", "substrateinterface", "ipywidgets", "flwr")
)
print(json.dumps({"elapsed": elapsed, "heavy": heavy,
                  "magics": sorted(ip.magics_manager.magics["line"])}))
"""


def test_load_ext_imports_no_tensorflow_nor_substrate():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert "dfml" in report["magics"]


def test_unload_removes_the_magics(ip):
    ip.run_line_magic("unload_ext", "decentralml_jupyter")
    try:
        assert "dfml" not in ip.magics_manager.magics["line"]
        assert "dfml" not in ip.magics_manager.magics["cell"]
    finally:
        ip.run_line_magic("load_ext", "decentralml_jupyter")
    assert "dfml" in ip.magics_manager.magics["cell"]
