"""numba is optional (the ``fast`` extra): without it FedAvg takes the numpy path, and the bytes
of the aggregate are the same as the compiled pass gives.

The run without numba is a fresh interpreter in which ``import numba`` fails, as it does where
the extra is not installed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import require

# Large enough that the compiled pass takes every layer (over its MIN_WORK products) and splits
# the biggest over threads; float32 updates, as workers send them.
SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    {block}
    import numpy as np
    from decentralml_jupyter.fl import strategies
    from decentralml_jupyter.fl.strategies import ClientUpdate, FedAvg

    rng = np.random.default_rng(7)
    shapes = [(1 << 20,), (300, 700), (10,)]
    like = [np.zeros(s, np.float32) for s in shapes]
    updates = [
        ClientUpdate(
            f"c{{i:02d}}",
            [(rng.standard_normal(s) * 10.0 ** rng.integers(-3, 3)).astype(np.float32)
             for s in shapes],
            int(rng.integers(1, 5000)),
        )
        for i in range(9)
    ]
    out = FedAvg().aggregate(like, updates)
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in out))
    loaded = sys.modules.get("numba") is not None
    print(strategies._fedavg_kernel() is not None, loaded, digest.hexdigest())
    """
)


def _run(block: str) -> tuple[str, str, str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(block=block)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    compiled, imported, digest = done.stdout.split()[-3:]
    return compiled, imported, digest


def test_without_numba_fedavg_takes_the_numpy_path_and_gives_the_same_bits():
    require("numba")  # the dev extra has it: the compiled pass is what we compare with
    # None in sys.modules: `import numba` raises ImportError, as when it is not installed
    without = _run("sys.modules['numba'] = None")
    with_numba = _run("")
    assert without[:2] == ("False", "False")  # the numpy path, and numba never loaded
    assert with_numba[:2] == ("True", "True")  # the compiled pass
    assert without[2] == with_numba[2]
