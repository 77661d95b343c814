"""Small inline SVG charts for the widgets: a metric per round, and per-account amounts.

Plain SVG text, so charts render in any front end with no plotting library and no network.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence


def _fmt(v: float) -> str:
    if isinstance(v, int) or float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def short_address(address: str, keep: int = 6) -> str:
    return address if len(address) <= 2 * keep + 1 else f"{address[:keep]}…{address[-4:]}"


def line_chart(
    points: Sequence[tuple[float, float]],
    title: str,
    color: str = "#1f77b4",
    width: int = 300,
    height: int = 160,
) -> str:
    """One metric (y) per round (x), with its range on the axis and the last value in the title."""
    pad_l, pad_r, pad_t, pad_b = 44, 10, 22, 24
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    head = html.escape(title)
    if not points:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'role="img" aria-label="{head}"><text x="{pad_l}" y="14" font-size="12">{head}</text>'
            f'<text x="{pad_l}" y="{height / 2:.0f}" font-size="11" fill="#888">no rounds yet'
            "</text></svg>"
        )
    pts = sorted((float(x), float(y)) for x, y in points)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y0 == y1:  # a flat line still needs a range to be drawn in
        y0, y1 = y0 - 0.5 if y0 else 0.0, y1 + 0.5 if y1 else 1.0
    sx = (lambda x: pad_l + (x - x0) / (x1 - x0) * w) if x1 > x0 else (lambda x: pad_l + w / 2)

    def sy(y: float) -> float:
        return pad_t + (1 - (y - y0) / (y1 - y0)) * h

    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    dots = "".join(
        f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}">'
        f"<title>round {_fmt(x)}: {_fmt(y)}</title></circle>"
        for x, y in pts
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{head}" font-family="sans-serif">'
        f'<text x="{pad_l}" y="14" font-size="12">{head}: {_fmt(ys[-1])}</text>'
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + h}" stroke="#999"/>'
        f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" stroke="#999"/>'
        f'<text x="{pad_l - 4}" y="{pad_t + 4}" font-size="10" text-anchor="end">{_fmt(y1)}</text>'
        f'<text x="{pad_l - 4}" y="{pad_t + h}" font-size="10" text-anchor="end">{_fmt(y0)}</text>'
        f'<text x="{pad_l}" y="{height - 6}" font-size="10">round {_fmt(x0)}</text>'
        f'<text x="{pad_l + w}" y="{height - 6}" font-size="10" text-anchor="end">'
        f"round {_fmt(x1)}</text>"
        f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>{dots}</svg>'
    )


def bar_chart(
    values: Mapping[str, float], title: str, color: str = "#2ca02c", width: int = 300
) -> str:
    """Horizontal bars, one per account (short address), largest first."""
    row, pad_t, label_w = 18, 22, 110
    items = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    height = pad_t + row * max(1, len(items)) + 6
    head = html.escape(title)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{head}" font-family="sans-serif">'
        f'<text x="0" y="14" font-size="12">{head}</text>'
    ]
    if not items:
        parts.append(f'<text x="0" y="{pad_t + 12}" font-size="11" fill="#888">none</text>')
    top = max((abs(v) for _, v in items), default=0) or 1
    span = width - label_w - 70
    for i, (who, amount) in enumerate(items):
        y = pad_t + i * row
        bar = max(1.0, abs(amount) / top * span)
        parts.append(
            f'<text x="0" y="{y + 12}" font-size="11"><title>{html.escape(who)}</title>'
            f"{html.escape(short_address(who))}</text>"
            f'<rect x="{label_w}" y="{y + 2}" width="{bar:.1f}" height="{row - 6}" fill="{color}"/>'
            f'<text x="{label_w + bar + 4:.1f}" y="{y + 12}" font-size="11">{_fmt(amount)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
