"""The `scaling_report` stage: one HTML page with a study's curves, fits, findings and config.

The findings are sentences computed from the numbers (with their intervals), including the verdict
on alpha against 4/d, so the report cannot claim more than the fit supports.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

from pipeline.columns import polars_schema
from pipeline.errors import InputDataError
from pipeline.io import Dataset
from pipeline.stage import Context, Stage
from stages.scaling.report_template import REPORT_TEMPLATE
from stages.scaling.scaling_fit import dimension_row

REPORT_NAME = "report.html"
TABLE_ROWS = 60

_DIMENSION_COLUMNS = ("estimator", "dimension", "ci_low", "ci_high", "points", "duplicates_dropped",
                      "ambient_dimension")
# The columns the findings read from each input, and the stage whose output has them: another table wired there
# (the raw curve as `fit`, a fit as `dimension`) failed on a missing key or made a report of nothing.
EXPECTED_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "fit": ("scaling_fit", ("law", "points", "k", "k_low", "k_high", "alpha", "alpha_low", "alpha_high",
                            "rmse_log")),
    "dimension": ("intrinsic_dimension", _DIMENSION_COLUMNS),
    "learned_dimension": ("intrinsic_dimension", _DIMENSION_COLUMNS),
}


def refuse_wrong_tables(schemas: dict[str, Any], labels: dict[str, str | None]) -> None:
    """Refuse an input that lacks the columns of the step output it is read as, naming the input, the missing
    columns and the stage expected; `schemas` holds the known inputs' columns (validate time: only known ones)."""
    for name, (stage, columns) in EXPECTED_TABLES.items():
        schema = schemas.get(name)
        if schema is None:
            continue
        missing = [c for c in columns if c not in schema]
        if missing:
            raise InputDataError(
                f"input '{name}' has no column(s) {', '.join(repr(c) for c in missing)}: it expects the output of "
                f"stage '{stage}', and this table has the columns {list(schema)}",
                file=labels.get(name), hint=f"wire '{name}' to a step of stage '{stage}'")


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return f"[{len(value)} values]"
    return "" if value is None else value


def _finite(*values: Any) -> bool:
    return all(v is not None and not math.isnan(v) for v in values)


def _interval(row: dict, name: str) -> str:
    low, high = row.get(f"{name}_low"), row.get(f"{name}_high")
    if not _finite(low, high):
        return f"{row[name]:.3g}"
    return f"{row[name]:.3g} [{low:.3g}, {high:.3g}]"


def _level(row: dict, kind: str = "bootstrap") -> str:
    """'(90% bootstrap intervals)' from the row's own `confidence` (fits written before it was a
    column were 95%), or 'no intervals' when the fit had none (bootstrap: 0)."""
    if not _finite(row.get("alpha_low"), row.get("alpha_high")):
        return "no intervals (bootstrap: 0)"
    confidence = row.get("confidence")
    return f"{100 * (0.95 if confidence is None else confidence):g}% {kind} intervals"


def compare_alpha(alpha: float, alpha_low: float, alpha_high: float, d: float, d_low: float, d_high: float,
                  what: str) -> str:
    """The verdict on the measured alpha against Bahri et al.'s 4/d, from both intervals.

    Without both intervals there is no verdict: a point estimate alone cannot say whether the two
    differ, and NaN bounds would otherwise fall through to "the intervals overlap"."""
    pred = 4.0 / d
    if not _finite(alpha_low, alpha_high, d_low, d_high):
        return (f"alpha = {alpha:.3f} against 4/d = {pred:.3f} for the {what} (d = {d:.2f}); ratio alpha / (4/d) "
                f"= {alpha / pred:.2f}. No interval on {'alpha' if not _finite(alpha_low, alpha_high) else 'd'}, "
                "so no verdict on alpha against 4/d.")
    pred_low, pred_high = 4.0 / d_high, 4.0 / d_low
    head = (f"alpha = {alpha:.3f} [{alpha_low:.3f}, {alpha_high:.3f}] against 4/d = {pred:.3f} "
            f"[{pred_low:.3f}, {pred_high:.3f}] for the {what} (d = {d:.2f} [{d_low:.2f}, {d_high:.2f}]); "
            f"ratio alpha / (4/d) = {alpha / pred:.2f}.")
    if alpha_high < pred_low:
        return head + " The measured exponent is below 4/d with non-overlapping intervals: the prediction " \
                      "alpha >= 4/d does not hold here."
    if alpha_low > pred_high:
        return head + " The measured exponent exceeds 4/d with non-overlapping intervals: consistent with " \
                      "the bound alpha >= 4/d, not with equality."
    return head + " The intervals overlap: the data cannot tell alpha from 4/d."


ESTIMATOR_NAMES = {"twonn": "TwoNN", "mle": "MLE", "gride": "GRIDE"}


def _dimension_statements(r: dict, dims: dict[str, pl.DataFrame]) -> list[str]:
    """alpha against 4/d for the d the fit row carries (the inputs' d that scaling_fit linked, with its
    estimator and group) and for the learned representation's d by the same estimator."""
    out = []
    estimator = r.get("dimension_estimator") or "twonn"
    for name in ("dimension", "learned_dimension"):
        what = "inputs" if name == "dimension" else "learned representation"
        frame = dims.get(name)
        if name == "dimension" and r.get("dimension") is not None:
            d = {"dimension": r["dimension"], "ci_low": r.get("dimension_low"), "ci_high": r.get("dimension_high")}
            table_row = dimension_row(frame, estimator, r.get("dimension_group")) if frame is not None else None
        else:
            table_row = d = dimension_row(frame, estimator, None) if frame is not None else None
        if d is None:
            continue
        label = ESTIMATOR_NAMES.get(estimator, estimator)
        out.append(compare_alpha(r["alpha"], r["alpha_low"], r["alpha_high"], d["dimension"],
                                 d["ci_low"], d["ci_high"], f"{what} ({label})"))
        low, high = (table_row or {}).get("scale_dimension_min"), (table_row or {}).get("scale_dimension_max")
        if low is not None and high is not None and low == low and high > low:
            inside = 4.0 / high <= r["alpha"] <= 4.0 / low
            out.append(
                f"Across neighbourhood scales, d of the {what} runs from {low:.2f} to {high:.2f} "
                f"(MLE and GRIDE), so 4/d spans {4 / high:.3f} to {4 / low:.3f}; alpha = "
                f"{r['alpha']:.3f} lies {'inside' if inside else 'outside'} that span. The "
                "comparison is only as sharp as d is scale-independent.")
    return out


def group_value(row: dict) -> str:
    """A row's group as the report names it: a grouped table's null key is the group 'null', not no group."""
    return "null" if row.get("group") is None else str(row["group"])


def _statements(tables: dict[str, pl.DataFrame]) -> list[str]:
    out = []
    fit = tables.get("fit")
    dims = {name: tables[name] for name in ("dimension", "learned_dimension") if name in tables}
    for name, frame in dims.items():
        what = "inputs" if name == "dimension" else "learned representation"
        for r in frame.iter_rows(named=True):
            group = f" [{group_value(r)}]" if r.get("group") is not None or r.get("group_by") else ""
            interval = f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if _finite(r["ci_low"], r["ci_high"]) else ""
            out.append(f"Intrinsic dimension of the {what}{group} by {r['estimator']}: {r['dimension']:.2f}"
                       f"{interval} over {r['points']} points "
                       f"({r['duplicates_dropped']} duplicates dropped; ambient dimension {r['ambient_dimension']}).")
    if fit is not None and "law" in fit.columns:
        for r in fit.iter_rows(named=True):
            if r["law"] == "power_law":
                group = f" for {r.get('group_by') or 'group'} = {group_value(r)}" \
                    if r.get("group") is not None or r.get("group_by") else ""
                if r.get("warning"):  # scaling_fit fitted no law (the loss rises with x): say so, claim nothing
                    out.append(f"Power law{group}: not fitted: {r['warning']}.")
                    continue
                x = {"params": "N"}.get(r.get("x_column") or "", "D")
                over = f" ({x} = {r['x_column']})" if r.get("x_column") else ""
                out.append(f"Power law{group}: L = L_inf + k {x}^-alpha{over} with alpha = {_interval(r, 'alpha')}, "
                           f"k = {_interval(r, 'k')}, L_inf = {_interval(r, 'L_inf')} ({_level(r)}), "
                           f"{r['points']} points from {x} = {r['x_min']:g} to {r['x_max']:g}, "
                           f"log-space RMSE {r['rmse_log']:.3f}, R^2 {r['r2_log']:.3f}.")
                out += _dimension_statements(r, dims)
            else:
                out.append(
                    f"Transfer law: D_T = k D_F^alpha N^beta with k = {_interval(r, 'k')}, alpha = "
                    f"{_interval(r, 'alpha')}, beta = {_interval(r, 'beta')} ({_level(r, 'pairs-bootstrap')}) from "
                    f"{r['points']} (D_F, N) points; {r['points_excluded']} excluded (no positive transfer or "
                    f"below the from-scratch floor), {r['points_extrapolated']} read off the fitted from-scratch "
                    f"law beyond the measured curve; log-space RMSE {r['rmse_log']:.3f}.")
    curve = tables.get("curve")
    if curve is not None and "stopped_by" in curve.columns:
        counts = dict(curve["stopped_by"].value_counts().rows())
        out.append(f"Training: {curve.height} runs, each keeping the weights of its best validation loss; "
                   f"{counts.get('patience', 0)} stopped by patience, {counts.get('max_steps', 0)} by the step limit.")
    return out


def _step_dir(ds: Dataset) -> Path | None:
    if not ds.files:
        return None
    for parent in (ds.files[0].parent, ds.files[0].parent.parent):
        if (parent / "_manifest.json").exists():
            return parent
    return None


class ScalingReport(Stage):
    """HTML report of a scaling study: findings with intervals, the figures of its steps, tables, config.

    Reads the study's steps as named inputs; `fit` is required, the others optional. Figures (PNG files
    beside the input steps' Parquet) are embedded, and the pipeline's config file (named in the input
    steps' manifests) is printed in full. Output: one row per finding sentence; artefact `report.html`.

    Parameters:
        title: the report's heading
    """

    name = "scaling_report"
    version = "2"  # 2: a grouped fit's null group is named as such (it read as a fit of the whole table)
    inputs: ClassVar[tuple[str, ...]] = ("fit", "curve", "dimension", "learned_dimension", "transfer_points")
    optional_inputs: ClassVar[tuple[str, ...]] = ("curve", "dimension", "learned_dimension", "transfer_points")
    requires: ClassVar[tuple[str, ...]] = ("jinja2",)

    def __init__(self, title: str = "Data-scaling study"):
        self.title = title

    def output_schema(self, inputs):
        """One finding sentence a row; the inputs' tables are checked first (`pipeline validate`)."""
        refuse_wrong_tables(inputs, {})
        return {"finding": pl.String}

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        refuse_wrong_tables({name: polars_schema(ds.schema) for name, ds in inputs.items() if ds is not None},
                            {name: ds.label for name, ds in inputs.items() if ds is not None})

    def run(self, ctx: Context, **inputs: Dataset) -> pl.DataFrame:
        import jinja2

        tables = {name: ds.collect() for name, ds in inputs.items() if ds is not None}
        statements = _statements(tables)
        figures, manifests, config_path = [], [], None
        for name in self.inputs:
            ds = inputs.get(name)
            step = _step_dir(ds) if ds is not None else None
            if step is None:
                continue
            manifest = json.loads((step / "_manifest.json").read_text())
            if manifest["step"] not in {m["step"] for m in manifests}:
                manifests.append({"step": manifest["step"], "stage": manifest["stage"],
                                  "params": json.dumps(manifest["params"], sort_keys=True)})
                for png in sorted(step.glob("*.png")):
                    figures.append({"caption": f"{manifest['step']}/{png.name}",
                                    "data": base64.b64encode(png.read_bytes()).decode()})
            config_path = config_path or manifest.get("config")
        config_text = Path(config_path).read_text() if config_path and Path(config_path).is_file() else None
        shown = [{"name": name, "columns": frame.columns,
                  "rows": [[_fmt(v) for v in row] for row in frame.head(TABLE_ROWS).iter_rows()],
                  "truncated": max(0, frame.height - TABLE_ROWS)}
                 for name, frame in tables.items()]
        html = jinja2.Environment(autoescape=True).from_string(REPORT_TEMPLATE).render(
            title=self.title, statements=statements, figures=figures, tables=shown, config_text=config_text,
            config_path=config_path, manifests=manifests)
        ctx.artefact_path(REPORT_NAME).write_text(html)
        ctx.record("report", REPORT_NAME)
        return pl.DataFrame({"finding": statements}, schema={"finding": pl.String})

    @classmethod
    def example(cls) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        fit = pl.DataFrame([{"law": "power_law", "group": None, "points": 6, "x_min": 10.0, "x_max": 1000.0,
                             "L_inf": 0.1, "L_inf_low": 0.05, "L_inf_high": 0.15, "k": 2.0, "k_low": 1.5,
                             "k_high": 2.5, "alpha": 0.4, "alpha_low": 0.3, "alpha_high": 0.5, "rmse_log": 0.02,
                             "r2_log": 0.99}], schema_overrides={"group": pl.String})
        dimension = pl.DataFrame([{"group": None, "estimator": "twonn", "dimension": 12.0, "ci_low": 11.0,
                                   "ci_high": 13.0, "points": 500, "duplicates_dropped": 0,
                                   "ambient_dimension": 64}], schema_overrides={"group": pl.String})
        return {"title": "example"}, {"fit": fit, "dimension": dimension}
