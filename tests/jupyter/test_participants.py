"""`%dfml worker join|status|leave`: a worker inside the kernel, on a DataFrame of the kernel,
against the real dev chain and storage service."""

from __future__ import annotations

import numpy as np
import pytest
from IPython.core.error import UsageError as IPythonUsageError

from tests.conftest import require, wait_until

UNIT = 10**12


@pytest.fixture()
def kernel(chain_ip, storage_url):
    chain_ip.run_line_magic("config", f'DFMLMagics.storage = "{storage_url}"')
    return chain_ip


def test_a_worker_joins_from_the_kernel_and_leaves(kernel):
    keras = require("keras")
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    frame["y"] = frame["a"] * 2.0 - frame["c"]
    inputs = keras.Input(shape=(3,))
    kernel.user_ns["tiny"] = keras.Model(inputs, keras.layers.Dense(1)(inputs), name="tiny")
    kernel.user_ns["mine"] = frame
    kernel.user_ns["broken"] = frame.drop(columns=["b"])
    sub = kernel.run_line_magic(
        "dfml",
        "model submit tiny --validator Dev1 --validator Dev2 --feature a --feature b --feature c",
    )
    mid = sub["model_id"]

    def stake_of(name: str, status: str = "active") -> int:
        rows = kernel.run_line_magic("dfml", f"stakes --model {mid} --account {name}")
        return sum(r["amount"] for r in rows if r["status"] == status)

    # data that does not fit: one clear message with what to do, and nothing staked
    with pytest.raises(IPythonUsageError, match="lacks the model's feature column\\(s\\) b"):
        kernel.run_line_magic("dfml", f"--key //Dev4 worker join {mid} --data broken --target y")
    assert stake_of("Dev4") == 0

    worker = kernel.run_line_magic(
        "dfml", f"--key //Dev4 worker join {mid} --data mine --target y --stake {3 * UNIT}"
    )
    try:
        assert worker.running and worker.role == "worker"
        wait_until(lambda: stake_of("Dev4") == 3 * UNIT, 60, "the in-kernel worker's stake")
        status = kernel.run_line_magic("dfml", "worker status")
        assert [(s["model_id"], s["stake"], s["running"]) for s in status] == [
            (mid, 3 * UNIT, True)
        ]
        with pytest.raises(IPythonUsageError, match="already runs a worker"):
            kernel.run_line_magic("dfml", f"--key //Dev4 worker join {mid} --data mine --target y")
        bundle = worker._repr_mimebundle_()  # a notebook shows it as its live status widget
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        assert "application/vnd.jupyter.widget-view+json" in data
    finally:
        left = kernel.run_line_magic("dfml", f"worker leave {mid}")
    assert [s["running"] for s in left] == [False] and not worker.running
    assert stake_of("Dev4") == 0  # unstaked: released after the lock period
    assert stake_of("Dev4", "unbonding") == 3 * UNIT
    assert kernel.run_line_magic("dfml", "worker status") == []

    # a validator of the model joins with its held-out data; anyone else is told why not
    with pytest.raises(IPythonUsageError, match="is not a validator of model"):
        kernel.run_line_magic("dfml", f"--key //Dev5 validator join {mid} --data mine --target y")
    judge = kernel.run_line_magic(
        "dfml", f"--key //Dev1 validator join {mid} --data mine --target y"
    )
    try:
        status = kernel.run_line_magic("dfml", "validator status")
        assert [(s["role"], s["model_id"], s["running"]) for s in status] == [
            ("validator", mid, True)
        ]
    finally:
        kernel.run_line_magic("dfml", "validator leave")
    assert not judge.running


def test_joining_is_for_a_kernel_a_shell_runs_a_worker_in_the_foreground():
    from decentralml_jupyter import cli
    from decentralml_jupyter.errors import UsageError

    with pytest.raises(UsageError, match="inside a notebook's kernel") as err:
        cli.run(["worker", "join", "1", "--data", "mine.csv"])
    assert "dfml worker --data FILE" in err.value.hint
