"""Small inline SVG charts for the widgets: a metric per round, and per-account amounts.

Plain SVG text, so charts render in any front end with no plotting library and no network.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence


def _fmt(v: float) -> str:
    if isinstance(v, int) or float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def short_address(address: str, keep: int = 6) -> str:
    return address if len(address) <= 2 * keep + 1 else f"{address[:keep]}…{address[-4:]}"


# Metrics that live in [0, 1] (Keras names): their axis is always 0..1, so rounds compare at
# a glance; any other metric (loss, mae, mse, ...) gets 0..a nice bound above its largest value.
UNIT_METRICS = frozenset(
    {"accuracy", "auc", "precision", "recall", "f1_score", "prc", "iou", "r2_score"}
)


def is_unit_metric(name: str) -> bool:
    """Whether metric ``name`` is a fraction in [0, 1] (accuracy, auc, ...)."""
    return name in UNIT_METRICS or name.endswith("accuracy")


def nice_ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """At most ``most`` evenly spaced round values (steps of 1, 2, 2.5 or 5 times a power of
    ten) from at or below ``lo`` to at or above ``hi``."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    magnitude = 10 ** math.floor(math.log10((hi - lo) / (most - 1)))
    for m in (1, 2, 2.5, 5, 10):
        step = m * magnitude
        first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
        if last - first <= most - 1:
            break
    return [round((first + i) * step, 12) for i in range(last - first + 1)]


def round_ticks(x0: int, x1: int, most: int = 8) -> list[int]:
    """Round numbers to label from ``x0`` to ``x1``: whole, distinct, evenly spaced."""
    step = 1
    while (x1 - x0) // step + 1 > most:
        step = next(s * 10**k for k in range(12) for s in (1, 2, 5) if s * 10**k > step)
    first = -(-x0 // step) * step
    return list(range(first, x1 + 1, step))


def _tick(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e5 else _fmt(v)


def line_chart(
    points: Sequence[tuple[float, float]],
    title: str,
    color: str = "#1f77b4",
    width: int = 300,
    height: int = 170,
) -> str:
    """A metric named ``title`` (y) over rounds (x): a line with a dot per round, y ticks at
    round values (0..1 for a fraction such as accuracy, from 0 otherwise), one label per round
    number shown; a single round is a dot with its value, in the middle."""
    pad_l, pad_r, pad_t, pad_b = 40, 12, 24, 34
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    head = html.escape(title)
    svg_open = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{head} by round" font-family="sans-serif" data-metric="{head}">'
    )
    if not points:
        return (
            f'{svg_open}<text x="{pad_l}" y="14" font-size="12">{head}</text>'
            f'<text x="{pad_l}" y="{height / 2:.0f}" font-size="11" fill="#888">no rounds yet'
            "</text></svg>"
        )
    by_round = dict(sorted((int(x), float(y)) for x, y in points))  # one value per round
    xs, ys = list(by_round), list(by_round.values())
    if is_unit_metric(title) and all(0.0 <= y <= 1.0 for y in ys):
        yticks = nice_ticks(0.0, 1.0, 5)
    else:
        yticks = nice_ticks(min(0.0, *ys), max(ys), 5)
    y0, y1 = yticks[0], yticks[-1]
    xticks = round_ticks(xs[0], xs[-1])
    # a single round sits in the middle of the axis
    x0, x1 = (xs[0] - 1, xs[0] + 1) if len(xs) == 1 else (xs[0], xs[-1])

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * w

    def sy(y: float) -> float:
        return pad_t + (1 - (y - y0) / (y1 - y0)) * h

    parts = [
        svg_open,
        f'<text x="{pad_l}" y="14" font-size="12"><tspan font-weight="bold">{head}</tspan>'
        f" · round {xs[-1]}: {_fmt(ys[-1])}</text>",
    ]
    for v in yticks:  # gridlines with their values
        y = sy(v)
        parts.append(
            f'<line x1="{pad_l}" y1="{y:.1f}" x2="{pad_l + w}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text class="y-tick" x="{pad_l - 4}" y="{y + 3.5:.1f}" font-size="10" '
            f'text-anchor="end">{_tick(v)}</text>'
        )
    for x in xticks:
        parts.append(
            f'<line x1="{sx(x):.1f}" y1="{pad_t + h}" x2="{sx(x):.1f}" y2="{pad_t + h + 4}" '
            f'stroke="#999"/><text class="x-tick" x="{sx(x):.1f}" y="{pad_t + h + 15}" '
            f'font-size="10" text-anchor="middle">{x}</text>'
        )
    parts.append(
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + h}" stroke="#999"/>'
        f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" stroke="#999"/>'
        f'<text class="x-title" x="{pad_l + w / 2:.1f}" y="{height - 3}" font-size="10" '
        f'text-anchor="middle" fill="#555">round</text>'
    )
    if len(xs) > 1:
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in by_round.items())
        parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
    else:  # one round: its value beside its dot
        parts.append(
            f'<text x="{sx(xs[0]) + 7:.1f}" y="{sy(ys[0]) - 6:.1f}" font-size="10" '
            f'fill="{color}">{_fmt(ys[0])}</text>'
        )
    parts.extend(
        f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}">'
        f"<title>round {x}: {head} {_fmt(y)}</title></circle>"
        for x, y in by_round.items()
    )
    parts.append("</svg>")
    return "".join(parts)


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
