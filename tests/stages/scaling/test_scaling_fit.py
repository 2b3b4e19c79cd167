import hashlib

import numpy as np
import polars as pl
import pytest
from conftest import check_side_outputs_declared, run_cli, write_config

from pipeline.errors import InputDataError
from pipeline.io import Dataset
from stages.scaling.fitting import fit_power_law
from stages.scaling.scaling_fit import FIT_PLOT, TRANSFER_PLOT, ScalingFit


def noisy_curve(floor: float, k: float, alpha: float, seed: int, noise: float = 0.01, points: int = 12):
    rng = np.random.default_rng(seed)
    d = np.geomspace(100, 1e6, points)
    return d, (floor + k * d ** -alpha) * np.exp(rng.normal(0, noise, d.size))


@pytest.mark.parametrize("truth", [(0.5, 3.0, 0.35), (1.2, 40.0, 0.6), (0.3, 2.0, 0.25)])
def test_recovers_power_law_within_5_percent(truth):
    floor, k, alpha = truth
    for seed in range(3):
        d, loss = noisy_curve(floor, k, alpha, seed)
        law = fit_power_law(d, loss, bootstrap=100, rng=np.random.default_rng(seed))
        assert law.alpha == pytest.approx(alpha, rel=0.05)
        assert law.k == pytest.approx(k, rel=0.05)
        assert law.floor == pytest.approx(floor, rel=0.05)
        low, high = law.intervals["alpha"]
        assert low < law.alpha < high and high - low < 0.5 * alpha


def test_stage_fits_groups_and_links_dimension():
    frames = []
    for n, alpha in ((1000, 0.3), (5000, 0.5)):
        d, loss = noisy_curve(0.4, 5.0, alpha, seed=n, noise=0.005)
        frames.append(pl.DataFrame({"subset_size": d, "test_loss": loss, "params": n}))
    dims = pl.DataFrame({"group": [None, None], "estimator": ["twonn", "mle"], "dimension": [10.0, 12.0],
                         "ci_low": [9.0, 11.0], "ci_high": [11.0, 13.0]}, schema_overrides={"group": pl.String})
    result = ScalingFit(group_by="params", bootstrap=50).execute(pl.concat(frames), dimension=dims, seed=0)
    out = result.table.sort("group")
    assert out["group"].to_list() == ["1000", "5000"]
    assert out["alpha"].to_list() == pytest.approx([0.3, 0.5], rel=0.05)
    assert (out["alpha_4_over_d"] == 0.4).all() and (out["dimension"] == 10.0).all()
    assert out["alpha_4_over_d_low"][0] == pytest.approx(4 / 11) and out["r2_log"].min() > 0.99
    assert (result.artefact_dir / FIT_PLOT).stat().st_size > 0


def synthetic_transfer(k=0.8, alpha=0.35, beta=0.4, noise=0.003, seed=2) -> pl.DataFrame:
    """From-scratch curves L_N(D) and fine-tuned losses L_N(D_F + k D_F^alpha N^beta)."""
    rng = np.random.default_rng(seed)
    scratch_d = np.geomspace(1e3, 1e8, 16)
    fine_d = np.geomspace(1e3, 1e5, 6)
    rows = []
    for n in (1e5, 1e6, 1e7):
        def curve(d, n=n):
            return 1.0 + 1e3 / n + 20.0 * d ** -0.3
        noisy = curve(scratch_d) * np.exp(rng.normal(0, noise, scratch_d.size))
        rows += [{"subset_size": d, "params": n, "regime": "scratch", "test_loss": v}
                 for d, v in zip(scratch_d, noisy)]
        tuned = curve(fine_d + k * fine_d ** alpha * n ** beta) * np.exp(rng.normal(0, noise, fine_d.size))
        rows += [{"subset_size": d, "params": n, "regime": "finetuned", "test_loss": v}
                 for d, v in zip(fine_d, tuned)]
    return pl.DataFrame(rows)


def test_a_loss_rising_with_data_is_flagged_not_fitted(tmp_path):
    # A curve that rises with data was fitted silently: alpha 5.0 (the grid's bound) with k = 1e-12, a meaningless
    # exponent in the table, the stats and the report.
    from stages.scaling.report import ScalingReport

    d = np.geomspace(100, 1e5, 6)
    table = pl.concat([pl.DataFrame({"subset_size": d, "test_loss": 1.0 + 0.1 * np.log(d), "g": "up"}),
                       pl.DataFrame({"subset_size": d, "test_loss": 0.5 + 3.0 * d ** -0.3, "g": "down"})])
    result = ScalingFit(group_by="g", bootstrap=0).execute(table, seed=0, workdir=tmp_path / "fit")
    down, up = result.table.sort("group").iter_rows(named=True)
    assert down["alpha"] == pytest.approx(0.3, rel=1e-3) and down["warning"] is None and down["loglog_slope"] < 0
    assert np.isnan([up["alpha"], up["k"], up["L_inf"]]).all() and up["loglog_slope"] > 0
    assert "rises with 'subset_size' in group 'up'" in up["warning"]
    assert list(result.stats)[:2] == ["rising_curves_not_fitted", "warning"]  # what the run's summary shows first
    assert result.stats["warning"].startswith("step 'scaling_fit': loss 'test_loss' rises")
    assert result.stats["alpha@up"] is None
    findings = ScalingReport().execute(fit=result.table, workdir=tmp_path / "report").table["finding"].to_list()
    assert findings[1].startswith("Power law for g = up: not fitted: loss 'test_loss' rises")


def test_a_flat_loss_is_flagged_not_fitted():
    # The same loss at every size (a model that learns nothing from more data) was fitted as L_inf alone with k at
    # its 1e-12 bound: alpha 2.87 [2.87, 2.87], a made-up exponent with a zero-width interval.
    d = np.geomspace(40, 1280, 6)
    result = ScalingFit(bootstrap=5).execute(pl.DataFrame({"subset_size": d, "test_loss": np.full(6, 0.3)}), seed=0)
    row = result.table.row(0, named=True)
    assert np.isnan([row["alpha"], row["alpha_low"], row["alpha_high"], row["k"]]).all(), row
    assert "loss 'test_loss' stays flat with 'subset_size'" in row["warning"]
    assert result.stats["alpha"] is None


def test_recovers_transfer_law_within_10_percent():
    stage = ScalingFit(law="transfer", bootstrap=200)
    result = stage.execute(synthetic_transfer(), seed=0)
    check_side_outputs_declared(stage, result)  # `transfer_points` under law: transfer only
    row = result.table.row(0, named=True)
    assert row["k"] == pytest.approx(0.8, rel=0.10)
    assert row["alpha"] == pytest.approx(0.35, rel=0.10)
    assert row["beta"] == pytest.approx(0.4, rel=0.10)
    assert row["alpha_low"] < row["alpha"] < row["alpha_high"]
    points = result.side_outputs["transfer_points"]
    assert points.height == 18 and points["used"].all()
    assert (points["D_E"] > points["D_F"]).all()
    assert (result.artefact_dir / TRANSFER_PLOT).stat().st_size > 0


def test_transfer_plot_without_bootstrap_says_so_instead_of_nan_bounds(monkeypatch):
    import matplotlib.axes

    titles = []
    original = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda self, label, *a, **k: titles.append(label) or original(self, label, *a, **k))
    for bootstrap in (0, 20):
        ScalingFit(law="transfer", bootstrap=bootstrap).execute(synthetic_transfer(), seed=0)
    without, with_intervals = [t.splitlines() for t in titles if t.startswith("D_T = ")]  # the law's panel
    assert without[1] == "no intervals (bootstrap: 0)"  # was "alpha in [nan, nan], beta in [nan, nan]"
    assert with_intervals[1].startswith("alpha in [") and "nan" not in with_intervals[1]


def test_fewer_points_than_parameters_are_refused():
    with pytest.raises(InputDataError, match="3 distinct values of 'subset_size' cannot fit 3 parameters") as err:
        ScalingFit().apply(pl.DataFrame({"subset_size": [10.0, 100.0, 1000.0], "test_loss": [3.0, 2.0, 1.5]}))
    assert err.value.param == "x_column"
    tiny = synthetic_transfer().filter((pl.col("regime") == "scratch") | (pl.col("subset_size") < 2000))
    with pytest.raises(InputDataError, match="usable .* points cannot fit k, alpha and beta"):
        ScalingFit(law="transfer").apply(tiny)
    with pytest.raises(InputDataError, match="must hold both 'scratch' and 'finetuned'"):
        ScalingFit(law="transfer").apply(synthetic_transfer().filter(pl.col("regime") == "scratch"))


def test_transfer_with_one_usable_fine_tuning_size_exits_2(tmp_path):
    # Fine-tuned at D_F = 1e3 and 1e5, but at 1e5 no model gains anything: the usable points share one
    # D_F. With bootstrap 50 this was an IndexError traceback; with bootstrap 0 an invented alpha.
    rows, scratch_d = [], np.geomspace(1e3, 1e6, 8)
    for n in (1e5, 3e5, 1e6, 3e6):
        def curve(d, n=n):
            return 1.0 + 1e3 / n + 20.0 * d ** -0.3
        rows += [{"subset_size": d, "params": n, "regime": "scratch", "test_loss": curve(d)} for d in scratch_d]
        rows.append({"subset_size": 1e3, "params": n, "regime": "finetuned",
                     "test_loss": curve(1e3 + 0.8 * 1e3 ** 0.35 * n ** 0.4)})
        rows.append({"subset_size": 1e5, "params": n, "regime": "finetuned", "test_loss": curve(1e5) * 1.02})
    pl.DataFrame(rows).write_parquet(tmp_path / "curves.parquet")
    cfg = write_config(tmp_path / "transfer.yaml", f"""
name: transfer_one_size
steps:
  - id: fit
    stage: scaling_fit
    inputs: {tmp_path / 'curves.parquet'}
    params: {{law: transfer, bootstrap: 50}}
""")
    proc = run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"), "--quiet")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "step 'fit'" in line and "parameter 'x_column'" in line and "curves.parquet" in line
    assert "1 distinct fine-tuning sizes" in line


def test_transfer_with_the_two_regimes_at_different_model_sizes_names_params_column():
    # Scratch rows only at N=1, fine-tuned only at N=2: no pair to read, and the empty points table was a
    # ColumnNotFoundError ("D_F" not found), exit 1 as a bug.
    sizes = np.geomspace(1e3, 1e6, 6)
    table = pl.DataFrame([{"subset_size": d, "params": 1.0, "regime": "scratch", "test_loss": 1 + d ** -0.3}
                          for d in sizes] + [{"subset_size": 1e3, "params": 2.0, "regime": "finetuned", "test_loss": 1.1}])
    with pytest.raises(InputDataError, match="no model size in column 'params' has both") as err:
        ScalingFit(law="transfer", bootstrap=0).apply(table)
    assert err.value.param == "params_column"


def test_plots_are_the_same_bytes_in_any_workdir(tmp_path):
    # The title held the input's path, so the same run in another workdir drew other bytes (review of
    # reproducibility); it names the step or file now.
    digests = []
    for where in ("one", "elsewhere/two"):
        folder = tmp_path / where / "points"
        folder.mkdir(parents=True)
        synthetic_transfer().write_parquet(folder / "part-00000.parquet")
        result = ScalingFit(law="transfer", bootstrap=0).execute(Dataset.from_parquet(folder), seed=0,
                                                                 workdir=tmp_path / where / "out")
        digests.append(hashlib.sha256((result.artefact_dir / TRANSFER_PLOT).read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_nan_group_keys_and_model_sizes_are_refused_and_a_null_group_is_fit():
    # NaN equals nothing: its rows were fit as a group 'nan'. A null group was a TypeError from the sort of the
    # groups (a traceback); it is now a group of its own, fit last. A NaN or null model size in the transfer law
    # was a LinAlgError or TypeError.
    frames = []
    for n, alpha in ((1000.0, 0.3), (None, 0.5)):
        d, loss = noisy_curve(0.4, 5.0, alpha, seed=7, noise=0.005)
        frames.append(pl.DataFrame({"subset_size": d, "test_loss": loss, "params": n},
                                   schema_overrides={"params": pl.Float64}))
    curves = pl.concat(frames)
    out = ScalingFit(group_by="params", bootstrap=0).apply(curves)
    assert out["group"].to_list() == ["1000.0", None]
    assert out["alpha"].to_list() == pytest.approx([0.3, 0.5], rel=0.05)
    with pytest.raises(InputDataError, match="column 'params' has 12 NaN values.*no defined group") as err:
        ScalingFit(group_by="params", bootstrap=0).apply(curves.with_columns(pl.col("params").fill_null(float("nan"))))
    assert err.value.param == "group_by"
    transfer = synthetic_transfer()
    for bad in (float("nan"), None):
        with pytest.raises(InputDataError, match="column 'params' has 22 null or NaN values") as err:
            ScalingFit(law="transfer", bootstrap=0).apply(
                transfer.with_columns(params=pl.when(pl.col("params") == 1e6).then(bad).otherwise("params")))
        assert err.value.param == "params_column"


def test_a_null_group_of_a_grouped_dimension_table_is_not_read_as_no_group():
    from stages.scaling.scaling_fit import dimension_row

    # intrinsic_dimension grouped by 'kind': a null key is a group of its own. Asked for "no group", the
    # fit took that null group's d as if the table were ungrouped; it now takes the first row, as documented.
    grouped = pl.DataFrame({"group_by": ["kind"] * 2, "group": ["1.0", None], "estimator": ["twonn"] * 2,
                            "dimension": [2.0, 7.0]}, schema_overrides={"group": pl.String})
    assert dimension_row(grouped, "twonn", None)["dimension"] == 2.0
    assert dimension_row(grouped, "twonn", "1.0")["dimension"] == 2.0
    ungrouped_first = pl.DataFrame({"group_by": ["kind", None], "group": ["1.0", None], "estimator": ["twonn"] * 2,
                                    "dimension": [2.0, 7.0]}, schema_overrides={"group_by": pl.String})
    assert dimension_row(ungrouped_first, "twonn", None)["dimension"] == 7.0
    # A table without the group_by column (written by hand) still reads a null group as no group.
    assert dimension_row(grouped.drop("group_by"), "twonn", None)["dimension"] == 7.0


def test_a_from_scratch_curve_rising_with_data_is_left_out_of_the_transfer_law():
    """The transfer law reads each fine-tuned loss off the from-scratch law of its model size; a from-scratch curve
    that rises with data was fitted (alpha pinned to a bound) and inverted all the same."""
    table = synthetic_transfer()
    rising = (pl.col("params") == 1e7) & (pl.col("regime") == "scratch")
    broken = table.with_columns(pl.when(rising).then(1.0 + 0.05 * pl.col("subset_size").log())
                                .otherwise(pl.col("test_loss")).alias("test_loss"))
    result = ScalingFit(law="transfer", bootstrap=0).execute(broken, seed=0)
    assert result.side_outputs["transfer_points"]["params"].unique().sort().to_list() == [1e5, 1e6]
    assert list(result.stats)[:2] == ["rising_curves_not_fitted", "warning"]
    assert "rises with 'subset_size' at params = 10000000.0" in result.stats["warning"]
    assert "6 fine-tuned points are left out" in result.stats["warning"]
    every = broken.with_columns(pl.when(pl.col("regime") == "scratch").then(1.0 + 0.05 * pl.col("subset_size").log())
                                .otherwise(pl.col("test_loss")).alias("test_loss"))
    with pytest.raises(InputDataError, match="no model size has a from-scratch curve falling with data"):
        ScalingFit(law="transfer", bootstrap=0).apply(every)
