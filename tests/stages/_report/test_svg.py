"""stages._report.svg: a histogram written as SVG draws what it was given, the same bytes every run."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from stages._report.svg import BOTTOM, HEIGHT, TOP, nice_ticks, stacked_histogram

NS = "{http://www.w3.org/2000/svg}"


def _layers():
    return [("clean", "#4c9a2a", [3, 1, 0, 0]), ("partial", "#e0a100", [0, 0, 0, 0]),
            ("contaminated", "#c0392b", [0, 2, 0, 5])]


def test_bars_stack_in_order_and_are_as_tall_as_their_counts():
    svg = stacked_histogram([0, 0.25, 0.5, 0.75, 1.0], _layers(), title="scores", ylabel="items")
    root = ET.fromstring(svg)
    bars = [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    # One bar per non-empty (layer, bin): clean in bins 0 and 1, contaminated in bins 1 and 3.
    assert [b.get("fill") for b in bars] == ["#4c9a2a", "#4c9a2a", "#c0392b", "#c0392b"]
    heights = [float(b.get("height")) for b in bars]
    unit = heights[0] / 3
    assert heights == pytest.approx([3 * unit, unit, 2 * unit, 5 * unit], abs=0.02)
    # The contaminated bar of bin 1 sits on top of the clean one.
    clean1, cont1 = bars[1], bars[2]
    assert float(cont1.get("y")) + float(cont1.get("height")) == pytest.approx(float(clean1.get("y")), abs=0.02)
    # The tallest stack (5) fits inside the plot area.
    assert min(float(b.get("y")) for b in bars) >= TOP
    assert max(float(b.get("y")) + float(b.get("height")) for b in bars) == pytest.approx(HEIGHT - BOTTOM, abs=0.02)
    # An empty layer is in neither the bars nor the legend.
    assert "partial" not in svg and "contaminated" in svg


def test_thresholds_are_drawn_and_labelled_and_text_is_escaped():
    svg = stacked_histogram([0, 0.5, 1.0], [("a<b", "#111", [1, 1])], title="x & y", ylabel="n",
                            thresholds=[0.42, 7.0])
    root = ET.fromstring(svg)  # parses: the & and < were escaped
    dashed = [p for p in root.iter(f"{NS}path") if p.get("stroke-dasharray")]
    assert len(dashed) == 1  # 7.0 is outside the axis and is not drawn
    assert any(t.text == "0.42" for t in root.iter(f"{NS}text"))
    assert "x &amp; y" in svg and "a&lt;b" in svg


def test_same_input_same_bytes_and_mismatched_counts_are_refused():
    assert stacked_histogram([0, 1, 2], [("a", "#111", [2, 0])], title="t", ylabel="n") == \
        stacked_histogram(np.array([0.0, 1.0, 2.0]), [("a", "#111", np.array([2, 0]))], title="t", ylabel="n")
    with pytest.raises(ValueError, match="3 edges need 2 counts"):
        stacked_histogram([0, 1, 2], [("a", "#111", [1, 2, 3])], title="t", ylabel="n")


@pytest.mark.parametrize("lo, hi, expected", [(0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]), (0, 37, [0, 10, 20, 30]),
                                              (-0.13, 1, [0, 0.5, 1.0]), (5, 5, [5])])
def test_nice_ticks_are_round_and_inside_the_range(lo, hi, expected):
    assert nice_ticks(lo, hi) == pytest.approx(expected)


@pytest.mark.parametrize("lo, hi", [(1e-12, 3e-12), (-1e-15, 1e-15), (1e6, 1e6 + 1e-4), (100, 100 + 1e-11),
                                    (0.123456789, 0.12345679)])
def test_ticks_of_a_narrow_range_are_distinct_and_so_are_their_labels(lo, hi):
    # Ticks were rounded to 10 decimals (1e-12 apart: all 0.0) and labelled with 6 significant digits (2e-5 apart
    # near 1e6: all "1e+06"): a histogram of near-equal scores had one label repeated along its axis.
    from stages._report.svg import tick_labels

    ticks = nice_ticks(lo, hi)
    assert len(ticks) >= 3 and ticks == sorted(set(ticks))
    assert lo - 1e-9 * abs(lo) <= ticks[0] and ticks[-1] <= hi + 1e-9 * abs(hi)
    labels = tick_labels(ticks)
    assert len(set(labels)) == len(labels), labels
    assert tick_labels([0.0, 0.2, 0.4]) == ["0", "0.2", "0.4"]  # labels of ordinary ticks are as before
