"""Reading a `%dfml` line against the CLI's own parser, for any verb it has.

The magic never keeps a list of verbs: it reads the map of verbs and options the CLI's parser
keeps (``parser.verbs``, ``parser.options``) to find the verb, the options it owns and its
positional arguments, so new CLI verbs work in notebooks at once.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError

# The magic's own option; it yields to a verb that defines the same flag (`storage get --out`).
OUT_FLAGS = ("-o", "--out")


@dataclass
class Command:
    """A tokenised line: the argv for `cli.run`, the verb path, and where to store the result."""

    argv: list[str]
    path: list[str] = field(default_factory=list)
    out: str | None = None
    parser: argparse.ArgumentParser | None = None  # the verb's own (leaf) parser


def split_line(line: str) -> list[str]:
    try:
        return shlex.split(line, posix=True)
    except ValueError as err:  # an unclosed quote
        raise UsageError(f"%dfml: cannot read the line: {err}", hint="close the quote") from None


def _verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return getattr(parser, "verbs", {})


def _options(parser: argparse.ArgumentParser | None) -> dict[str, argparse.Action]:
    return getattr(parser, "options", {}) if parser is not None else {}


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def verb_names(parser: argparse.ArgumentParser, path: Iterable[str] = ()) -> list[str]:
    """The sub-commands under ``path`` (``[]`` for the top level), in the parser's order."""
    for name in path:
        if name not in _verbs(parser):
            return []
        parser = _verbs(parser)[name]
    return list(_verbs(parser))


def has_verb(parser: argparse.ArgumentParser, *path: str) -> bool:
    """Whether the CLI has this verb (``has_verb(p, "round", "status")``)."""
    return bool(path) and path[-1] in verb_names(parser, path[:-1])


def parse(parser: argparse.ArgumentParser, tokens: list[str]) -> Command:
    """Find the verb path and lift the magic's ``-o NAME`` out of ``tokens``.

    ``-o``/``--out`` belongs to the magic unless the parser reached at that point (the top level,
    a verb group or the verb itself) defines it; then it is passed through untouched.
    """
    current, path, argv, out = parser, [], [], None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        flag, eq, inline = tok.partition("=")
        if flag in OUT_FLAGS and flag not in _options(current):
            if eq:
                out = inline
            elif i + 1 < len(tokens):
                out = tokens[i + 1]
                i += 1
            else:
                raise UsageError(f"%dfml: {flag} needs a variable name", hint="%dfml -o NAME VERB")
            if not out.isidentifier():
                raise UsageError(
                    f"%dfml: {out!r} is not a Python variable name", hint="%dfml -o result VERB ..."
                )
            i += 1
            continue
        argv.append(tok)
        if tok.startswith("-") and tok != "-":
            action = _options(current).get(flag)
            if action is not None and _takes_value(action) and not eq and i + 1 < len(tokens):
                argv.append(tokens[i + 1])
                i += 1
        elif tok in _verbs(current):
            current = _verbs(current)[tok]
            path.append(tok)
        i += 1
    return Command(argv=argv, path=path, out=out, parser=current)


def positional_indexes(cmd: Command) -> list[int]:
    """Indexes in ``cmd.argv`` of the verb's positional arguments (after the verb path)."""
    leaf = cmd.parser
    if leaf is None or not cmd.path:
        return []
    # the last token of the verb path: positionals come after it
    start = 0
    depth = 0
    for j, tok in enumerate(cmd.argv):
        if depth < len(cmd.path) and tok == cmd.path[depth]:
            depth += 1
            if depth == len(cmd.path):
                start = j + 1
                break
    found, j = [], start
    while j < len(cmd.argv):
        tok = cmd.argv[j]
        if tok == "--":
            found.extend(range(j + 1, len(cmd.argv)))
            break
        if tok.startswith("-") and tok != "-":
            flag, eq, _ = tok.partition("=")
            action = _options(leaf).get(flag)
            if action is not None and _takes_value(action) and not eq:
                j += 1
        else:
            found.append(j)
        j += 1
    return found


def option_name(parser: argparse.ArgumentParser | None, key: str) -> str:
    """``block_mode`` -> ``--block-mode``, unless the verb spells the option with underscores."""
    raw = f"--{key}"
    if raw in _options(parser):
        return raw
    return "--" + key.replace("_", "-")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def cell_options(body: Mapping[str, Any], parser: argparse.ArgumentParser | None) -> list[str]:
    """A `%%dfml` cell's YAML mapping as CLI options.

    Scalars give ``--key value``, lists repeat the option, ``true`` gives a bare flag (``false``
    and null leave it out), and a mapping gives repeated ``--key K=V`` (``params`` -> ``--param``).
    """
    out: list[str] = []
    for key, value in body.items():
        if not isinstance(key, str) or not key:
            raise UsageError(
                f"%%dfml: option names must be text, not {key!r}", hint="write `name: value` lines"
            )
        opt = option_name(parser, "param" if key == "params" else key)
        if value is None or value is False:
            continue
        if value is True:
            out.append(opt)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                out += [opt, f"{k}={_text(v)}"]
        elif isinstance(value, list | tuple):
            for v in value:
                if isinstance(v, Mapping | list | tuple):
                    raise UsageError(
                        f"%%dfml: {key!r} holds a nested structure the CLI cannot take",
                        hint=f"give {key} a list of plain values",
                    )
                out += [opt, _text(v)]
        else:
            out += [opt, _text(value)]
    return out
