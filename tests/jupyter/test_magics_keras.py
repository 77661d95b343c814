"""`%dfml model submit my_model`: a Keras model in the namespace is saved and its path passed."""

from __future__ import annotations

import argparse

import numpy as np

from decentralml_jupyter import cli
from decentralml_jupyter.jupyter.commands import parse
from tests.conftest import require


def _parser() -> argparse.ArgumentParser:
    parser = cli.build_parser("%dfml")
    verbs = parser._subparsers._group_actions[0]
    if "model" not in verbs.choices:  # the CLI.md shape, until the verb lands
        submit = verbs.add_parser("model").add_subparsers(dest="action").add_parser("submit")
        submit.add_argument("path")
        submit.add_argument("--name")
    return parser


def test_keras_model_variable_becomes_a_saved_file(ip, tmp_path):
    keras = require("keras")
    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    ip.user_ns["my_model"] = model
    ip.user_ns["not_a_model"] = [1, 2]
    magics = ip.magics_manager.registry["DFMLMagics"]

    cmd = parse(_parser(), ["model", "submit", "--name", "my_model", "my_model"])
    magics._resolve_objects(cmd, tmp_path)
    saved = tmp_path / "my_model.keras"
    assert cmd.argv == ["model", "submit", "--name", "my_model", str(saved)]  # option untouched
    loaded = keras.models.load_model(saved)
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    # names that are files or other objects, and other verbs, are left alone
    for line in (["model", "submit", "not_a_model"], ["model", "submit", "./weights.keras"]):
        cmd = parse(_parser(), line)
        magics._resolve_objects(cmd, tmp_path)
        assert cmd.argv == line
    cmd = parse(_parser(), ["remark", "my_model"])
    magics._resolve_objects(cmd, tmp_path)
    assert cmd.argv == ["remark", "my_model"]
