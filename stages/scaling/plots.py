"""Figures of the scaling stages: power-law fits with bootstrap bands and residuals, transfer curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plain_log_ticks(axis: Any) -> None:
    """Label a log axis in plain numbers ("20", "300"). Matplotlib's default labels the minor ticks of an axis
    spanning less than a decade as "2.3x10^1 2.4x10^1 ...", which overlap on a 6-inch figure (the neighbourhood
    radii of an intrinsic-dimension plot, the subset sizes of a quick study); plain numbers fit. Below 1 too:
    matplotlib's LogFormatter writes those with one digit ("6e-01" for 0.55, 0.6 and 0.65 alike: the radii of
    unit-length embeddings), so they are written with up to three significant digits ("0.55")."""
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        def _num_to_string(self, x, vmin, vmax):
            return f"{x:.3g}" if x < 1 else super()._num_to_string(x, vmin, vmax)

    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def source_name(label: str | None) -> str:
    """What a plot's title calls its input: the step's (or file's) name, not its path, so the same run in
    another workdir draws the same bytes."""
    return Path(label).name if label else "data"


def bootstrap_band(law: Any, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pointwise band of the bootstrap replicate curves at the fit's own confidence level (the
    band and the intervals in the report then say the same thing)."""
    band = law.curves[:, :1] + law.curves[:, 1:2] * grid[None, :] ** -law.curves[:, 2:3]
    tail = (1.0 - law.confidence) / 2.0
    return np.quantile(band, tail, axis=0), np.quantile(band, 1.0 - tail, axis=0)


def plot_power_laws(fits: list, x_column: str, y_column: str, path: Path, title: str,
                    linked: tuple[float, float, float] | None) -> None:
    """Data, fitted law and its bootstrap band per group (top); log residuals (bottom)."""
    plt = _pyplot()
    fig, (ax, res) = plt.subplots(2, 1, figsize=(6.4, 5.6), dpi=120, sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    for i, (group, part, law) in enumerate(fits):
        color = plt.cm.tab10(i % 10)
        x = part[x_column].to_numpy().astype(float)
        y = part[y_column].to_numpy().astype(float)
        grid = np.geomspace(x.min(), x.max(), 100)
        name = f"{group}: " if group is not None else ""
        lo_hi = law.intervals.get("alpha")
        ci = f" [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi else ""
        if np.isnan(law.alpha):  # scaling_fit fits no law to a loss that rises with x: its points alone
            ax.plot(x, y, "x--", color=color, alpha=0.8, label=f"{name}loss does not fall with x: no power law fitted")
            continue
        ax.plot(x, y, "o", color=color, alpha=0.8)
        ax.plot(grid, law(grid), "-", color=color,
                label=f"{name}L = {law.floor:.3g} + {law.k:.3g} x^-{law.alpha:.3f}{ci}")
        if law.curves is not None and len(law.curves) > 1:
            ax.fill_between(grid, *bootstrap_band(law, grid), color=color, alpha=0.15)
        res.plot(x, np.log(y) - np.log(law(x)), "o", color=color)
    if linked is not None:
        d, low, high = linked
        ax.text(0.02, 0.03, f"intrinsic dimension d = {d:.2f} [{low:.2f}, {high:.2f}]: 4/d = {4 / d:.3f}",
                transform=ax.transAxes, fontsize=8)
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)  # shared with the residual panel below
    ax.set_yscale("log")
    ax.set_ylabel(y_column)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    res.axhline(0, color="black", linewidth=0.8)
    res.set_xlabel(x_column)
    res.set_ylabel("log residual")
    res.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_transfer(scratch_fits: dict, table: pl.DataFrame, points: pl.DataFrame, law: Any, stage: Any,
                  path: Path, title: str) -> None:
    """Left: from-scratch and fine-tuned loss per model size. Right: D_T against D_F with the fitted law."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=120)
    for i, (n, (scratch, fit)) in enumerate(sorted(scratch_fits.items())):
        color = plt.cm.tab10(i % 10)
        x = scratch[stage.x_column].to_numpy().astype(float)
        grid = np.geomspace(x.min(), x.max(), 100)
        left.plot(x, scratch[stage.y_column], "o", color=color, label=f"N={n:,.0f} from scratch")
        left.plot(grid, fit(grid), "-", color=color, linewidth=1)
        tuned = table.filter((pl.col(stage.params_column) == n) & (pl.col(stage.regime_column) == "finetuned"))
        left.plot(tuned[stage.x_column], tuned[stage.y_column], "^--", color=color, label=f"N={n:,.0f} fine-tuned")
        if points.height:
            mine = points.filter((pl.col("params") == float(n)) & pl.col("used"))
            if mine.height:
                right.plot(mine["D_F"], mine["D_T"], "o", color=color, label=f"N={n:,.0f}")
                d_f = np.geomspace(float(mine["D_F"].min()), float(mine["D_F"].max()), 50)
                right.plot(d_f, law(d_f, float(n)), "-", color=color)
    left.set(xscale="log", yscale="log", xlabel=f"{stage.x_column} (data)", ylabel=stage.y_column)
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=7)
    left.set_title(title, fontsize=10)
    right.set_title(transfer_title(law), fontsize=9)
    right.set(xscale="log", yscale="log", xlabel="D_F: fine-tuning data", ylabel="D_T: effective data transferred")
    right.grid(alpha=0.3, which="both")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def transfer_title(law: Any) -> str:
    """The fitted transfer law and, on a second line, its intervals; without any (bootstrap: 0) it says so,
    where the bounds printed as [nan, nan]."""
    head = f"D_T = {law.k:.3g} D_F^{law.alpha:.3f} N^{law.beta:.3f}"
    if not {"alpha", "beta"} <= law.intervals.keys():
        return f"{head}\nno intervals (bootstrap: 0)"
    (a_low, a_high), (b_low, b_high) = law.intervals["alpha"], law.intervals["beta"]
    return f"{head}\nalpha in [{a_low:.3f}, {a_high:.3f}], beta in [{b_low:.3f}, {b_high:.3f}]"
