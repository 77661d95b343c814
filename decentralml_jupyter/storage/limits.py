"""What one client may cost the dev storage service: body sizes, workers, connections, timeouts.

Each limit has a default (below), an environment variable ``DFML_STORAGE_<NAME>`` (for example
``DFML_STORAGE_MAX_BODY=2147483648 dfml storage up``) and a flag of
``python -m decentralml_jupyter.storage.server`` (``--max-body``); a flag wins over the
variable. ``storage_up(limits={...})`` passes flags.

==================  ========  ===================================================================
limit               default   what it bounds
==================  ========  ===================================================================
max_body            1 GiB     an ``add`` request body (the file plus its multipart framing): 413
max_small_body      64 KiB    the body of every other command (they take none): 413
max_add_files       4096      files (multipart parts) in one ``add`` request: 400
workers             32        threads serving requests; idle keep-alive connections use none
backlog             128       requests waiting for a worker; one more is answered 503
max_connections     512       open connections; past it the longest-quiet waiting one is closed
io_timeout          30 s      a read or write stalled this long ends the request (408)
idle_timeout        60 s      a keep-alive connection without a request is closed
header_timeout      20 s      the request line and headers must arrive within this (408)
max_timeout         300 s     the longest ``timeout=`` a request may wait for content (clamped)
==================  ========  ===================================================================

Fixed, as Kubo's own server has them fixed: a request line of at most 8 KiB (414), at most 64
header fields of at most 8 KiB each and 64 KiB in all (431). Besides the workers, adds are
hashed and written on one pool of a thread per CPU core, shared by all of them, each add with
at most 3 slabs of 4 MiB handed to it (server.py).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

MAX_REQUEST_LINE = 8 << 10
MAX_HEADER_LINE = 8 << 10
MAX_HEADERS = 64
MAX_HEAD = 64 << 10  # request line and header fields together
ENV_PREFIX = "DFML_STORAGE_"


@dataclass(frozen=True)
class Limits:
    """The service's configurable limits (see the module docstring); sizes in bytes, times in s."""

    max_body: int = 1 << 30  # models of 400 MB must fit, with room to spare
    max_small_body: int = 64 << 10
    max_add_files: int = 4096  # one add's parts; each file is also within max_body
    workers: int = 32
    backlog: int = 128
    max_connections: int = 512
    io_timeout: float = 30.0
    idle_timeout: float = 60.0
    header_timeout: float = 20.0
    max_timeout: float = 300.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"storage limit {f.name} must be a number, not {value!r}")
            if f.type == "int" and int(value) != value:
                raise ValueError(f"storage limit {f.name} must be an integer, not {value!r}")
            if value <= 0 and f.name not in ("max_body", "max_small_body", "backlog"):
                raise ValueError(f"storage limit {f.name} must be positive, not {value!r}")
            if value < 0:
                raise ValueError(f"storage limit {f.name} must not be negative, not {value!r}")
            if f.type == "int":
                object.__setattr__(self, f.name, int(value))

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> Limits:
        """Limits from ``{"max_body": 1 << 20, ...}`` (strings are parsed); others default."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown storage limit(s) {unknown}; known: {sorted(known)}")
        parsed = {}
        for name, value in values.items():
            if isinstance(value, str):
                try:
                    value = int(value) if known[name].type == "int" else float(value)
                except ValueError:
                    raise ValueError(f"storage limit {name}: {value!r} is not a number") from None
            parsed[name] = value
        return cls(**parsed)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """Defaults overridden by ``DFML_STORAGE_<NAME>`` variables."""
        environ = os.environ if environ is None else environ
        values = {
            f.name: environ[ENV_PREFIX + f.name.upper()]
            for f in fields(cls)
            if environ.get(ENV_PREFIX + f.name.upper(), "").strip()
        }
        return cls.from_mapping(values)

    def as_flags(self, names: list[str] | None = None) -> list[str]:
        """The server's command-line flags for these limits (all, or those named)."""
        out: list[str] = []
        for name in names if names is not None else [f.name for f in fields(self)]:
            out += [f"--{name.replace('_', '-')}", repr(getattr(self, name))]
        return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per limit (default: the environment variable, else the built-in default)."""
    for f in fields(Limits):
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f"limit_{f.name}",
            type=int if f.type == "int" else float,
            default=None,
            metavar=("BYTES" if "body" in f.name else "N") if f.type == "int" else "SECONDS",
            help=f"default {f.default} (or ${ENV_PREFIX}{f.name.upper()})",
        )


def from_arguments(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Limits:
    base = asdict(Limits.from_env(environ))
    for f in fields(Limits):
        value = getattr(args, f"limit_{f.name}", None)
        if value is not None:
            base[f.name] = value
    return Limits(**base)
