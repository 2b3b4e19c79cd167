"""Figures of the scaling stages (stages/scaling/plots.py): tick labels a reader can read."""

from __future__ import annotations

import itertools

import matplotlib.figure
import polars as pl

from stages.scaling.intrinsic_dimension import _plot_scales


def _x_label_overlaps(fig) -> tuple[list[str], bool]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    labels = [t for t in ax.get_xticklabels(which="both")
              if t.get_visible() and t.get_text() and lo <= t.get_position()[0] <= hi]
    boxes = [t.get_window_extent(renderer) for t in labels]
    return [t.get_text() for t in labels], any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))


def test_a_log_axis_spanning_less_than_a_decade_has_labels_that_do_not_overlap(monkeypatch, tmp_path):
    # The neighbourhood radii of data_manifold_scaling_quick's digits (18 to 25) were labelled
    # "1.8x10^1 1.9x10^1 ... 2.5x10^1", drawn on top of each other.
    seen = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: seen.append(_x_label_overlaps(fig)))
    curve = [{"group": None, "estimator": e, "radius": r, "dimension": d}
             for e in ("mle", "gride") for r, d in ((17.9, 9.0), (19.8, 8.4), (22.1, 7.6), (25.0, 7.0))]
    result = pl.DataFrame([{"group": None, "estimator": "twonn", "radius": 17.9, "dimension": 8.9,
                            "ci_low": 8.6, "ci_high": 9.3}], schema_overrides={"group": pl.String})
    _plot_scales(curve, result, tmp_path / "plot.png", "digits: pixels")
    (labels, overlap), = seen
    assert not overlap, labels
    assert "20" in labels  # plain numbers
