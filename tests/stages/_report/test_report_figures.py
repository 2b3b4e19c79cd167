"""stages._report: figures inlined in reports are the same bytes in every run."""

from __future__ import annotations

from stages._report import figure, svg_inline


def _histogram():
    fig = figure(4, 3)
    ax = fig.add_subplot()
    ax.hist([0.1, 0.2, 0.2, 0.7, 0.9], bins=5)
    ax.set_title("scores")
    return fig


def test_an_inline_svg_has_no_date_and_fixed_ids():
    # matplotlib wrote the date and random element ids into each SVG, so every leakage report.html differed.
    first, second = svg_inline(_histogram()), svg_inline(_histogram())
    assert first == second
    assert "<dc:date>" not in first and first.startswith("<svg")
