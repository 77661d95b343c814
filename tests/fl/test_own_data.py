"""A participant's own data: every source, every label kind, the model's data contract and
the owner's training setup (in-process; the dev network runs the same functions)."""

from __future__ import annotations

import numpy as np
import pytest

from decentralml_jupyter import fl
from decentralml_jupyter.errors import DataMismatch, UsageError
from tests.conftest import require

keras = require("keras")


def _diabetes():
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame  # ten named columns and "target"
    return frame


def _regressor(frame, compiled=True, seed=0):
    keras.utils.set_random_seed(seed)
    features = [c for c in frame.columns if c != "target"]
    inputs = keras.Input(shape=(len(features),), name="features")
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(frame[features].to_numpy(dtype=np.float32))
    x = keras.layers.Dense(16, activation="relu", name="hidden")(norm(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(x), name="diabetes")
    if compiled:
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse", metrics=["mae"])
    return model, features


def test_the_spec_records_the_contract_and_the_training_setup():
    frame = _diabetes()
    model, features = _regressor(frame)
    spec = fl.model_to_spec(model, features=features)
    contract = fl.spec_contract(spec)
    assert contract.input_shape == (10,) and str(contract.label) == "regression:1"
    assert contract.features == tuple(features)
    setup = fl.spec_training(spec).to_json()
    assert setup["optimizer"] == "Adam" and setup["loss"] == "mse" and setup["metrics"] == ["mae"]
    assert setup["learning_rate"] == pytest.approx(0.05)
    # the same model gives the same bytes (the same CID)
    assert fl.model_to_spec(model, features=features) == spec
    # label kinds read from the output layer, or given by the owner
    cls = fl.mlp(4, 3)
    assert str(fl.spec_contract(fl.model_to_spec(cls)).label) == "classes:3"
    inputs = keras.Input(shape=(4,))
    binary = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    multi = keras.Model(inputs, keras.layers.Dense(5, activation="sigmoid")(inputs))
    assert str(fl.spec_contract(fl.model_to_spec(binary)).label) == "binary"
    assert str(fl.spec_contract(fl.model_to_spec(multi)).label) == "multilabel:5"
    logits = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    spec = fl.model_to_spec(logits, label="classes:3")
    assert str(fl.spec_contract(spec).label) == "classes:3"
    with pytest.raises(UsageError, match="feature columns"):
        fl.model_to_spec(cls, features=["a", "b"])


def test_every_source_gives_the_same_arrays(tmp_path):
    frame = _diabetes()
    model, features = _regressor(frame)
    contract = fl.spec_contract(fl.model_to_spec(model, features=features))
    expected_x = frame[features].to_numpy(dtype=np.float32)
    expected_y = frame["target"].to_numpy()
    shuffled = frame[["target", *reversed(features)]]  # columns are found by name
    shuffled.to_csv(tmp_path / "mine.csv", index=False)
    shuffled.to_parquet(tmp_path / "mine.parquet")
    np.savez(tmp_path / "mine.npz", x=expected_x, y=expected_y)
    tf = require("tensorflow")
    sources = {
        "csv": (tmp_path / "mine.csv", "target"),
        "parquet": (str(tmp_path / "mine.parquet"), "target"),
        "npz": (tmp_path / "mine.npz", None),
        "frame": (shuffled, "target"),
        "arrays": ((expected_x, expected_y), None),
        "tf.data": (tf.data.Dataset.from_tensor_slices((expected_x, expected_y)).batch(7), None),
    }
    for name, (source, target) in sources.items():
        x, y = fl.load_data(source, target=target, contract=contract)
        np.testing.assert_allclose(x, expected_x, rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(y, expected_y, err_msg=name)


def test_a_folder_of_images_one_sub_folder_per_class(tmp_path):
    pil = require("PIL.Image")
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
            pil.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    inputs = keras.Input(shape=(8, 8, 3))
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(flat))
    contract = fl.spec_contract(fl.model_to_spec(model))
    x, y = fl.load_data(tmp_path, contract=contract)
    assert x.shape == (6, 8, 8, 3) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    flat_model = fl.mlp(4, 2)
    with pytest.raises(DataMismatch, match="needs a model that takes images"):
        fl.load_data(tmp_path, contract=fl.spec_contract(fl.model_to_spec(flat_model)))


def test_data_that_does_not_fit_is_refused_with_what_to_do(tmp_path):
    frame = _diabetes()
    model, features = _regressor(frame)
    contract = fl.spec_contract(fl.model_to_spec(model, features=features))
    with pytest.raises(DataMismatch, match="lacks the model's feature column\\(s\\) bmi"):
        fl.load_data(frame.drop(columns=["bmi"]), target="target", contract=contract)
    with pytest.raises(DataMismatch, match="no column 'label'"):
        fl.load_data(frame, target="label", contract=contract)
    with pytest.raises(UsageError, match="needs a target column"):
        fl.load_data(frame, contract=contract)
    holes = frame.copy()
    holes.loc[5, "bp"] = np.nan
    with pytest.raises(DataMismatch, match="NaN/inf\\) in bp, row 5") as err:
        fl.load_data(holes, target="target", contract=contract)
    assert "dropna" in err.value.hint and err.value.http_status == 422
    with pytest.raises(DataMismatch, match="at least 2"):
        fl.load_data(frame.head(1), target="target", contract=contract)
    # a worker trains on one example (what it loads with); none is refused
    one = fl.MIN_TRAIN_EXAMPLES
    x1, _ = fl.load_data(frame.head(1), target="target", contract=contract, min_examples=one)
    assert len(x1) == 1
    with pytest.raises(DataMismatch, match="at least 1 are needed to train"):
        fl.load_data(frame.head(0), target="target", contract=contract, min_examples=one)
    with pytest.raises(DataMismatch, match="shape \\(3,\\); the model takes \\(10,\\)"):
        fl.load_data((np.zeros((5, 3)), np.zeros(5)), contract=contract)
    classifier = fl.spec_contract(fl.model_to_spec(fl.mlp(3, 3)))
    with pytest.raises(DataMismatch, match="class indices 0..2; found values from 0 to 7"):
        fl.load_data((np.zeros((4, 3)), np.array([0, 1, 2, 7])), contract=classifier)
    text = frame.assign(sex=frame["sex"].map(lambda v: "f" if v > 0 else "m"))
    with pytest.raises(DataMismatch, match="sex of the DataFrame are not numbers"):
        fl.load_data(text, target="target", contract=contract)
    np.savez(tmp_path / "bad.npz", features=np.zeros((3, 10)))
    with pytest.raises(DataMismatch, match="not x and y"):
        fl.load_data(tmp_path / "bad.npz", contract=contract)


def test_the_owners_optimizer_is_what_trains():
    frame = _diabetes()
    features = [c for c in frame.columns if c != "target"]
    x = frame[features].to_numpy(dtype=np.float32)
    y = frame["target"].to_numpy(dtype=np.float32)
    adam, _ = _regressor(frame, compiled=True)
    plain, _ = _regressor(frame, compiled=False)
    start = adam.get_weights()
    np.testing.assert_array_equal(start[-1], plain.get_weights()[-1])  # same initial weights
    adam_spec = fl.model_to_spec(adam, features=features)
    sgd_spec = fl.model_to_spec(plain, features=features)
    kw = dict(epochs=1, batch_size=len(y), seed=0)  # one full batch: one step
    by_adam, n, _ = fl.train_local(adam_spec, start, x, y, **kw)
    by_sgd, _, _ = fl.train_local(sgd_spec, start, x, y, lr=0.05, **kw)
    assert n == len(y)
    # Adam's first step moves every weight by about its learning rate, whatever the gradient
    step = np.abs(by_adam[-1] - start[-1])
    assert step == pytest.approx(0.05, rel=1e-3)
    assert not np.allclose(by_adam[-1], by_sgd[-1])
    # Keras' own fit with the same optimizer makes the same first step
    reference, _ = _regressor(frame, compiled=True)
    reference.set_weights(start)
    reference.fit(x, y, batch_size=len(y), epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(by_adam[-1], reference.get_weights()[-1], rtol=1e-5)
    # each update starts from a fresh optimizer: the same call gives the same weights
    again, _, _ = fl.train_local(adam_spec, start, x, y, **kw)
    for a, b in zip(again, by_adam, strict=True):
        np.testing.assert_array_equal(a, b)
    # a round's learning rate overrides the owner's
    slower, _, _ = fl.train_local(adam_spec, start, x, y, lr=0.005, **kw)
    assert np.abs(slower[-1] - start[-1]) == pytest.approx(0.005, rel=1e-3)


@pytest.mark.parametrize("kind", ["binary", "multilabel", "classes"])
def test_each_label_kind_trains_and_evaluates(kind):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    if kind == "binary":
        y, out = (x[:, 0] > 0).astype(np.float32), keras.layers.Dense(1, activation="sigmoid")
    elif kind == "multilabel":
        y, out = (x[:, :3] > 0).astype(np.float32), keras.layers.Dense(3, activation="sigmoid")
    else:
        y, out = np.argmax(x[:, :4], axis=1), keras.layers.Dense(4, activation="softmax")
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(6,))
    model = keras.Model(inputs, out(keras.layers.Dense(16, activation="relu")(inputs)))
    spec = fl.model_to_spec(model)
    weights = model.get_weights()
    before = fl.evaluate(spec, weights, x, y)
    trained, _, _ = fl.train_local(spec, weights, x, y, epochs=30, batch_size=32, lr=0.1)
    after = fl.evaluate(spec, trained, x, y)
    assert after["loss"] < before["loss"] and after["accuracy"] > 0.85, (before, after)


def test_a_regression_federation_beats_its_initial_error():
    frame = _diabetes().sample(frac=1.0, random_state=0)
    model, features = _regressor(frame)
    spec = fl.model_to_spec(model, features=features)
    cuts = np.linspace(0, len(frame), 5).astype(int)
    # three participants and a validator's held-out rows
    parts = [frame.iloc[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    data = [fl.load_data(p, "target", fl.spec_contract(spec)) for p in parts]
    held_x, held_y = data[3]
    weights = model.get_weights()
    start = fl.evaluate(spec, weights, held_x, held_y)["mae"]
    for round_ in range(5):
        updates = [
            fl.ClientUpdate(
                f"p{i}", *fl.train_local(spec, weights, x, y, epochs=5, seed=round_)[:2]
            )
            for i, (x, y) in enumerate(data[:3])
        ]
        weights = fl.FedAvg().aggregate(weights, updates)
    end = fl.evaluate(spec, weights, held_x, held_y)["mae"]
    assert end < 0.5 * start, (start, end)


def test_the_models_metric_by_its_keras_name_and_its_direction():
    from decentralml_jupyter.fl.contract import better

    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=120) > 0).astype(np.float32)
    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    spec = fl.model_to_spec(model)
    trained, _, _ = fl.train_local(spec, model.get_weights(), x, y, epochs=20, lr=0.5)
    got = fl.evaluate(spec, trained, x, y, "auc")
    reference = keras.metrics.AUC()
    reference.update_state(y, fl.predict(spec, trained, x))
    assert got["auc"] == pytest.approx(float(reference.result())) and got["auc"] > 0.8
    assert (better("mae"), better("loss"), better("auc"), better("accuracy")) == (-1, -1, 1, 1)
    with pytest.raises(fl.FlError, match="unknown metric"):
        fl.evaluate(spec, trained, x, y, "no_such_metric")
    # leave-one-out follows the direction: the update that lowers the error scores highest
    g = [np.zeros(1, np.float32)]
    updates = [fl.ClientUpdate(c, [np.full(1, v, np.float32)], 1) for c, v in (("a", 1), ("b", 3))]
    err = fl.leave_one_out(fl.FedAvg(), g, updates, lambda w: {"mae": abs(2 - w[0][0])}, "mae")
    gain = fl.leave_one_out(fl.FedAvg(), g, updates, lambda w: {"auc": w[0][0]}, "auc")
    assert err == {"a": 0.5, "b": 0.5}  # each alone is 1 off: neither helps more
    assert gain["b"] == 1.0 and gain["a"] == 0.0  # only b raises it
