"""ProxyFL on the real dev network: three workers (bundled digits) keep private models in
their processes and send only proxies; the validators average the proxies, and each round's
aggregate is exactly FedAvg of the proxies the workers stored. A model ProxyFL cannot train (a
regression) is refused before anything is stored or sent."""

from __future__ import annotations

import numpy as np
import pytest

from tests.agents.test_own_data_devnet import VALIDATORS, WORKERS, train_plans
from tests.conftest import dev_network

ROUNDS = 2


@pytest.mark.chain
def test_proxyfl_rounds_average_the_proxies(tmp_path):
    import keras

    from decentralml_jupyter import Session, fl

    with dev_network(
        "--workers", str(WORKERS), "--validators", str(VALIDATORS), "--clock", "1"
    ) as (dfml, info, url, storage):  # fmt: skip
        regression = tmp_path / "regression.keras"
        inputs = keras.Input(shape=(64,))
        keras.Model(inputs, keras.layers.Dense(1)(inputs)).save(regression)
        with pytest.raises(Exception, match="softmax"):
            dfml("model", "submit", str(regression), "--strategy", "proxyfl")
        path = tmp_path / "digits.keras"
        fl.mlp(64, 10, hidden=(32,)).save(path)
        sub = dfml(
            "model", "submit", str(path), "--strategy", "proxyfl",
            "--strategy-param", "alpha=0.3",
        )  # fmt: skip
        mid = str(sub["model_id"])
        assert dfml("model", "show", mid)["strategy_params"] == {"alpha": 0.3, "beta": 0.5}
        train_plans(dfml, [mid], epochs=2, rounds=ROUNDS)
        with Session(url, storage) as s:
            rounds = sorted(s.rounds(int(mid)), key=lambda r: r.round_id)
            for rnd in rounds:
                base = fl.weights_from_bytes(s.store.get(rnd.base_cid))
                proxies = [
                    fl.ClientUpdate(u.worker, fl.weights_from_bytes(s.store.get(u.cid)),
                                    u.num_examples)
                    for u in rnd.updates
                ]  # fmt: skip
                expected = fl.FedAvg().aggregate(base, fl.bound_examples(proxies))
                got = fl.weights_from_bytes(s.store.get(rnd.aggregate_cid))
                for a, b in zip(expected, got, strict=True):
                    np.testing.assert_array_equal(a, b)
            assert rounds[-1].metrics["accuracy"] > rounds[0].metrics["base_accuracy"]
