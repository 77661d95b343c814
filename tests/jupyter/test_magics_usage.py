"""`%dfml` without a chain: help, usage errors with their fix, line and cell parsing, config."""

from __future__ import annotations

import argparse

import pytest
from IPython.core.error import UsageError as IPythonUsageError

from decentralml_jupyter import cli
from decentralml_jupyter.errors import ChainNotReachable, UsageError
from decentralml_jupyter.jupyter.commands import (
    cell_options,
    has_verb,
    parse,
    positional_indexes,
    verb_names,
)

DEAD_URL = "ws://127.0.0.1:1"


@pytest.fixture()
def dead_ip(ip):
    ip.run_line_magic("config", f'DFMLMagics.url = "{DEAD_URL}"')
    return ip


def test_help_prints_argparse_help_and_returns_nothing(ip, capsys):
    assert ip.run_line_magic("dfml", "--help") is None
    out = capsys.readouterr().out
    assert out.startswith("usage: %dfml")
    for verb in verb_names(cli.build_parser()):
        assert verb in out


def test_every_verb_has_help_through_the_magic(ip, capsys):
    # generic over the parser, so verbs added later (round, model, vote...) are covered too
    verbs = verb_names(cli.build_parser("%dfml"))
    for verb in verbs:
        assert ip.run_line_magic("dfml", f"{verb} --help") is None
        assert f"usage: %dfml {verb}" in capsys.readouterr().out
    if "round" in verbs:
        ip.run_line_magic("dfml", "round --help")
        assert "usage: %dfml round" in capsys.readouterr().out


def test_empty_line_prints_help(ip, capsys):
    assert ip.run_line_magic("dfml", "") is None
    assert "usage: %dfml" in capsys.readouterr().out


def test_bad_arguments_raise_ipython_usage_error_with_the_fix(ip):
    with pytest.raises(IPythonUsageError) as err:
        ip.run_line_magic("dfml", "no-such-verb")
    assert "invalid choice" in str(err.value) and "hint: see: %dfml --help" in str(err.value)
    with pytest.raises(IPythonUsageError) as err:
        ip.run_line_magic("dfml", "account transfer Bob -5")
    assert "hint: see: %dfml account transfer --help" in str(err.value)
    with pytest.raises(IPythonUsageError, match="missing verb"):
        ip.run_line_magic("dfml", "account")
    with pytest.raises(IPythonUsageError, match="close the quote"):
        ip.run_line_magic("dfml", "remark 'unclosed")
    with pytest.raises(IPythonUsageError, match="variable name"):
        ip.run_line_magic("dfml", "-o 1bad chain status")


def test_usage_error_shows_as_one_message_in_a_cell(ip, capsys):
    result = ip.run_cell("%dfml account transfer Bob lots")
    shown = "".join(capsys.readouterr())
    assert isinstance(result.error_in_exec, IPythonUsageError)
    assert "UsageError" in shown and "not an integer amount" in shown
    assert "Traceback" not in shown


def test_other_errors_show_message_and_hint_not_a_traceback(dead_ip, capsys):
    result = dead_ip.run_cell("%dfml account balance Alice")
    shown = "".join(capsys.readouterr())
    # the exception keeps its type, so code around a magic can still catch it precisely
    assert isinstance(result.error_in_exec, ChainNotReachable)
    assert DEAD_URL in shown and "hint" in shown and "dfml chain up" in shown
    assert "Traceback" not in shown


def test_config_sets_traits_and_never_shows_the_key(ip, capsys):
    secret = "bottom drive obey lake curtain smoke basket hold race lonely fit walk"
    ip.run_line_magic("config", f'DFMLMagics.key = "{secret}"')
    ip.run_line_magic("config", 'DFMLMagics.url = "ws://example.invalid:9944"')
    try:
        magics = ip.magics_manager.registry["DFMLMagics"]
        assert magics.url == "ws://example.invalid:9944"
        assert magics.session._key == secret  # the session signs with the plain text
        ip.run_line_magic("config", "DFMLMagics")
        shown = capsys.readouterr().out
        assert "DFMLMagics.url" in shown and "ws://example.invalid:9944" in shown
        assert secret not in shown and "<hidden>" in shown
        ip.run_cell("%config DFMLMagics.key")
        ip.run_cell("DFMLMagics_runner = get_ipython().magics_manager.registry['DFMLMagics']")
        ip.run_cell("DFMLMagics_runner.session")
        assert secret not in "".join(capsys.readouterr())
    finally:
        ip.run_line_magic("config", 'DFMLMagics.key = "//Alice"')


def test_traits_default_to_the_environment(monkeypatch):
    from decentralml_jupyter.jupyter.magics import DFMLMagics

    monkeypatch.setenv("DFML_URL", "ws://10.0.0.1:9944")
    monkeypatch.setenv("DFML_STORAGE", "http://10.0.0.1:5001")
    monkeypatch.setenv("DFML_KEY", "//Bob")
    m = DFMLMagics(shell=None)
    assert (m.url, m.storage, str.__str__(m.key)) == (
        "ws://10.0.0.1:9944",
        "http://10.0.0.1:5001",
        "//Bob",
    )
    assert "Bob" not in repr(m.key) and "Bob" not in repr(m.session)
    assert m.session.address == "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


# -- reading lines against the parser ---------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    return cli.build_parser("%dfml")


def test_out_option_is_the_magics_unless_the_verb_owns_it():
    p = _parser()
    cmd = parse(p, ["-o", "r", "account", "balance", "Alice"])
    assert (cmd.out, cmd.path, cmd.argv) == (
        "r",
        ["account", "balance"],
        ["account", "balance", "Alice"],
    )
    cmd = parse(p, ["account", "list", "--out=accts"])
    assert cmd.out == "accts" and cmd.argv == ["account", "list"]
    # `storage get CID --out FILE` is the verb's own option: passed through untouched
    cmd = parse(p, ["storage", "get", "bafy", "--out", "w.bin", "-o", "res"])
    assert cmd.argv == ["storage", "get", "bafy", "--out", "w.bin"] and cmd.out == "res"
    # a global option's value is never taken for a verb
    cmd = parse(p, ["--url", "account", "chain", "status"])
    assert cmd.path == ["chain", "status"]


def test_positional_indexes_skip_options_and_their_values():
    p = _parser()
    cmd = parse(
        p, ["--key", "//Bob", "model", "submit", "--name", "m", "my_model", "--jurisdiction", "EU"]
    )
    assert [cmd.argv[i] for i in positional_indexes(cmd)] == ["my_model"]
    assert has_verb(p, "model", "submit") and not has_verb(p, "model", "nope")


def test_cell_mapping_becomes_options():
    p = _parser()
    leaf = parse(p, ["model", "submit", "x"]).parser
    body = {
        "name": "digits",
        "jurisdiction": ["EU", "CH"],
        "block_mode": "batch",
        "open": True,
        "dry_run": False,
        "note": None,
        "params": {"reward": 5, "quorum": 0.5},
    }
    assert cell_options(body, leaf) == [
        "--name", "digits",
        "--jurisdiction", "EU", "--jurisdiction", "CH",
        "--block-mode", "batch",
        "--open",
        "--param", "reward=5", "--param", "quorum=0.5",
    ]  # fmt: skip
    with pytest.raises(UsageError, match="nested"):
        cell_options({"jurisdiction": [["EU"]]}, leaf)


def test_cell_that_is_not_a_mapping_is_a_usage_error(ip):
    with pytest.raises(IPythonUsageError, match="YAML mapping"):
        ip.run_cell_magic("dfml", "remark", "- just\n- a list\n")
    with pytest.raises(IPythonUsageError, match="not valid YAML"):
        ip.run_cell_magic("dfml", "remark", "a: [unclosed\n")
