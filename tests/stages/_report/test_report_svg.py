"""The hand-written SVG histogram: stacked bars in proportion, round ticks, thresholds, escaped text."""

import re
import xml.etree.ElementTree as ET

import numpy as np

from stages._report.svg import nice_ticks, stacked_histogram

SVG = "{http://www.w3.org/2000/svg}"


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.0, 52.5) == [0.0, 20.0, 40.0]
    assert [f"{t:g}" for t in nice_ticks(-0.3, 1.0)] == ["0", "0.5", "1"]  # at most 6: steps of 0.5; no "-0"
    assert nice_ticks(3.0, 3.0) == [3.0]


def test_bars_stack_in_proportion_with_thresholds_and_escaped_labels():
    edges = np.linspace(0.0, 1.0, 5)
    stacks = [("clean", "#0a0", np.array([4, 0, 0, 2])), ("dirty <x>", "#a00", np.array([0, 0, 3, 2]))]
    svg = stacked_histogram(edges, stacks, "score & more", "items", [0.5, 7.0])
    root = ET.fromstring(svg)  # well-formed XML, so the escaping held
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert [r.find(f"{SVG}title").text for r in bars] == ["clean: 4", "clean: 2", "dirty <x>: 3", "dirty <x>: 2"]
    heights = {r.find(f"{SVG}title").text: float(r.get("height")) for r in bars}
    assert abs(heights["clean: 4"] - 2 * heights["clean: 2"]) < 0.2
    # The last bin's second bar sits on top of its first.
    last = [r for r in bars if r.get("x") == bars[1].get("x")]
    assert abs(float(last[1].get("y")) + float(last[1].get("height")) - float(last[0].get("y"))) < 0.2
    dashed = [ln for ln in root.iter(f"{SVG}line") if ln.get("stroke-dasharray")]
    assert len(dashed) == 1, "a threshold outside the axis is not drawn"
    assert "score &amp; more" in svg and re.search(r">0\.5<", svg)


def test_all_zero_counts_still_draw_axes():
    svg = stacked_histogram(np.linspace(0, 1, 3), [("clean", "#0a0", np.zeros(2, int))], "t", "items")
    root = ET.fromstring(svg)
    assert not [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert root.find(f"{SVG}path") is not None
