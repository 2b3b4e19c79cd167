"""The `intrinsic_dimension` stage: TwoNN, MLE and GRIDE over a vector column, per subset.

Bahri et al. ("Explaining Neural Scaling Laws") predict alpha >= 4/d for a model that resolves a
data manifold of intrinsic dimension d; this stage measures d so `scaling_fit` can set the two side
by side. See `id_estimators` for the estimators and `knn` for the neighbour search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError, PipelineError
from pipeline.io import Dataset
from pipeline.stage import Context, Stage
from stages._ids import refuse_bad_id_column, refuse_nans
from stages.embedding import vectors_to_series
from stages.noise import vector_matrix
from stages.scaling import id_estimators
from stages.scaling.knn import nearest_neighbours, search_matrix, unique_rows
from stages.scaling.plots import plain_log_ticks, source_name

PLOT_NAME = "dimension_vs_scale.png"
Estimator = Literal["twonn", "mle", "gride"]
# Why a NaN group key is refused (here and in scaling_fit).
GROUP_NAN = "NaN equals no other value, not even another NaN, so its rows belong to no defined group"


class IntrinsicDimension(Stage):
    """Intrinsic dimension of the points in a vector column (embeddings or any numeric vectors).

    One row per estimator (and per group when `group_by` is set; columns `group_by` and `group` name it)
    with a bootstrap interval and the range of the MLE and GRIDE estimates across `scales` (how much d
    depends on the scale); side output `local`: each point's Levina-Bickel local estimate with its r1, r2;
    plot `dimension_vs_scale.png`: MLE and GRIDE against the neighbourhood radius. Duplicate vectors
    (zero distances, where TwoNN is undefined) are dropped before the search and counted, or refused
    with `duplicates: error`; they are found in the float32 the search uses, so rows equal only after
    that cast (or differing only in the sign of a zero) count as duplicates too.

    Parameters:
        column: the vector column (fixed-size or list of numbers, all the same length)
        estimators: any of 'twonn', 'mle' (Levina-Bickel with MacKay-Ghahramani), 'gride'
        k: neighbours of the MLE estimate (10 keeps the boundary bias of a 10-d ball under 10% at 20k points)
        twonn_method: 'linear' (Facco et al.'s fit, discarding the largest ratios) or 'mle'
        discard_fraction: TwoNN: share of the largest ratios r2/r1 left out of the fit
        gride_n1: GRIDE: the ratio r_{2 n1} / r_{n1} is used
        scales: neighbourhood scales s for the plot (MLE with k = 2s, GRIDE with n1 = s, n2 = 2s)
        group_by: estimate separately for each value of this column (null: all points together); a null value
            is a group of its own, NaN is refused
        bootstrap: bootstrap replicates for the intervals (0: none; at most 100,000)
        confidence: level of the bootstrap intervals
        duplicates: 'drop' repeated vectors (counted in `duplicates_dropped`) or 'error'
        index: neighbour search: 'exact', 'hnsw', 'projected' (IVF over the principal coordinates when the
            points lie in a low-dimensional linear subspace, else hnsw) or 'auto' (exact up to 50k points,
            then projected); approximate searches report their recall against an exact sample
        max_points: estimate on at most this many points per group, chosen by id hash (null: all)
        id_column: unique row id (names the points of the `local` side output)
        plot: write the scale plot
    """

    name = "intrinsic_dimension"
    version = "3"  # 3: vectors of any scale are searched at a moderate one (d was NaN near 1e20, wrong near 1e-30)
    # 2: log-axis ticks under 1 are labelled with their values ("0.55", not "6e-01")
    requires: ClassVar[tuple[str, ...]] = ("faiss", "scipy", "matplotlib")

    def __init__(
        self,
        column: str = "embedding",
        estimators: list[Estimator] = ["twonn", "mle"],  # noqa: B006 - params are stored as given
        k: int = 10,
        twonn_method: Literal["linear", "mle"] = "linear",
        discard_fraction: float = 0.1,
        gride_n1: int = 4,
        scales: list[int] = [1, 2, 4, 8],  # noqa: B006
        group_by: str | None = None,
        bootstrap: int = 200,
        confidence: float = 0.95,
        duplicates: Literal["drop", "error"] = "drop",
        index: Literal["auto", "exact", "hnsw", "projected"] = "auto",
        max_points: int | None = None,
        id_column: str = "id",
        plot: bool = True,
    ):
        self.column = column
        self.estimators = estimators
        self.k = k
        self.twonn_method = twonn_method
        self.discard_fraction = discard_fraction
        self.gride_n1 = gride_n1
        self.scales = scales
        self.group_by = group_by
        self.bootstrap = bootstrap
        self.confidence = confidence
        self.duplicates = duplicates
        self.index = index
        self.max_points = max_points
        self.id_column = id_column
        self.plot = plot

    def validate(self) -> None:
        if not self.estimators:
            raise ParamError("estimators", "name at least one of 'twonn', 'mle', 'gride'")
        if self.k < 3:
            raise ParamError("k", f"must be >= 3 (the MLE needs two distance ratios), got {self.k}")
        if not 0.0 <= self.discard_fraction < 1.0:
            raise ParamError("discard_fraction", f"must lie in [0, 1), got {self.discard_fraction}")
        if self.gride_n1 < 1:
            raise ParamError("gride_n1", f"must be >= 1, got {self.gride_n1}")
        if any(s < 1 for s in self.scales):
            raise ParamError("scales", f"neighbourhood sizes must be >= 1, got {self.scales}")
        if not 0 <= self.bootstrap <= id_estimators.MAX_BOOTSTRAP:
            raise ParamError("bootstrap", f"must be in [0, {id_estimators.MAX_BOOTSTRAP:,}] replicates, got {self.bootstrap}")
        if not 0.0 < self.confidence < 1.0:
            raise ParamError("confidence", f"must lie strictly between 0 and 1, got {self.confidence}")
        if self.max_points is not None and self.max_points < 3:
            raise ParamError("max_points", f"must be >= 3 or null, got {self.max_points}")

    def side_output_names(self):
        return ("local",)  # the per-point estimates, always

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        cols: dict[str, str | None] = {self.column: "column", self.id_column: "id_column"}
        if self.group_by:
            cols[self.group_by] = "group_by"
        return {"data": cols}

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        # The ids name the points of the `local` side output (and pick a `max_points` sample): one id, one point.
        refuse_bad_id_column(inputs["data"], self.id_column)
        if self.group_by:
            refuse_nans(inputs["data"], self.group_by, GROUP_NAN, param="group_by", input_name="data")

    def neighbours_needed(self) -> int:
        """How many neighbours per point every requested estimate and scale reads."""
        needed = [self.k, 2]
        if "gride" in self.estimators:
            needed.append(2 * self.gride_n1)
        needed += [2 * s for s in self.scales]
        return max(needed)

    def run(self, ctx: Context, data: Dataset) -> pl.DataFrame:
        columns = [self.id_column, self.column] + ([self.group_by] if self.group_by else [])
        table = data.lazy().select(columns).collect()
        groups = [(None, table)] if not self.group_by else [
            (key[0], part) for key, part in table.group_by(self.group_by, maintain_order=True)
        ]
        groups.sort(key=lambda item: str(item[0]))
        rows, locals_, curves = [], [], []
        for group, part in groups:
            summary, local, curve = self._estimate_group(ctx, part, group, data.label)
            rows += summary
            locals_.append(local)
            curves += curve
        result = pl.DataFrame(rows, schema_overrides={"group_by": pl.String, "group": pl.String,
                                                      "knn_recall": pl.Float64})
        ctx.write_side_output("local", pl.concat(locals_, how="vertical_relaxed"))
        for r in rows:
            ctx.record(f"{r['estimator']}" + (f"@{r['group']}" if self.group_by else ""), round(r["dimension"], 3))
        if self.plot:
            _plot_scales(curves, result, ctx.artefact_path(PLOT_NAME), f"{source_name(data.label)}: {self.column}")
            ctx.record("plot", PLOT_NAME)
        return result

    def _points(self, part: pl.DataFrame, label: str) -> tuple[pl.DataFrame, np.ndarray]:
        if self.max_points is not None and part.height > self.max_points:
            from stages._hashing import id_hash

            order = np.argsort(id_hash(part[self.id_column], 0, "intrinsic_dimension"), kind="stable")
            part = part[np.sort(order[: self.max_points])]
        if part[self.column].null_count():
            raise InputDataError(f"column '{self.column}' has {part[self.column].null_count()} null vectors",
                                 param="column", file=label)
        try:
            x = vector_matrix(part[self.column], "column")
        except PipelineError as exc:  # ragged or non-numeric vectors: say which file
            raise exc.add_context(file=label) from None
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            first = part[self.id_column][int(np.argmax(bad))]
            raise InputDataError(
                f"column '{self.column}' has {int(bad.sum())} vectors with NaN or infinite values "
                f"(first: id {first!r}); drop or repair them first", param="column", file=label)
        return part, x

    def _estimate_group(self, ctx: Context, part: pl.DataFrame, group: Any, label: str):
        part, x = self._points(part, label)
        keep, repeats = unique_rows(x)
        where = f" in group {group!r}" if self.group_by else ""
        if repeats and self.duplicates == "error":
            raise InputDataError(
                f"{repeats} of {x.shape[0]} vectors{where} repeat another in float32, the precision of the "
                "neighbour search (zero distance, where TwoNN is undefined); deduplicate first or set "
                "duplicates: drop", param="duplicates", file=label)
        needed = self.neighbours_needed()
        if keep.size <= needed:
            raise InputDataError(
                f"{keep.size} distinct points{where}, but the estimates need more than {needed} "
                "(k, 2 x gride_n1 and 2 x the largest of scales); lower them or give more points",
                param="k", file=label)
        neighbours = nearest_neighbours(search_matrix(x)[keep], needed, self.index, seed=ctx.seed)
        dist = neighbours.distances
        if not (dist[:, 0] > 0).all():  # cannot happen after unique_rows; refuse rather than report d = 0
            raise InputDataError(
                f"{int((dist[:, 0] <= 0).sum())} points{where} still lie at distance 0 from a neighbour after "
                "removing duplicates; deduplicate the vectors first", param="duplicates", file=label)
        rng = ctx.rng("intrinsic_dimension", str(group))
        rows = []
        for name in self.estimators:
            value, per_point, statistic = id_estimators.estimate(
                name, dist, k=self.k, n1=self.gride_n1, twonn_method=self.twonn_method,
                discard_fraction=self.discard_fraction)
            low, high = id_estimators.bootstrap_interval(per_point, statistic, self.bootstrap, self.confidence, rng)
            if name == "twonn":
                _warn_of_ties(ctx, dist, value, where)
            span = {"twonn": 2, "mle": self.k, "gride": 2 * self.gride_n1}[name]
            rows.append({
                "group_by": self.group_by, "group": None if group is None else str(group), "estimator": name,
                "dimension": value,
                "ci_low": low, "ci_high": high, "confidence": self.confidence, "points": int(keep.size),
                "duplicates_dropped": repeats, "neighbours": span,
                "radius": float(np.median(dist[:, span - 1])), "ambient_dimension": int(x.shape[1]),
                "index": neighbours.index, "knn_recall": neighbours.recall,
            })
        curve = [dict(c, group=None if group is None else str(group))
                 for c in id_estimators.scale_curve(dist, sorted(set(self.scales)))]
        across = [c["dimension"] for c in curve] or [float("nan")]
        for row in rows:
            row |= {"scale_dimension_min": float(min(across)), "scale_dimension_max": float(max(across))}
        local = pl.DataFrame({
            "id": part[self.id_column][keep],
            "group": pl.Series([None if group is None else str(group)] * keep.size, dtype=pl.String),
            "local_dimension": id_estimators.mle_local(dist, self.k),
            "r1": dist[:, 0], "r2": dist[:, 1],
        })
        return rows, local, curve

    @classmethod
    def example(cls) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        rng = np.random.default_rng(3)
        plane = rng.random((300, 2)) @ rng.standard_normal((2, 6))
        table = pl.DataFrame({"id": np.arange(300), "part": np.arange(300) % 2})
        table = table.with_columns(vectors_to_series("embedding", plane))
        return {"group_by": "part", "bootstrap": 20, "scales": [2, 4], "estimators": ["twonn", "mle", "gride"]}, \
            {"data": table}


# Above this share of points whose two nearest neighbours tie, TwoNN's estimate is said to be biased low.
TIED_SHARE_WARNED = 0.1


def _warn_of_ties(ctx: Context, dist: np.ndarray, value: float, where: str) -> None:
    """Lead the step's stats with a warning where TwoNN's r2/r1 = 1 for many points (lattice data such as integer
    pixel values): each such point says nothing of d, and where all do, TwoNN is NaN (it was, with only numpy's
    runtime warnings)."""
    tied = float(np.mean(dist[:, 1] == dist[:, 0]))
    if np.isfinite(value) and tied <= TIED_SHARE_WARNED:
        return
    state = "undefined (NaN)" if not np.isfinite(value) else "biased low"
    note = (f"TwoNN is {state}{where}: {tied:.0%} of the points have their two nearest neighbours at one distance "
            "(lattice data, e.g. integer pixel values); read MLE or GRIDE, or add a small jitter to the vectors")
    ctx.warn(note)


def _plot_scales(curve: list[dict], result: pl.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    frame = pl.DataFrame(curve) if curve else None
    markers = {"mle": "o", "gride": "s"}
    groups = result["group"].unique(maintain_order=True).to_list()
    for i, group in enumerate(groups):
        color = plt.cm.tab10(i % 10)
        suffix = f" [{group}]" if group is not None else ""
        if frame is not None:
            for estimator, marker in markers.items():
                part = frame.filter((pl.col("estimator") == estimator) & (
                    pl.col("group").is_null() if group is None else pl.col("group") == group))
                if part.height:
                    ax.plot(part["radius"], part["dimension"], marker=marker, color=color,
                            linestyle="-" if estimator == "mle" else "--", label=f"{estimator}{suffix}")
        twonn = result.filter((pl.col("estimator") == "twonn") & (
            pl.col("group").is_null() if group is None else pl.col("group") == group))
        for r in twonn.iter_rows(named=True):
            # A percentile interval need not hold the estimate (small bootstraps); the bar then reaches its far end.
            err = np.maximum(0.0, [[r["dimension"] - r["ci_low"]], [r["ci_high"] - r["dimension"]]]) \
                if np.isfinite(r["ci_low"]) else None
            ax.errorbar([r["radius"]], [r["dimension"]], yerr=err, marker="*", markersize=11, color=color,
                        linestyle="none", label=f"twonn{suffix}")
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)
    ax.set_xlabel("neighbourhood radius (median distance to the last neighbour used)")
    ax.set_ylabel("intrinsic dimension estimate")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
