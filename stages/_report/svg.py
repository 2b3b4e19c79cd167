"""Small plots written directly as inline SVG: no matplotlib on a stage's critical path.

A stacked histogram is a few dozen rectangles, two axes and some text. Drawing it with matplotlib
cost the leakage audit about a second per run (importing matplotlib's figure machinery is most of it),
which is a fixed serial cost at the end of every run, local or on Ray. These plots stay readable
and selectable (text is <text>), and the report stays one self-contained file.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

WIDTH, HEIGHT = 380, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 10, 28, 34  # plot-area margins in px


def nice_ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 x 10^k) covering [lo, hi], at most `most` of them."""
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / max(most - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) + 0.0 for i in range(int((hi - first) / step + 1e-9) + 1)]


def stacked_histogram(edges: np.ndarray, stacks: list[tuple[str, str, np.ndarray]], title: str, ylabel: str,
                      thresholds: list[float] = ()) -> str:
    """An inline <svg> of stacked bars: `stacks` = (label, colour, counts per bin), bottom first; thresholds dashed."""
    lo, hi = float(edges[0]), float(edges[-1])
    total = np.sum([c for _, _, c in stacks], axis=0) if stacks else np.zeros(len(edges) - 1)
    top = max(float(total.max(initial=0)), 1.0) * 1.05
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(v: float) -> float:
        return LEFT + (v - lo) / ((hi - lo) or 1.0) * w

    def y(v: float) -> float:
        return TOP + h - v / top * h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
           'font-family="sans-serif">',
           f'<text x="{LEFT + w / 2:.1f}" y="16" font-size="12" text-anchor="middle">{escape(title)}</text>',
           f'<text transform="translate(13 {TOP + h / 2:.1f}) rotate(-90)" font-size="10" '
           f'text-anchor="middle">{escape(ylabel)}</text>']
    below = np.zeros(len(edges) - 1)
    for label, colour, counts in stacks:
        for i in np.flatnonzero(counts):
            out.append(f'<rect x="{x(edges[i]):.1f}" y="{y(below[i] + counts[i]):.1f}" '
                       f'width="{max(x(edges[i + 1]) - x(edges[i]), 0.5):.1f}" height="{counts[i] / top * h:.1f}" '
                       f'fill="{colour}"><title>{escape(label)}: {int(counts[i])}</title></rect>')
        below = below + counts
    out.append(f'<path d="M{LEFT} {TOP}V{TOP + h}H{LEFT + w}" fill="none" stroke="#333" stroke-width="1"/>')
    for t in nice_ticks(lo, hi):
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TOP + h}" y2="{TOP + h + 4}" stroke="#333"/>'
                   f'<text x="{x(t):.1f}" y="{TOP + h + 15}" font-size="9" text-anchor="middle">{t:g}</text>')
    for t in nice_ticks(0.0, top):
        if t == int(t):
            out.append(f'<line x1="{LEFT - 4}" x2="{LEFT}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#333"/>'
                       f'<text x="{LEFT - 6}" y="{y(t) + 3:.1f}" font-size="9" text-anchor="end">{int(t)}</text>')
    for t in (t for t in thresholds if lo <= t <= hi):
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TOP}" y2="{TOP + h}" stroke="#333" '
                   f'stroke-dasharray="4 3"/><text transform="translate({x(t) - 3:.1f} {TOP + 3}) rotate(-90)" '
                   f'font-size="8" text-anchor="end">{t:.3g}</text>')
    shown = [(label, colour) for label, colour, counts in stacks if counts.any()]
    for k, (label, colour) in enumerate(shown):
        ly = TOP + 6 + 13 * k
        out.append(f'<rect x="{LEFT + w - 88}" y="{ly}" width="10" height="8" fill="{colour}"/>'
                   f'<text x="{LEFT + w - 74}" y="{ly + 8}" font-size="9">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)
