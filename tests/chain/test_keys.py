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
    assert load_keypair(str(f)).ss58_address == kp.ss58_address
    enc = kp.export_to_encrypted_json("pw", name="test")
    j = tmp_path / "key.json"
    j.write_text(json.dumps(enc))
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
