import numpy as np
import polars as pl
import pytest

from stages.scaling.fitting import fit_power_law
from stages.scaling.plots import bootstrap_band
from stages.scaling.report import ScalingReport, compare_alpha
from stages.scaling.scaling_fit import ScalingFit

NAN = float("nan")


def dimension_table() -> pl.DataFrame:
    """TwoNN says d = 10, MLE d = 5 (4/d = 0.4 and 0.8), one ungrouped row each."""
    return pl.DataFrame({"group": [None, None], "estimator": ["twonn", "mle"], "dimension": [10.0, 5.0],
                         "ci_low": [9.0, 4.5], "ci_high": [11.0, 5.5], "points": [500, 500],
                         "duplicates_dropped": [0, 0], "ambient_dimension": [64, 64],
                         "scale_dimension_min": [4.0, 4.0], "scale_dimension_max": [11.0, 11.0]},
                        schema_overrides={"group": pl.String})


def curve(alpha: float = 0.8) -> pl.DataFrame:
    sizes = np.geomspace(100, 10_000, 8)
    wiggle = 1 + 0.01 * np.sin(np.arange(8))
    return pl.DataFrame({"subset_size": sizes, "test_loss": (0.3 + 20.0 * sizes ** -alpha) * wiggle})


def findings(**stage_params) -> list[str]:
    dims = dimension_table()
    fit = ScalingFit(**stage_params).apply(curve(), dimension=dims)
    return ScalingReport().apply(fit=fit, dimension=dims)["finding"].to_list()


@pytest.mark.parametrize("bounds", [(NAN, NAN, 9.0, 11.0), (0.3, 0.5, NAN, NAN)])
def test_no_interval_gives_no_verdict(bounds):
    alpha_low, alpha_high, d_low, d_high = bounds
    text = compare_alpha(0.4, alpha_low, alpha_high, 10.0, d_low, d_high, "inputs (TwoNN)")
    assert "no verdict" in text and "overlap" not in text and "nan" not in text
    assert "overlap" in compare_alpha(0.4, 0.3, 0.5, 10.0, 9.0, 11.0, "inputs (TwoNN)")


def test_report_without_bootstrap_claims_no_interval_or_verdict():
    text = " ".join(findings(bootstrap=0))
    assert "no intervals (bootstrap: 0)" in text and "no verdict" in text
    assert "95%" not in text and "overlap" not in text and "nan" not in text


def test_interval_level_comes_from_the_fit():
    fit = ScalingFit(bootstrap=30, confidence=0.8).apply(curve())
    assert fit["confidence"].to_list() == [0.8]
    text = " ".join(ScalingReport().apply(fit=fit)["finding"].to_list())
    assert "(80% bootstrap intervals)" in text and "95%" not in text


def test_report_compares_with_the_dimension_the_fit_used():
    # The fit linked MLE's d = 5 (4/d = 0.8); the TwoNN row (4/d = 0.4) must not be the comparison.
    comparisons = [f for f in findings(bootstrap=30, dimension_estimator="mle") if "against 4/d" in f]
    assert len(comparisons) == 1
    assert "4/d = 0.800" in comparisons[0] and "(MLE)" in comparisons[0] and "d = 5.00" in comparisons[0]


def test_report_uses_the_fit_rows_d_for_a_chosen_group():
    dims = pl.concat([dimension_table(), dimension_table().with_columns(
        pl.lit("wide").alias("group"), pl.col("dimension") * 2, pl.col("ci_low") * 2, pl.col("ci_high") * 2)])
    fit = ScalingFit(bootstrap=30, dimension_group="wide").apply(curve(), dimension=dims)
    assert fit.row(0, named=True)["dimension_group"] == "wide"
    text = " ".join(ScalingReport().apply(fit=fit, dimension=dims)["finding"].to_list())
    assert "d = 20.00" in text and "d = 10.00 [" not in text.split("Power law")[1]


def test_plot_band_is_at_the_fits_confidence():
    sizes = np.geomspace(100, 10_000, 8)
    loss = (0.3 + 20.0 * sizes ** -0.8) * np.exp(np.random.default_rng(0).normal(0, 0.02, 8))
    law = fit_power_law(sizes, loss, bootstrap=50, confidence=0.5, rng=np.random.default_rng(0))
    grid = np.array([100.0, 1000.0])
    curves = law.curves[:, :1] + law.curves[:, 1:2] * grid ** -law.curves[:, 2:3]
    low, high = bootstrap_band(law, grid)
    np.testing.assert_allclose(low, np.quantile(curves, 0.25, axis=0))
    np.testing.assert_allclose(high, np.quantile(curves, 0.75, axis=0))


WRONG_TABLES = [("fit", "curve", "input 'fit' has no column(s) 'law', 'points', 'k'"),
                ("dimension", "fit", "input 'dimension' has no column(s) 'estimator', 'dimension', 'ci_low'")]


@pytest.mark.parametrize(("input_name", "table", "expected"), WRONG_TABLES, ids=["curve as fit", "fit as dimension"])
def test_a_wrong_table_wired_in_is_refused_by_validate(tmp_path, input_name, table, expected):
    # The raw curve as `fit` made a report of nothing (exit 0); a fit as `dimension` failed with KeyError 'ci_low'.
    from cli_failures import refused_by_validate

    dims = dimension_table()
    tables = {"curve": curve(), "fit": ScalingFit().apply(curve()), "dimension": dims}
    inputs = {"fit": "fit", "dimension": "dimension"} | {input_name: table}
    for name, source in inputs.items():
        tables[source].write_parquet(tmp_path / f"{name}.parquet")
    message = refused_by_validate(tmp_path / "c.yaml", f"""
name: wrong
steps:
  - id: report
    stage: scaling_report
    inputs: {{fit: {tmp_path / 'fit.parquet'}, dimension: {tmp_path / 'dimension.parquet'}}}
""")
    assert "step 'report' (stage 'scaling_report')" in message and expected in message, message
    stage = "scaling_fit" if input_name == "fit" else "intrinsic_dimension"
    assert f"expects the output of stage '{stage}'" in message, message


def test_a_wrong_table_is_refused_at_run_time_naming_the_file(tmp_path):
    from pipeline.errors import InputDataError
    from pipeline.io import Dataset

    curve().write_parquet(tmp_path / "curve.parquet")
    with pytest.raises(InputDataError) as err:
        ScalingReport().execute(fit=Dataset.from_parquet(tmp_path / "curve.parquet"))
    assert err.value.file == str(tmp_path / "curve.parquet")
    assert "input 'fit' has no column(s) 'law'" in err.value.message


def test_report_tables_scroll_inside_the_page(tmp_path):
    # The fit and curve tables are wider than the page: each scrolls in its own box, not the whole report.
    params, inputs = ScalingReport.example()
    ScalingReport(**params).execute(**inputs, workdir=tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert html.count("<table>") == 2 and html.count('<div class="wide"><table>') == 2
    assert ".wide { overflow-x: auto; }" in html


def test_a_null_groups_fit_is_named_as_that_group_not_as_an_ungrouped_fit():
    """scaling_fit(group_by) fits the rows whose key is null as a group of their own; the report said
    "Power law: ..." for it, as for a fit of the whole table."""
    table = pl.concat([curve().with_columns(params=pl.lit(size, pl.Float64)) for size in (1e6, None)])
    fit = ScalingFit(group_by="params", bootstrap=0).apply(table)
    text = [f for f in ScalingReport().apply(fit=fit)["finding"].to_list() if f.startswith("Power law")]
    assert len(text) == 2
    assert text[0].startswith("Power law for params = 1000000.0:") and text[1].startswith("Power law for params = null:")
