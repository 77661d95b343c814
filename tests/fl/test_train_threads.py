"""Two workers in one kernel train the same model at once, in threads (as `%dfml worker join`
does): each must get exactly what it gets training alone. The cached model is shared, so
without turns their steps interleave and the weights diverge (seen as NaN in tutorial 08)."""

from __future__ import annotations

import threading

import numpy as np

from tests.conftest import require


def test_concurrent_training_of_one_model_equals_training_alone():
    keras = require("keras")
    from decentralml_jupyter import fl

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(6,))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(8)(inputs)))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    spec = fl.model_to_spec(model)
    weights = [np.asarray(w) for w in model.get_weights()]
    rng = np.random.default_rng(0)
    data = [(rng.normal(size=(400, 6)), rng.normal(size=400) * (k + 1)) for k in range(4)]
    alone = [fl.train_local(spec, weights, x, y, epochs=3, seed=k)[0] for k, (x, y) in
             enumerate(data)]  # fmt: skip
    together: dict[int, list] = {}

    def train(k: int) -> None:
        x, y = data[k]
        together[k] = fl.train_local(spec, weights, x, y, epochs=3, seed=k)[0]

    threads = [threading.Thread(target=train, args=(k,)) for k in range(len(data))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, expected in enumerate(alone):
        for a, b in zip(expected, together[k], strict=True):
            np.testing.assert_array_equal(a, b)
