"""Importing the package is cheap (no TensorFlow) and core code needs no Flower."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_import_does_not_load_tensorflow():
    r = _run(
        """
        import sys
        import decentralml_jupyter.fl as fl
        from decentralml_jupyter.fl import FedAvg, weights_to_bytes, check_update, partition
        assert "tensorflow" not in sys.modules, "tensorflow imported"
        assert "keras" not in sys.modules, "keras imported"
        print("ok", len(fl.__all__))
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")


def test_core_works_without_flwr():
    # A None entry in sys.modules makes `import flwr` fail, as if it were not installed.
    r = _run(
        """
        import sys
        sys.modules["flwr"] = None
        import numpy as np
        from decentralml_jupyter.fl import ClientUpdate, make_strategy, weights_hash
        ups = [ClientUpdate(f"c{i}", [np.full((2, 2), i, np.float32)], 1) for i in range(5)]
        for name in ("fedavg", "fedmedian", "trimmed_mean", "krum", "fedadam"):
            out = make_strategy(name).aggregate([np.zeros((2, 2), np.float32)], ups)
            weights_hash(out)
        print("ok")
        """
    )
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_unknown_attribute():
    import pytest

    import decentralml_jupyter.fl as fl

    with pytest.raises(AttributeError):
        fl.no_such_thing  # noqa: B018
