"""`%dfml model submit my_model`: a Keras model of the kernel passes straight through to the
Session, which uploads exactly its architecture and weights."""

from __future__ import annotations

import numpy as np

from decentralml_jupyter import cli
from decentralml_jupyter.jupyter.commands import parse
from tests.conftest import require


def test_keras_model_variable_is_passed_as_the_object(ip):
    keras = require("keras")
    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    ip.user_ns["my_model"] = model
    ip.user_ns["not_a_model"] = [1, 2]
    magics = ip.magics_manager.registry["DFMLMagics"]
    parser = cli.build_parser("%dfml")

    cmd = parse(parser, ["model", "submit", "--name", "mine", "my_model"])
    assert magics._objects(cmd) == {"path": model}  # --name given: kept
    cmd = parse(parser, ["model", "submit", "my_model"])
    bound = magics._objects(cmd)
    assert bound["path"] is model and bound["name"] == "my_model"  # named after its variable

    # names that are files or other objects, and other verbs, are left alone
    for line in (["model", "submit", "not_a_model"], ["model", "submit", "./weights.keras"]):
        assert magics._objects(parse(parser, line)) == {}
    assert magics._objects(parse(parser, ["remark", "my_model"])) == {}


def test_the_session_takes_a_keras_model_as_it_is(tmp_path):
    keras = require("keras")
    from decentralml_jupyter import fl
    from decentralml_jupyter.session import _model_artifacts

    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="tiny")
    spec, weights, name = _model_artifacts(model)
    assert name == "tiny"
    for a, b in zip(fl.weights_from_bytes(weights), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # the same bytes as from the file it would have been saved to
    model.save(tmp_path / "tiny.keras")
    spec2, weights2, name2 = _model_artifacts(str(tmp_path / "tiny.keras"))
    assert (weights2, name2) == (weights, "tiny") and fl.model_from_spec(spec2) is not None
