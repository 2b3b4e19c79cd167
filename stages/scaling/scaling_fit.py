"""The `scaling_fit` stage: power laws L(D) (or L(N)) and the transfer law, with intervals and figures.

Reads a table of (size, loss) rows, usually a `scaling_curve` or `transfer_curve` step. With a
linked `intrinsic_dimension` step (input `dimension`), each power-law row also carries d and the
resolution-limited prediction 4/d of Bahri et al., so the measured alpha and the one the data manifold
implies sit side by side. See `fitting` for the methods.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.stage import Context, Stage
from stages._ids import nan_count, null_count, refuse_nans
from stages.scaling import fitting
from stages.scaling.id_estimators import MAX_BOOTSTRAP
from stages.scaling.intrinsic_dimension import GROUP_NAN
from stages.scaling.plots import plot_power_laws, plot_transfer, source_name

FIT_PLOT = "fit.png"
TRANSFER_PLOT = "transfer.png"


def dimension_row(dims: pl.DataFrame, estimator: str, group: str | None) -> dict[str, Any] | None:
    """The row of an intrinsic_dimension table that a fit compares with: `estimator`'s row in `group`
    if given, else its row with no group, else its first; None if there is none.

    "No group" is a row of an ungrouped estimate (`group_by` null). In a grouped table a null `group`
    is the group of the rows whose key was null, not "no group", so it is only taken when it comes first.
    Tables without a `group_by` column (written by hand, or before it existed) read a null group as none.
    """
    rows = dims.filter(pl.col("estimator") == estimator)
    if group is not None and "group" in rows.columns:
        rows = rows.filter(pl.col("group") == group)
    elif group is None and "group_by" in rows.columns:
        ungrouped = rows.filter(pl.col("group_by").is_null())
        rows = ungrouped if ungrouped.height else rows
    elif group is None and "group" in rows.columns and rows["group"].null_count():
        rows = rows.filter(pl.col("group").is_null())
    return rows.row(0, named=True) if rows.height else None


def _not_falling(slope: float) -> str:
    """How a curve with log-log slope >= 0 fails to fall. A flat one (slope 0: the same loss at every size) fits
    L_inf alone, with k at its bound and any alpha: it was reported as alpha 2.87 [2.87, 2.87]."""
    return "rises with" if slope > 0 else "stays flat with"


class ScalingFit(Stage):
    """Fit L = L_inf + k x^-alpha per group, or the transfer law D_T = k D_F^alpha N^beta.

    `law: power_law` gives one row per group (L_inf, k, alpha with bootstrap intervals, log-space RMSE
    and R^2, and the `confidence` of the intervals) and `fit.png` (data, fit, bootstrap band at that
    level, residuals). With input `dimension` linked, rows add d (from `dimension_estimator`, named with
    its group in `dimension_estimator` / `dimension_group`, so the report compares with this d and no
    other) and the predicted 4/d with its interval. `law: transfer` reads
    from-scratch and fine-tuned rows (`regime_column`), converts every fine-tuned loss to effective
    data on the from-scratch curve of the same model size, writes the points as side output
    `transfer_points` and one row with k, alpha, beta; plot `transfer.png`. A power-law group whose loss
    rises with x (log-log slope `loglog_slope` > 0), or stays flat (slope 0), is not fitted: no L_inf + k x^-alpha describes it, so
    its L_inf, k and alpha are NaN, its `warning` column says why, stats lead with that `warning`, and the
    plot shows its points alone.

    Parameters:
        law: 'power_law' (L against x_column) or 'transfer'
        x_column: data (or parameter) count column: D, or D_F for the transfer law
        y_column: the loss column (must be > 0)
        group_by: fit a power law per value of this column (e.g. model size); null: one fit. A null value is a
            group of its own, NaN is refused
        floor: fit the irreducible loss L_inf (false: L = k x^-alpha)
        loss: robust loss of the least squares: 'huber', 'soft_l1', 'cauchy' or 'linear'
        f_scale: where the robust loss turns from quadratic to linear, in log-loss units
        bootstrap: bootstrap replicates for the intervals (0: none; at most 100,000)
        confidence: level of the intervals
        params_column: transfer: the model-size (parameter count) column
        regime_column: transfer: the column saying 'scratch' or 'finetuned'
        invert: transfer: 'interpolate' the from-scratch curve (fit beyond its range) or always invert its 'fit'
        dimension_estimator: which estimator's d to compare with when `dimension` is linked
        dimension_group: which group of the dimension table (null: the rows with no group, else the first)
        title: plot title
    """

    name = "scaling_fit"
    version = "4"  # 4: a flat loss (the same at every x) is not fitted either (alpha was 2.87, k at its bound)
    # 3: a loss rising with x is flagged and not fitted (alpha was pinned to a bound, e.g. 5.0); the
    # plot's legend names the null group
    # 2: log-axis ticks under 1 are labelled with their values ("0.55", not "6e-01")
    inputs: ClassVar[tuple[str, ...]] = ("data", "dimension")
    optional_inputs: ClassVar[tuple[str, ...]] = ("dimension",)
    requires: ClassVar[tuple[str, ...]] = ("scipy", "matplotlib")

    def __init__(
        self,
        law: Literal["power_law", "transfer"] = "power_law",
        x_column: str = "subset_size",
        y_column: str = "test_loss",
        group_by: str | None = None,
        floor: bool = True,
        loss: Literal["huber", "soft_l1", "cauchy", "linear"] = "huber",
        f_scale: float = 0.05,
        bootstrap: int = 300,
        confidence: float = 0.95,
        params_column: str = "params",
        regime_column: str = "regime",
        invert: Literal["interpolate", "fit"] = "interpolate",
        dimension_estimator: str = "twonn",
        dimension_group: str | None = None,
        title: str | None = None,
    ):
        self.law = law
        self.x_column = x_column
        self.y_column = y_column
        self.group_by = group_by
        self.floor = floor
        self.loss = loss
        self.f_scale = f_scale
        self.bootstrap = bootstrap
        self.confidence = confidence
        self.params_column = params_column
        self.regime_column = regime_column
        self.invert = invert
        self.dimension_estimator = dimension_estimator
        self.dimension_group = dimension_group
        self.title = title

    def validate(self) -> None:
        if self.f_scale <= 0:
            raise ParamError("f_scale", f"must be > 0, got {self.f_scale}")
        if not 0 <= self.bootstrap <= MAX_BOOTSTRAP:
            raise ParamError("bootstrap", f"must be in [0, {MAX_BOOTSTRAP:,}] replicates, got {self.bootstrap}")
        if not 0.0 < self.confidence < 1.0:
            raise ParamError("confidence", f"must lie strictly between 0 and 1, got {self.confidence}")

    def side_output_names(self):
        return ("transfer_points",) if self.law == "transfer" else ()

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        cols: dict[str, str | None] = {self.x_column: "x_column", self.y_column: "y_column"}
        if self.law == "transfer":
            cols[self.params_column] = "params_column"
            cols[self.regime_column] = "regime_column"
        elif self.group_by:
            cols[self.group_by] = "group_by"
        return {"data": cols, "dimension": {"estimator": None, "dimension": None}}

    def required_column_types(self) -> dict[str, dict[str, str]]:
        types = super().required_column_types()
        numeric = [self.x_column, self.y_column] + ([self.params_column] if self.law == "transfer" else [])
        types["data"].update({column: "numeric" for column in numeric})
        return types

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        data = inputs["data"]
        if self.law == "power_law" and self.group_by:
            refuse_nans(data, self.group_by, GROUP_NAN, param="group_by", input_name="data")
        if self.law == "transfer":  # the model sizes are keys (a from-scratch curve each) and values (N^beta)
            missing = null_count(data, self.params_column) + nan_count(data, self.params_column)
            if missing:
                raise InputDataError(f"input 'data' column '{self.params_column}' has {missing:,} null or NaN "
                                     "values; every row needs its model size (a from-scratch curve is fit per "
                                     "size); drop or fill those rows first", param="params_column", file=data.label)

    def run(self, ctx: Context, data: Dataset, dimension: Dataset | None = None) -> pl.DataFrame:
        table = data.collect()
        if self.law == "transfer":
            return self._transfer(ctx, table, data.label)
        return self._power_laws(ctx, table, data.label, dimension)

    def _fit(self, x, y, ctx: Context, salt: str, what: str) -> fitting.PowerLaw:
        return fitting.fit_power_law(x, y, with_floor=self.floor, loss=self.loss, f_scale=self.f_scale,
                                     bootstrap=self.bootstrap, confidence=self.confidence,
                                     rng=ctx.rng("scaling_fit", salt), what=what)

    def _power_laws(self, ctx: Context, table: pl.DataFrame, label: str, dimension: Dataset | None) -> pl.DataFrame:
        groups = [(None, table)] if not self.group_by else sorted(  # the null group last
            ((key[0], part) for key, part in table.group_by(self.group_by)), key=lambda g: (g[0] is None, g[0]))
        linked = self._dimension(dimension) if dimension is not None else None
        rows, fits, rising = [], [], []
        for group, part in groups:
            where = f"values of '{self.x_column}'" + (f" in group {group!r}" if self.group_by else "")
            try:
                slope = self._rising_slope(part, where)
                law = self._unfitted(part) if slope >= 0 else self._fit(
                    part[self.x_column].to_numpy(), part[self.y_column].to_numpy(), ctx, str(group), where)
            except InputDataError as exc:
                exc.file = exc.file or label
                raise
            # The plot's legend names each group; the rows whose key is null are a group too ("null").
            fits.append((group if group is not None or not self.group_by else "null", part, law))
            row = {"law": "power_law", "group": None if group is None else str(group), "group_by": self.group_by,
                   "x_column": self.x_column,
                   "points": law.points,
                   "x_min": float(part[self.x_column].min()), "x_max": float(part[self.x_column].max())}
            for name, value in (("L_inf", law.floor), ("k", law.k), ("alpha", law.alpha)):
                low, high = law.intervals.get({"L_inf": "floor"}.get(name, name), (np.nan, np.nan))
                row |= {name: value, f"{name}_low": low, f"{name}_high": high}
            row |= {"rmse_log": law.rmse_log, "r2_log": law.r2_log, "confidence": self.confidence,
                    "loglog_slope": slope, "warning": None}
            if slope >= 0:
                row["warning"] = (f"loss '{self.y_column}' {_not_falling(slope)} '{self.x_column}'"
                                  + (f" in group {group!r}" if self.group_by else "")
                                  + f" (log-log slope {slope:+.3g} over {law.points} points): no L_inf + k x^-alpha "
                                  "describes it, so no power law is fitted (alpha NaN); check the curve: "
                                  "overfitting, a data bug, or the wrong y_column")
                rising.append(row["warning"])
            if linked is not None:
                d, d_low, d_high, d_group = linked
                row |= {"dimension_estimator": self.dimension_estimator, "dimension_group": d_group,
                        "dimension": d, "dimension_low": d_low, "dimension_high": d_high,
                        "alpha_4_over_d": 4.0 / d, "alpha_4_over_d_low": 4.0 / d_high,
                        "alpha_4_over_d_high": 4.0 / d_low, "alpha_times_d_over_4": law.alpha * d / 4.0}
            rows.append(row)
            ctx.record(f"alpha@{group}" if self.group_by else "alpha", None if slope >= 0 else round(law.alpha, 4))
        if rising:  # ahead of the alphas: a reader of the run's summary sees it first
            ctx.warn("; ".join(rising), rising_curves_not_fitted=len(rising))
        result = pl.DataFrame(rows, schema_overrides={"group": pl.String, "group_by": pl.String,
                                                      "dimension_group": pl.String, "warning": pl.String})
        plot_power_laws(fits, self.x_column, self.y_column, ctx.artefact_path(FIT_PLOT),
                        self.title or source_name(label), linked[:3] if linked is not None else None)
        ctx.record("plot", FIT_PLOT)
        return result

    def _rising_slope(self, part: pl.DataFrame, where: str) -> float:
        """The group's log-log slope, once its points are known to fit (the fit's own checks, run first)."""
        x, y = part[self.x_column].to_numpy().astype(float), part[self.y_column].to_numpy().astype(float)
        fitting.check_power_law_points(x, y, self.floor, where)
        return fitting.log_log_slope(x, y)

    @staticmethod
    def _unfitted(part: pl.DataFrame) -> fitting.PowerLaw:
        """The row of a curve no power law describes: every parameter NaN, no intervals."""
        nan = float("nan")
        return fitting.PowerLaw(floor=nan, k=nan, alpha=nan, points=part.height, rmse_log=nan, r2_log=nan)

    def _dimension(self, dimension: Dataset) -> tuple[float, float, float, str | None]:
        """d, its interval and the group of the dimension row compared with (the report names them)."""
        first = dimension_row(dimension.collect(), self.dimension_estimator, self.dimension_group)
        if first is None:
            raise InputDataError(
                f"the linked dimension table has no row for estimator '{self.dimension_estimator}'"
                + (f" and group '{self.dimension_group}'" if self.dimension_group else ""),
                param="dimension_estimator", file=dimension.label)
        group = first.get("group")
        return (float(first["dimension"]), float(first.get("ci_low", np.nan)), float(first.get("ci_high", np.nan)),
                None if group is None else str(group))

    def _transfer(self, ctx: Context, table: pl.DataFrame, label: str) -> pl.DataFrame:
        regimes = set(table[self.regime_column].unique().to_list())
        if not {"scratch", "finetuned"} <= regimes:
            raise InputDataError(f"column '{self.regime_column}' must hold both 'scratch' and 'finetuned' rows, "
                                 f"got {sorted(map(str, regimes))}", param="regime_column", file=label)
        points, scratch_fits, rising = [], {}, []
        for (n,), part in sorted(table.group_by(self.params_column), key=lambda g: g[0][0]):
            scratch = part.filter(pl.col(self.regime_column) == "scratch")
            tuned = part.filter(pl.col(self.regime_column) == "finetuned")
            if scratch.height == 0 or tuned.height == 0:
                continue
            where = f"from-scratch sizes for N={n}"
            try:
                slope = self._rising_slope(scratch, where)
            except InputDataError as exc:
                exc.file = exc.file or label
                raise
            if slope >= 0:  # no law to read D_E off (inverting one fitted to a rising curve gave any number)
                rising.append(f"from-scratch loss '{self.y_column}' {_not_falling(slope)} '{self.x_column}' at "
                              f"{self.params_column} = {n} (log-log slope {slope:+.3g}): its {tuned.height} "
                              "fine-tuned points are left out")
                continue
            sx, sy = scratch[self.x_column].to_numpy().astype(float), scratch[self.y_column].to_numpy().astype(float)
            law = self._fit(sx, sy, ctx, f"scratch{n}", where)
            scratch_fits[n] = (scratch, law)
            d_f = tuned[self.x_column].to_numpy().astype(float)
            loss = tuned[self.y_column].to_numpy().astype(float)
            d_e, extrapolated = fitting.effective_data(sx, sy, loss, law, self.invert)
            for i in range(tuned.height):
                d_t = d_e[i] - d_f[i]
                points.append({"params": float(n), "D_F": d_f[i], "finetuned_loss": loss[i], "D_E": d_e[i],
                               "D_T": d_t, "extrapolated": bool(extrapolated[i]),
                               "used": bool(np.isfinite(d_t) and d_t > 0)})
        if rising:
            ctx.warn("; ".join(rising), rising_curves_not_fitted=len(rising))
        if not points and rising:
            raise InputDataError(f"no model size has a from-scratch curve falling with data: {rising[0]}",
                                 param="y_column", file=label)
        if not points:  # both regimes present, but never at one model size: no fine-tuned loss has a curve to read
            raise InputDataError(
                f"no model size in column '{self.params_column}' has both 'scratch' and 'finetuned' rows, so no "
                "fine-tuned loss can be read off a from-scratch curve of the same size; train both regimes at each "
                "model size", param="params_column", file=label)
        frame = pl.DataFrame(points)
        ctx.write_side_output("transfer_points", frame)
        used = frame.filter(pl.col("used"))
        try:
            law = fitting.fit_transfer_law(used["D_F"], used["params"], used["D_T"], bootstrap=self.bootstrap,
                                           confidence=self.confidence, rng=ctx.rng("scaling_fit", "transfer"))
        except InputDataError as exc:
            exc.file = exc.file or label
            raise
        row: dict[str, Any] = {"law": "transfer", "points": law.points, "points_excluded": frame.height - used.height,
                               "points_extrapolated": int(used["extrapolated"].sum()), "rmse_log": law.rmse_log,
                               "bootstrap_replicates": law.replicates, "confidence": self.confidence}
        for name in ("k", "alpha", "beta"):
            low, high = law.intervals.get(name, (np.nan, np.nan))
            row |= {name: getattr(law, name), f"{name}_low": low, f"{name}_high": high}
        for name in ("k", "alpha", "beta"):
            ctx.record(name, round(row[name], 4))
        plot_transfer(scratch_fits, table, frame, law, self, ctx.artefact_path(TRANSFER_PLOT),
                      self.title or source_name(label))
        ctx.record("plot", TRANSFER_PLOT)
        return pl.DataFrame([row])

    @classmethod
    def example(cls) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        sizes = np.geomspace(100, 10_000, 6)
        wiggle = 1 + 0.01 * np.sin(np.arange(6))
        table = pl.DataFrame({"subset_size": sizes, "test_loss": (0.3 + 2.0 * sizes ** -0.4) * wiggle})
        return {"bootstrap": 20}, {"data": table}
