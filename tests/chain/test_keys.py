"""Loading keys: dev URIs, mnemonics, seeds, key files; secrets never appear in errors."""

from __future__ import annotations

import json

import pytest
from substrateinterface import Keypair

from decentralml_jupyter.chain.keys import is_dev_uri, load_keypair
from decentralml_jupyter.errors import KeyLoadError

ALICE_42 = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


def test_dev_uri():
    assert load_keypair("//Alice").ss58_address == ALICE_42
    assert is_dev_uri("//Alice") and not is_dev_uri("word " * 12)


def test_mnemonic_and_derivation():
    phrase = Keypair.generate_mnemonic()
    plain = load_keypair(phrase)
    derived = load_keypair(phrase + "//stash")
    assert plain.ss58_address == Keypair.create_from_mnemonic(phrase, ss58_format=42).ss58_address
    assert derived.ss58_address != plain.ss58_address


def test_seed_and_files(tmp_path):
    seed = "0x" + "11" * 32
    kp = load_keypair(seed)
    f = tmp_path / "seed.txt"
    f.write_text(seed + "\n")
    f.chmod(0o600)
    assert load_keypair(str(f)).ss58_address == kp.ss58_address
    enc = kp.export_to_encrypted_json("pw", name="test")
    j = tmp_path / "key.json"
    j.write_text(json.dumps(enc))
    j.chmod(0o600)
    assert load_keypair(str(j), password="pw").ss58_address == kp.ss58_address
    with pytest.raises(KeyLoadError, match="decrypted"):
        load_keypair(str(j), password="wrong")


def test_bad_secrets_are_never_echoed():
    secret = "correct horse battery staple is not a valid twelve word phrase at all"
    with pytest.raises(KeyLoadError) as err:
        load_keypair(secret)
    assert "horse" not in str(err.value) and "horse" not in err.value.hint
    with pytest.raises(KeyLoadError, match="32 bytes"):
        load_keypair("0x" + "ab" * 8)
    with pytest.raises(KeyLoadError):
        load_keypair("")


def test_a_key_file_others_can_read_is_refused_with_the_fix(tmp_path):
    f = tmp_path / "seed.txt"
    f.write_text("0x" + "22" * 32)
    f.chmod(0o644)
    with pytest.raises(KeyLoadError, match="read by other users") as err:
        load_keypair(str(f))
    assert f"chmod 600 {f}" in err.value.hint and "22" * 4 not in str(err.value)
    f.chmod(0o600)
    assert load_keypair(str(f)).ss58_address


def test_a_secret_on_a_command_line_is_refused(tmp_path, capsys):
    from decentralml_jupyter.chain.keys import refuse_secret_in_argv
    from decentralml_jupyter.cli import main

    phrase = Keypair.generate_mnemonic()
    refuse_secret_in_argv(["--key", "//Dev4", "account", "list"])  # a dev URI is public
    f = tmp_path / "k"
    f.write_text(phrase)
    f.chmod(0o600)
    refuse_secret_in_argv(["--key", str(f)])  # a key file's path is not a secret
    for argv in (["--key", phrase], [f"--key={phrase}"], ["--key", "0x" + "33" * 32]):
        with pytest.raises(KeyLoadError, match="process list"):
            refuse_secret_in_argv(argv)
    assert main(["--json", "--key", phrase, "account", "list"]) == 1
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert "process list" in doc["error"] and "--key-file" in doc["hint"]
    assert phrase.split()[0] not in out


def test_agents_take_their_key_from_a_file_or_the_environment(tmp_path, monkeypatch):
    from decentralml_jupyter.agents.base import agent_keys

    f = tmp_path / "k"
    f.write_text("0x" + "44" * 32)
    f.chmod(0o600)
    assert agent_keys(None, str(f), []) == [str(f)]
    assert agent_keys(["//Dev1", "//Dev2"], None, []) == ["//Dev1", "//Dev2"]
    monkeypatch.setenv("DFML_KEY", "0x" + "55" * 32)
    assert agent_keys(None, None, []) == ["0x" + "55" * 32]
    monkeypatch.delenv("DFML_KEY")
    with pytest.raises(KeyLoadError, match="no signing key"):
        agent_keys(None, None, [])
    # started as a process with a secret in its argv: refused before anything runs
    monkeypatch.setattr("sys.argv", ["worker", "--key", "0x" + "66" * 32])
    with pytest.raises(KeyLoadError, match="process list"):
        agent_keys(["0x" + "66" * 32], None, None)
