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


def _scale_plot_labels(monkeypatch, tmp_path, points: tuple, twonn: tuple) -> tuple[list[str], bool]:
    """The x tick labels (and whether any overlap) of an intrinsic-dimension plot of MLE and GRIDE at `points`
    ((radius, dimension) pairs) and a TwoNN star at `twonn` (radius, dimension, ci_low, ci_high)."""
    seen = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: seen.append(_x_label_overlaps(fig)))
    curve = [{"group": None, "estimator": e, "radius": r, "dimension": d} for e in ("mle", "gride") for r, d in points]
    radius, dimension, low, high = twonn
    result = pl.DataFrame([{"group": None, "estimator": "twonn", "radius": radius, "dimension": dimension,
                            "ci_low": low, "ci_high": high}], schema_overrides={"group": pl.String})
    _plot_scales(curve, result, tmp_path / "plot.png", "data: vectors")
    (labels_overlap,) = seen
    return labels_overlap


def test_a_log_axis_spanning_less_than_a_decade_has_labels_that_do_not_overlap(monkeypatch, tmp_path):
    # The neighbourhood radii of data_manifold_scaling_quick's digits (18 to 25) were labelled
    # "1.8x10^1 1.9x10^1 ... 2.5x10^1", drawn on top of each other.
    labels, overlap = _scale_plot_labels(monkeypatch, tmp_path, ((17.9, 9.0), (19.8, 8.4), (22.1, 7.6), (25.0, 7.0)),
                                         (17.9, 8.9, 8.6, 9.3))
    assert not overlap, labels
    assert "20" in labels  # plain numbers


def test_a_log_axis_below_one_is_labelled_with_the_tick_values(monkeypatch, tmp_path):
    # Unit-length text embeddings have neighbourhood radii under 1 (0.49 to 0.65 for the quick study's docstrings):
    # the ticks from 0.55 to 0.65 were all labelled "6e-01".
    labels, overlap = _scale_plot_labels(monkeypatch, tmp_path, ((0.537, 5.2), (0.581, 7.6), (0.615, 8.3),
                                                                 (0.645, 8.3)), (0.49, 7.8, 6.9, 8.9))
    assert not overlap, labels
    assert len(set(labels)) == len(labels) and "0.6" in labels, labels
