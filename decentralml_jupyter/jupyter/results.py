"""Results of `%dfml`: the CLI's plain data in a dict or list that also renders as HTML.

`Record` (a dict) and `Records` (a list) compare equal to the plain data and index like it, so
`r = %dfml ...` is usable in code; in a notebook they show as tables, receipts compactly.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

# JupyterLab ranks application/json above text/html, so a JSON bundle would hide the tables;
# the JSON view is opt-in (`%config DFMLMagics.json_display = True`).
JSON_DISPLAY = False

RECEIPT_KEYS = {"block_hash", "block_number", "extrinsic_index", "success"}
_CSS = (
    "<style>.dfml-t{border-collapse:collapse;font-size:12px}"
    ".dfml-t th,.dfml-t td{border:1px solid #ccc;padding:2px 6px;text-align:left;"
    "vertical-align:top}.dfml-t th{background:#f4f4f4}.dfml-ok{color:#1a7f37}"
    ".dfml-bad{color:#cf222e}.dfml-mono{font-family:monospace}</style>"
)


def plain(value: Any) -> Any:
    """The JSON-able plain data behind a result (dict/list/scalars all the way down)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def is_receipt(value: Any) -> bool:
    return isinstance(value, Mapping) and RECEIPT_KEYS <= set(value)


def _short(text: str, keep: int = 10) -> str:
    return text if len(text) <= 2 * keep + 1 else f"{text[:keep]}…{text[-6:]}"


def receipt_html(receipt: Mapping[str, Any]) -> str:
    ok = receipt.get("success")
    mark = '<span class="dfml-ok">✓ included</span>' if ok else '<span class="dfml-bad">✗ failed'
    if not ok:
        mark += f": {html.escape(str(receipt.get('error') or 'unknown error'))}</span>"
    block_hash = str(receipt.get("block_hash") or "")
    return (
        f"{mark} in block #{html.escape(str(receipt.get('block_number')))}"
        f" (extrinsic {html.escape(str(receipt.get('extrinsic_index')))},"
        f' <span class="dfml-mono" title="{html.escape(block_hash)}">'
        f"{html.escape(_short(block_hash))}</span>)"
    )


def value_html(value: Any) -> str:
    if is_receipt(value):
        return receipt_html(value)
    if isinstance(value, Mapping):
        return dict_html(value)
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, Mapping) for v in value):
            return table_html(value)
        return html.escape(", ".join(str(v) for v in value)) if value else "—"
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<span title="{value}">{value:,}</span>'.replace(",", "\u202f")
    return html.escape(str(value))


def dict_html(data: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{value_html(v)}</td></tr>" for k, v in data.items()
    )
    return f'<table class="dfml-t">{rows}</table>'


def table_html(rows: list | tuple) -> str:
    if not rows:
        return "<em>no rows</em>"
    columns: list[str] = []
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{value_html(row.get(c))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f'<table class="dfml-t"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class Record(dict):
    """One result object (a dict): a key/value table in a notebook."""

    def _repr_html_(self) -> str:
        return _CSS + dict_html(self)

    def _repr_json_(self) -> dict | None:
        return plain(self) if JSON_DISPLAY else None

    def to_plain(self) -> dict:
        return plain(self)


class Records(list):
    """A list of result objects: one table with a column per field."""

    def _repr_html_(self) -> str:
        if self and all(isinstance(r, Mapping) for r in self):
            return _CSS + table_html(self)
        return _CSS + value_html(list(self))

    def _repr_json_(self) -> list | None:
        return plain(self) if JSON_DISPLAY else None

    def to_plain(self) -> list:
        return plain(self)


def wrap(value: Any) -> Any:
    """Give a verb's top-level dict or list its notebook rendering; leave scalars alone."""
    if isinstance(value, Mapping):
        return Record(value)
    if isinstance(value, list | tuple):
        return Records(value)
    return value
