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


# Fields that hold amounts of the chain's token (integers of its smallest unit); with the
# token known, tables show them in tokens (the data itself keeps the integers).
AMOUNT_KEYS = frozenset(
    {
        "free", "reserved", "amount", "total_stake", "stake", "reward", "rewards", "slashes",
        "fee", "ayes", "nays", "escrow", "on_chain", "held", "owed", "budget", "round_reward",
        "min_stake",
    }
)  # fmt: skip


def tokens(value: int, token: Mapping[str, Any]) -> str:
    """``value`` smallest units as tokens, exactly (``12.5 ROC``): no float in between."""
    from decimal import Decimal

    amount = Decimal(value).scaleb(-int(token["decimals"]))
    text = format(amount.normalize(), "f") if amount else "0"
    whole, _, frac = text.partition(".")
    whole = f"{int(whole):,}".replace(",", "\u202f") if whole.lstrip("-").isdigit() else whole
    return f"{whole}{'.' + frac if frac else ''} {html.escape(str(token['symbol']))}"


def value_html(value: Any, token: Mapping[str, Any] | None = None, amount: bool = False) -> str:
    """``value`` as HTML; an ``amount`` (with ``token`` known) in tokens, its integer in the
    tooltip."""
    if is_receipt(value):
        return receipt_html(value)
    if isinstance(value, Mapping):
        return dict_html(value, token, amount)
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, Mapping) for v in value):
            return table_html(value, token)
        return html.escape(", ".join(str(v) for v in value)) if value else "—"
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        if amount and token is not None:
            return f'<span title="{value}">{tokens(value, token)}</span>'
        return f'<span title="{value}">{value:,}</span>'.replace(",", "\u202f")
    return html.escape(str(value))


def dict_html(
    data: Mapping[str, Any], token: Mapping[str, Any] | None = None, amount: bool = False
) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th>"
        f"<td>{value_html(v, token, amount or k in AMOUNT_KEYS)}</td></tr>"
        for k, v in data.items()
    )
    return f'<table class="dfml-t">{rows}</table>'


def has_amounts(value: Any) -> bool:
    """Whether a result holds a field of AMOUNT_KEYS (at its top level or in its rows)."""
    if isinstance(value, Mapping):
        return any(k in AMOUNT_KEYS for k in value)
    if isinstance(value, list | tuple):
        return any(has_amounts(v) for v in value[:1])
    return False


def table_html(rows: list | tuple, token: Mapping[str, Any] | None = None) -> str:
    if not rows:
        return "<em>no rows</em>"
    columns: list[str] = []
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{value_html(row.get(c), token, c in AMOUNT_KEYS)}</td>" for c in columns)
        + "</tr>"
        for row in rows
    )
    return f'<table class="dfml-t"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class Record(dict):
    """One result object (a dict): a key/value table in a notebook (amounts in the chain's
    token when ``token`` is known; the dict keeps the integers)."""

    token: Mapping[str, Any] | None = None

    def _repr_html_(self) -> str:
        return _CSS + dict_html(self, self.token)

    def _repr_json_(self) -> dict | None:
        return plain(self) if JSON_DISPLAY else None

    def to_plain(self) -> dict:
        return plain(self)


class Records(list):
    """A list of result objects: one table with a column per field."""

    token: Mapping[str, Any] | None = None

    def _repr_html_(self) -> str:
        if self and all(isinstance(r, Mapping) for r in self):
            return _CSS + table_html(self, self.token)
        return _CSS + value_html(list(self), self.token)

    def _repr_json_(self) -> list | None:
        return plain(self) if JSON_DISPLAY else None

    def to_plain(self) -> list:
        return plain(self)


def wrap(value: Any, token: Mapping[str, Any] | None = None) -> Any:
    """Give a verb's top-level dict or list its notebook rendering (amounts in ``token``,
    ``{"symbol", "decimals"}``, when given); leave scalars alone."""
    if isinstance(value, Mapping):
        out: Any = Record(value)
    elif isinstance(value, list | tuple):
        out = Records(value)
    else:
        return value
    out.token = token
    return out
