"""Charts as SVG text, drawn by the server: series in, markup out, no JavaScript, no CDN.

Why not a charting library: the console needs three shapes (bars over categories, bars
stacked by a second dimension, lines over time), and a pure function that returns SVG is
tested directly, works with JavaScript off and under a strict Content-Security-Policy
(no inline styles: only presentation attributes and classes from the console's own
stylesheet), and adds nothing to build. Every chart has a title, labelled axes with
"nice" ticks, and direct labels (stack keys beside the title in stack order, line names at
the line's end), so it reads without a legend hunt. Every label is escaped here: names
come from operators and users, and ``<script>`` in one is text, never markup.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Line", "bar_chart", "compact", "line_chart", "nice_ticks", "stacked_bar_chart"]

WIDTH, HEIGHT = 720, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 56, 56
# a palette that stays apart for the colour-blind (Okabe and Ito)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a line chart; ``None`` values leave a gap (no data for that point)."""

    name: str
    values: Sequence[float | None]


def nice_ticks(top: float, count: int = 5, *, whole: bool = False) -> list[float]:
    """Axis ticks from 0 to at least ``top`` in steps of 1, 2 or 5 times a power of ten;
    ``whole``: no step below 1 (counts of requests or tokens)."""
    if not math.isfinite(top) or top <= 0:
        return [0.0, 1.0]
    raw = max(top / max(1, count), 1.0 if whole else 0.0)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    n = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(n + 1)]


def compact(value: float, unit: str = "") -> str:
    """1234 -> "1.2k", 0.5 with unit "%" -> "50 %": short axis and bar labels."""
    if unit == "%":
        pct = round(float(value) * 100, 6)
        return f"{pct:.0f} %" if pct.is_integer() else f"{pct:.1f} %"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            text = f"{value / size:.1f}".rstrip("0").rstrip(".") + suffix
            break
    else:
        text = f"{value:.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:.0f}"
    return f"{text} {unit}".rstrip() if unit else text


def _t(text: object) -> str:
    return escape(str(text), quote=True)


def _frame(title: str, desc: str, body: list[str], width: int, height: int) -> str:
    ident = "c" + hashlib.sha256((title + desc).encode()).hexdigest()[:10]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-labelledby="{ident}-t {ident}-d">'
        f'<title id="{ident}-t">{_t(title)}</title><desc id="{ident}-d">{_t(desc)}</desc>'
        f'<text class="chart-title" x="{LEFT}" y="22">{_t(title)}</text>' + "".join(body) + "</svg>"
    )


def _y_axis(ticks: list[float], unit: str, label: str, height: int, width: int) -> list[str]:
    top = ticks[-1]
    plot_h = height - TOP - BOTTOM
    out = []
    for v in ticks:
        y = TOP + plot_h - (v / top) * plot_h
        out.append(
            f'<line class="grid" x1="{LEFT}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_t(compact(v, unit))}</text>"
        )
    out.append(
        f'<text class="axis-label" x="14" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.1f})">{_t(label)}</text>'
    )
    return out


def _x_labels(labels: Sequence[str], xs: list[float], height: int, every: int) -> list[str]:
    return [
        f'<text class="tick" x="{x:.1f}" y="{height - BOTTOM + 16}" text-anchor="middle">'
        f"{_t(lab)}</text>"
        for i, (lab, x) in enumerate(zip(labels, xs, strict=True))
        # every k-th, and the last, with room before it
        if (i % every == 0 and len(labels) - 1 - i >= max(every, 2)) or i == len(labels) - 1
    ]


def _x_title(label: str, width: int, height: int) -> str:
    mid = LEFT + (width - LEFT - RIGHT) / 2
    return (
        f'<text class="axis-label" x="{mid:.1f}" y="{height - 12}" text-anchor="middle">'
        f"{_t(label)}</text>"
    )


def _empty(width: int, height: int) -> str:
    return (
        f'<text class="empty" x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle">'
        "no data yet</text>"
    )


def _every(n: int, width: int) -> int:
    """Label every k-th category so labels (about 48 px wide) do not overlap."""
    room = max(1, (width - LEFT - RIGHT) // 48)
    return max(1, math.ceil(n / room))


def stacked_bar_chart(
    title: str,
    categories: Sequence[str],
    stacks: Mapping[str, Sequence[float]],
    *,
    unit: str = "",
    x_label: str = "",
    y_label: str = "",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """Vertical bars over ``categories`` (days, say), each split by the keys of ``stacks``
    (models, say; every sequence as long as ``categories``). The keys are named beside the
    title in stack order and in every segment's tooltip."""
    names = list(stacks)
    totals = [sum(stacks[n][i] for n in names) for i in range(len(categories))]
    desc = "; ".join(f"{c}: {compact(t, unit)}" for c, t in zip(categories, totals, strict=True))
    body: list[str] = []
    x: float = LEFT + 8.0
    for i, name in enumerate(names):  # the key, bottom of the stack first
        colour = PALETTE[i % len(PALETTE)]
        body.append(
            f'<rect x="{x:.1f}" y="32" width="10" height="10" fill="{colour}"/>'
            f'<text class="key" x="{x + 14:.1f}" y="41">{_t(name)}</text>'
        )
        x += 24 + 7 * len(name)
    if not categories or not any(totals):
        return _frame(title, desc or "no data", [*body, _empty(width, height)], width, height)
    ticks = nice_ticks(max(totals), whole=all(float(t).is_integer() for t in totals))
    body += _y_axis(ticks, unit, y_label, height, width)
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    slot = plot_w / len(categories)
    bar_w = max(2.0, min(48.0, slot * 0.7))
    centres = []
    for i, cat in enumerate(categories):
        cx = LEFT + slot * (i + 0.5)
        centres.append(cx)
        base: float = TOP + plot_h
        for j, name in enumerate(names):
            v = stacks[name][i]
            if v <= 0:
                continue
            h = v / ticks[-1] * plot_h
            base -= h
            body.append(
                f'<rect class="bar" x="{cx - bar_w / 2:.1f}" y="{base:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" fill="{PALETTE[j % len(PALETTE)]}">'
                f"<title>{_t(cat)} · {_t(name)}: {_t(compact(v, unit))}</title></rect>"
            )
    body += _x_labels(categories, centres, height, _every(len(categories), width))
    body.append(_x_title(x_label, width, height))
    return _frame(title, desc, body, width, height)


def bar_chart(
    title: str,
    bars: Sequence[tuple[str, float]],
    *,
    unit: str = "",
    value_label: str = "",
    width: int = WIDTH,
) -> str:
    """Horizontal bars, one per (label, value), each named at its left and valued at its
    end: the chart for "by person / key / model", where names are long."""
    row = 26
    height = TOP + max(1, len(bars)) * row + 40
    label_w = 200
    desc = "; ".join(f"{lab}: {compact(v, unit)}" for lab, v in bars) or "no data"
    if not bars:  # bars of zero are data (nothing in flight), drawn on a 0..1 axis
        return _frame(title, desc, [_empty(width, height)], width, height)
    ticks = nice_ticks(max(v for _, v in bars), whole=all(float(v).is_integer() for _, v in bars))
    x0, plot_w = label_w, width - label_w - RIGHT - 56
    body = []
    for v in ticks:
        x = x0 + v / ticks[-1] * plot_w
        body.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP - 6}" y2="{height - 34}"/>'
            f'<text class="tick" x="{x:.1f}" y="{height - 20}" text-anchor="middle">'
            f"{_t(compact(v, unit))}</text>"
        )
    for i, (lab, v) in enumerate(bars):
        y = TOP + i * row
        w = v / ticks[-1] * plot_w
        # a long name is cut; its tooltip says it whole
        shown = lab if len(lab) <= 26 else lab[:25] + "…"
        full = "" if shown == lab else f"<title>{_t(lab)}</title>"
        body.append(
            f'<text class="key" x="{x0 - 8}" y="{y + 15}" text-anchor="end">'
            f"{_t(shown)}{full}</text>"
            f'<rect class="bar" x="{x0}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" '
            f'fill="{PALETTE[0]}"><title>{_t(lab)}: {_t(compact(v, unit))}</title></rect>'
            f'<text class="value" x="{x0 + w + 6:.1f}" y="{y + 15}">{_t(compact(v, unit))}</text>'
        )
    body.append(_x_title(value_label, width + label_w - LEFT, height + 6))
    return _frame(title, desc, body, width, height)


def _spread(
    labels: list[tuple[float, float, str, str]], gap: float = 13.0
) -> list[tuple[float, float, str, str]]:
    """End labels moved apart vertically (keeping their order) so none overlap."""
    out: list[tuple[float, float, str, str]] = []
    for y, x, name, colour in sorted(labels):
        if out and y - out[-1][0] < gap:
            y = out[-1][0] + gap
        out.append((y, x, name, colour))
    return out


def line_chart(
    title: str,
    x_labels: Sequence[str],
    lines: Sequence[Line],
    *,
    unit: str = "",
    x_label: str = "",
    y_label: str = "",
    y_max: float | None = None,
    reference: tuple[str, float] | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """Lines over ``x_labels`` (hours, days), each named at its last point; ``reference``
    draws a dashed, labelled horizontal line (a budget); ``y_max`` fixes the scale (1.0
    for a fraction shown in %)."""
    values = [v for ln in lines for v in ln.values if v is not None]
    desc = "; ".join(
        f"{ln.name}: " + ", ".join("no data" if v is None else compact(v, unit) for v in ln.values)
        for ln in lines
    )
    right = RIGHT + 96  # room for the names at the lines' ends
    if not x_labels or not values:
        return _frame(title, desc or "no data", [_empty(width, height)], width, height)
    top = y_max if y_max is not None else max([*values, reference[1] if reference else 0.0])
    ticks = [t for t in nice_ticks(top) if y_max is None or t <= y_max + 1e-9]
    if y_max is not None and ticks[-1] < y_max:
        ticks.append(y_max)
    scale = ticks[-1] or 1.0
    body = _y_axis(ticks, unit, y_label, height, width - right + RIGHT)
    plot_w, plot_h = width - LEFT - right, height - TOP - BOTTOM
    n = len(x_labels)
    xs = [LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2) for i in range(n)]

    def y_of(v: float) -> float:
        return TOP + plot_h - max(0.0, min(v, scale)) / scale * plot_h

    ends: list[tuple[float, float, str, str]] = []  # (y, x, name, colour) of end labels
    if reference is not None:
        ry = y_of(reference[1])
        body.append(
            f'<line class="reference" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{ry:.1f}" '
            f'y2="{ry:.1f}"/>'
        )
        ends.append((ry, LEFT + plot_w + 8, reference[0], "#b42318"))
    for k, ln in enumerate(lines):
        colour = PALETTE[k % len(PALETTE)]
        path, last = [], None
        for i, v in enumerate(ln.values):
            if v is None:
                continue
            cmd = "L" if last == i - 1 else "M"
            path.append(f"{cmd}{xs[i]:.1f},{y_of(v):.1f}")
            body.append(
                f'<circle cx="{xs[i]:.1f}" cy="{y_of(v):.1f}" r="2.5" fill="{colour}">'
                f"<title>{_t(ln.name)} · {_t(x_labels[i])}: {_t(compact(v, unit))}</title></circle>"
            )
            last = i
        if path:
            body.append(f'<path class="line" d="{" ".join(path)}" stroke="{colour}" fill="none"/>')
        if last is not None:
            v_last = ln.values[last]
            assert v_last is not None
            ends.append((y_of(v_last), xs[last] + 8, ln.name, colour))
    body += [
        f'<text class="key" x="{x:.1f}" y="{y + 4:.1f}" fill="{colour}">{_t(name)}</text>'
        for y, x, name, colour in _spread(ends)
    ]
    body += _x_labels(x_labels, xs, height, _every(n, width - right + RIGHT))
    body.append(_x_title(x_label, width - right + RIGHT, height))
    return _frame(title, desc, body, width, height)
