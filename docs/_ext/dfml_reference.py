"""The `dfml` / `%dfml` reference, generated from the CLI's own argument parser.

A page holding the line `<!-- dfml-reference -->` gets, in its place and before it is parsed,
one section per verb (usage, description, arguments with their defaults), walking
`decentralml_jupyter.cli.build_parser()`: the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse

MARKER = "<!-- dfml-reference -->"


def verbs(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path, leaf parser) for every runnable verb, in the parser's order (the CLI's parser
    keeps its verbs in ``parser.verbs``)."""
    if not parser.verbs:
        yield path, parser
        return
    for name, child in parser.verbs.items():
        yield from verbs(child, (*path, name))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser.arguments:
        if "-h" in action.option_strings:
            continue
        name = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest.upper()}`"
        if action.choices:
            name += " (" + " \\| ".join(f"`{c}`" for c in action.choices) + ")"
        if action.nargs == 0:
            default = ""
        elif action.required or not action.option_strings:
            default = "required" if action.nargs not in ("?", "*", "...") else "optional"
        else:
            default = "" if action.default is None else f"`{action.default}`"
        help_text = action.help or ""
        if help_text == argparse.SUPPRESS:
            continue
        rows.append(f"| {name} | {_cell(help_text)} | {default} |")
    if not rows:
        return []
    return ["| argument | meaning | default |", "|---|---|---|", *rows, ""]


def reference_markdown(parser: argparse.ArgumentParser) -> str:
    lines = ["## Global options", "", *_arguments(parser)]
    for path, leaf in verbs(parser):
        verb = " ".join(path)
        lines += [f"## `{verb}`", "", _cell(leaf.description or ""), ""]
        usage = leaf.format_usage().replace("usage: ", "").strip()
        lines += ["```text", usage, "```", "", *_arguments(leaf)]
    return "\n".join(lines) + "\n"


def _fill(app, docname: str, source: list[str]) -> None:
    if MARKER in source[0]:
        from decentralml_jupyter.cli import build_parser

        source[0] = source[0].replace(MARKER, reference_markdown(build_parser("dfml")))


def setup(app):
    app.connect("source-read", _fill)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
