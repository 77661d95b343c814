"""Signing keys from dev URIs (//Alice), mnemonics, raw seeds and key files.

Secrets never appear in messages, logs or reprs, nor on a command line (``--key`` takes a dev
URI or a key file; a key file must be private: mode 0600). Keys derived from the public dev phrase
(every bare `//Name` URI) are "dev keys": anyone can sign with them, so the chain client refuses
them on a chain that is not a dev chain unless the caller forces it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from substrateinterface import Keypair, KeypairType

from ..errors import KeyLoadError

SS58_FORMAT = 42


def is_dev_uri(spec: str) -> bool:
    """A bare hard derivation path (//Alice, //Dev3) uses the well-known dev phrase."""
    return spec.startswith("//")


def check_key_file(path: str | os.PathLike) -> Path:
    """A key file that exists and that no other user can read (mode 0600 on POSIX)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise KeyLoadError(f"key file {path} does not exist", hint="check the path")
    mode = path.stat().st_mode & 0o777
    if os.name == "posix" and mode & 0o077:
        raise KeyLoadError(
            f"key file {path} can be read by other users (mode {mode:o})",
            hint=f"make it private first: chmod 600 {path}",
        )
    return path


def refuse_secret_in_argv(argv: list[str]) -> None:
    """Refuse a secret (a mnemonic or seed) given as ``--key`` on a command line, where every
    local user reads it from the process list. Dev URIs (//Alice) and key file paths are fine."""
    for i, arg in enumerate(argv):
        if arg == "--key" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--key="):
            value = arg.split("=", 1)[1]
        else:
            continue
        if is_dev_uri(value) or (len(value) < 4096 and Path(value).expanduser().is_file()):
            continue
        raise KeyLoadError(
            "a secret key on the command line can be read by any local user from the process "
            "list, so it is refused",
            hint="put it in a key file (chmod 600 FILE) and pass --key-file FILE, or set DFML_KEY",
        )


def load_keypair(spec: str, password: str | None = None, ss58_format: int = SS58_FORMAT) -> Keypair:
    """Load a keypair from a dev URI, a mnemonic (optionally with //path), a 0x seed, or a file.

    A file holds either a JSON key exported by polkadot-js (password from ``password`` or
    DFML_KEY_PASSWORD) or one line with a mnemonic or seed.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise KeyLoadError("no key given", hint="pass --key //Alice, a mnemonic or a key file")
    spec = spec.strip()
    if is_dev_uri(spec):
        try:
            return Keypair.create_from_uri(spec, ss58_format=ss58_format)
        except Exception:
            raise KeyLoadError(
                "the dev URI could not be parsed", hint="use the form //Name or //Name//0"
            ) from None
    path = Path(spec).expanduser()
    if len(spec) < 4096 and path.is_file():
        return _from_file(path, password, ss58_format)
    return _from_secret(spec, ss58_format, source="the key")


def _from_secret(secret: str, ss58_format: int, source: str) -> Keypair:
    if secret.startswith("0x"):
        try:
            seed = bytes.fromhex(secret[2:])
        except ValueError:
            seed = b""
        if len(seed) != 32:
            raise KeyLoadError(
                f"{source} looks like a hex seed but is not 32 bytes",
                hint="give a 0x-prefixed 64-hex-digit seed, a mnemonic, or a key file",
            )
        return Keypair.create_from_seed(secret, ss58_format=ss58_format)
    phrase = secret.split("/")[0].strip()
    if len(phrase.split()) not in (12, 15, 18, 21, 24) or not Keypair.validate_mnemonic(phrase):
        # the message must not echo the secret back
        raise KeyLoadError(
            f"{source} is neither a dev URI, a valid mnemonic, a 0x seed nor a readable key file",
            hint="pass --key //Alice on a dev chain, a 12/24-word mnemonic, or a key file path",
        )
    try:
        return Keypair.create_from_uri(secret, ss58_format=ss58_format)
    except Exception:
        raise KeyLoadError(f"{source}: the derivation path could not be parsed") from None


def _from_file(path: Path, password: str | None, ss58_format: int) -> Keypair:
    check_key_file(path)
    text = path.read_text().strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise KeyLoadError(f"key file {path} is not valid JSON") from None
        password = password if password is not None else os.environ.get("DFML_KEY_PASSWORD")
        if password is None:
            raise KeyLoadError(
                f"key file {path} is encrypted", hint="set DFML_KEY_PASSWORD to its password"
            )
        try:
            return Keypair.create_from_encrypted_json(data, password, ss58_format=ss58_format)
        except Exception:
            raise KeyLoadError(
                f"key file {path} could not be decrypted",
                hint="check DFML_KEY_PASSWORD and that the file is a polkadot-js key export",
            ) from None
    return _from_secret(text, ss58_format, source=f"key file {path}")


def new_mnemonic_keypair(ss58_format: int = SS58_FORMAT) -> tuple[str, Keypair]:
    """A fresh sr25519 key and its mnemonic (for users who need an account)."""
    mnemonic = Keypair.generate_mnemonic()
    return mnemonic, Keypair.create_from_mnemonic(
        mnemonic, ss58_format=ss58_format, crypto_type=KeypairType.SR25519
    )
