"""Defaults shared by every front end: endpoints, keys and the project's home directory.

Values come from the environment (DFML_URL, DFML_STORAGE, DFML_KEY, DFML_HOME, DFML_FROM_BLOCK)
so the CLI, the magics and the agents agree without passing options around.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_URL = "ws://127.0.0.1:9944"
DEFAULT_STORAGE = "http://127.0.0.1:5001"
DEFAULT_KEY = "//Alice"


def home() -> Path:
    """Where caches (npm packages, extracted runtimes) and run state (pid files) live."""
    env = os.environ.get("DFML_HOME")
    base = Path(env) if env else Path.home() / ".cache" / "decentralml-jupyter"
    return base.expanduser()


def run_dir() -> Path:
    d = home() / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def default_url() -> str:
    return os.environ.get("DFML_URL", DEFAULT_URL)


def default_storage() -> str:
    return os.environ.get("DFML_STORAGE", DEFAULT_STORAGE)


def default_key() -> str:
    return os.environ.get("DFML_KEY", DEFAULT_KEY)


def parse_from_block(value: object, source: str = "--from-block") -> int | None:
    """A ``--from-block`` value: None (unset: the protocol starts at genesis) or a block
    number >= 0; UsageError for anything else."""
    from .errors import UsageError

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        number = -1
    if isinstance(number, bool) or number < 0:
        raise UsageError(
            f"{source} must be a block number (0 or more), got {value!r}",
            hint="give the chain's block where the protocol starts, e.g. --from-block 1200",
        )
    return number


def default_from_block() -> int | None:
    """The protocol's first block on this chain (DFML_FROM_BLOCK), or None: from genesis."""
    return parse_from_block(os.environ.get("DFML_FROM_BLOCK"), "DFML_FROM_BLOCK")
