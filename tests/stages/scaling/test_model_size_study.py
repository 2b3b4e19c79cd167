"""The model-size study L(N), run in its quick variant: structure and sanity, never timings."""

from pathlib import Path

import polars as pl
import pytest

import pipeline

REPO = Path(__file__).resolve().parents[3]


def read(run: Path, step: str) -> pl.DataFrame:
    """A step's rows, or a side output's ('step/side'), in either run-folder layout."""
    return pipeline.load(run / step).collect()


@pytest.fixture(scope="module")
def model_size_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("runs")
    pipeline.run_pipeline(REPO / "configs" / "model_size_scaling_quick.yaml", workdir=workdir)
    return workdir / "model_size_scaling_quick"


def test_every_model_size_is_trained_on_every_subset(model_size_run):
    curve = read(model_size_run, "curve")
    assert curve.group_by("subset_size").agg(pl.col("hidden").sort())["hidden"].to_list() == \
        [["16", "4", "64", "8"]] * 2
    params = curve.filter(pl.col("subset_size") == curve["subset_size"].max()).sort("params")
    # One hidden layer of width w on 64 pixels and 10 classes: 64w + w + 10w + 10 parameters.
    assert params["params"].to_list() == [75 * w + 10 for w in (4, 8, 16, 64)]
    # Wider is better here: the widest model beats the narrowest at both data sizes.
    for _, part in curve.group_by("subset_size"):
        part = part.sort("params")
        assert part["test_loss"][-1] < part["test_loss"][0]


def test_l_of_n_is_fitted_per_data_size_with_intervals(model_size_run):
    fit = read(model_size_run, "fit").sort("group")
    assert fit.height == 2 and (fit["x_column"] == "params").all()
    for row in fit.iter_rows(named=True):
        # Strict: with 4 widths per data size, bootstrap refits once all stalled at the point estimate.
        assert row["alpha_low"] < row["alpha"] < row["alpha_high"] and row["alpha"] > 0
        assert row["L_inf_low"] < row["L_inf_high"]
    findings = read(model_size_run, "report")["finding"].to_list()
    assert sum(f.startswith("Power law") and "k N^-alpha" in f for f in findings) == 2
