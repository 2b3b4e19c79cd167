import numpy as np
import polars as pl
import pytest
from conftest import run_cli, write_config

from pipeline.errors import InputDataError
from stages.embedding import vectors_to_series
from stages.scaling import id_estimators
from stages.scaling.intrinsic_dimension import PLOT_NAME, IntrinsicDimension
from stages.scaling.knn import exact_distances, nearest_neighbours


def ball(n: int, d: int, ambient: int, seed: int) -> np.ndarray:
    """Uniform points in a d-ball, rotated at random into `ambient` dimensions."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, d))
    g *= (rng.random((n, 1)) ** (1.0 / d)) / np.linalg.norm(g, axis=1, keepdims=True)
    rotation, _ = np.linalg.qr(rng.standard_normal((ambient, ambient)))
    return g @ rotation[:d]


def table(x: np.ndarray, **extra) -> pl.DataFrame:
    return pl.DataFrame({"id": np.arange(x.shape[0]), **extra}).with_columns(vectors_to_series("embedding", x))


@pytest.mark.parametrize("d", [3, 6])
def test_recovers_dimension_of_rotated_ball(d):
    result = IntrinsicDimension(estimators=["twonn", "mle", "gride"], bootstrap=50).execute(
        table(ball(4000, d, 64, seed=d)), seed=1)
    for row in result.table.iter_rows(named=True):
        assert abs(row["dimension"] - d) / d < 0.12, row
        assert row["ci_low"] < row["dimension"] < row["ci_high"]
        assert row["points"] == 4000 and row["ambient_dimension"] == 64
    local = result.side_outputs["local"]
    assert local.height == 4000 and (local["r2"] >= local["r1"]).all() and (local["r1"] > 0).all()
    assert (result.artefact_dir / PLOT_NAME).stat().st_size > 0


def test_groups_are_estimated_separately():
    x = np.vstack([ball(1500, 2, 20, seed=0), ball(1500, 8, 20, seed=1) + 50.0])
    out = IntrinsicDimension(group_by="kind", bootstrap=0).apply(table(x, kind=["flat"] * 1500 + ["wide"] * 1500))
    mle = {r["group"]: r["dimension"] for r in out.filter(pl.col("estimator") == "mle").iter_rows(named=True)}
    assert abs(mle["flat"] - 2) < 0.3 and abs(mle["wide"] - 8) < 1.2


def test_estimators_match_closed_forms():
    rng = np.random.default_rng(5)
    dist = np.sort(rng.random((500, 12)) + 0.1, axis=1)
    mu = dist[:, 1] / dist[:, 0]
    assert id_estimators.twonn(mu, "mle", 0.0) == pytest.approx((mu.size - 1) / np.log(mu).sum())
    local = id_estimators.mle_local(dist, 5)
    expected = 4 / np.log(dist[:, 4:5] / dist[:, :4]).sum(axis=1)
    np.testing.assert_allclose(local, expected)
    # GRIDE with n1 = 1 (n2 = 2) is the uncensored TwoNN likelihood: d = N / sum(log mu).
    assert id_estimators.gride(mu, 1) == pytest.approx(mu.size / np.log(mu).sum(), rel=1e-5)


def test_neighbours_are_exact_and_hnsw_reports_recall():
    x = ball(3000, 4, 32, seed=2).astype(np.float32)
    exact = nearest_neighbours(x, 5, "exact")
    brute = np.sqrt(((x[:300, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1))
    brute[np.arange(300), np.arange(300)] = np.inf
    np.testing.assert_allclose(np.sort(brute, axis=1)[:, :5], exact.distances[:300], rtol=1e-5)
    np.testing.assert_allclose(exact.distances, exact_distances(x, exact.ids))
    approx = nearest_neighbours(x, 5, "hnsw")
    assert approx.index == "hnsw" and 0.9 <= approx.recall <= 1.0


def test_projected_search_finds_the_exact_neighbours_of_low_rank_points():
    x = ball(6000, 5, 96, seed=5).astype(np.float32)  # a 5-d ball inside 96 dimensions
    exact = nearest_neighbours(x, 10, "exact")
    fast = nearest_neighbours(x, 10, "projected", seed=3)
    assert fast.index.startswith("projected5-ivf") and fast.recall >= 0.999
    assert (fast.ids == exact.ids).mean() > 0.995
    for estimate in (lambda d: id_estimators.twonn(id_estimators.twonn_ratios(d)),
                     lambda d: id_estimators.mle_global(id_estimators.mle_local(d, 10))):
        assert estimate(fast.distances) == pytest.approx(estimate(exact.distances), rel=0.005)


def test_projected_search_falls_back_to_hnsw_on_full_rank_points():
    x = np.random.default_rng(6).standard_normal((2000, 16)).astype(np.float32)
    found = nearest_neighbours(x, 5, "projected")
    assert found.index == "hnsw" and found.recall >= 0.9


def test_twonn_bootstrap_statistic_matches_independent_fits():
    from scipy.optimize import minimize_scalar

    rng = np.random.default_rng(7)
    mu = 1.0 + rng.pareto(4.0, 5000)  # Pareto ratios with shape d = 4
    n, kept = mu.size, int(mu.size * 0.9)
    # One replicate as bootstrap_interval builds it: the sorted log ratios, each repeated as often as drawn.
    resampled = np.repeat(np.sort(np.log(mu)), np.bincount(rng.integers(0, n, n), minlength=n))
    x = np.sort(np.log(np.exp(resampled)))[:kept]  # the replicate's ratios, sorted again, largest 10% out
    # 'linear': least squares through the origin of -log(1 - i/n) against log mu.
    y = -np.log1p(-np.arange(1, kept + 1) / n)
    slope = np.linalg.lstsq(x[:, None], y, rcond=None)[0][0]
    assert id_estimators.twonn_statistic(n, "linear", 0.1)(resampled) == pytest.approx(slope, rel=1e-9)
    # 'mle': log mu ~ Exponential(d), type-II censored at the kept-th ratio; the estimator is the
    # likelihood's maximum times (kept - 1) / kept (the unbiased version).
    exposure = x.sum() + (n - kept) * x[-1]
    best = minimize_scalar(lambda d: -(kept * np.log(d) - d * exposure), bounds=(0.1, 100.0), method="bounded",
                           options={"xatol": 1e-10}).x
    assert id_estimators.twonn_statistic(n, "mle", 0.1)(resampled) == pytest.approx(best * (kept - 1) / kept,
                                                                                   rel=1e-6)
    for method in ("linear", "mle"):
        assert id_estimators.twonn(mu, method, 0.1) == pytest.approx(4.0, rel=0.05)


def test_duplicates_dropped_and_counted_or_refused():
    x = ball(600, 3, 10, seed=4)
    doubled = np.vstack([x, x[:50]])
    out = IntrinsicDimension(bootstrap=0).apply(table(doubled))
    assert (out["duplicates_dropped"] == 50).all() and (out["points"] == 600).all()
    with pytest.raises(InputDataError, match="50 of 650 vectors repeat") as err:
        IntrinsicDimension(duplicates="error").apply(table(doubled))
    assert err.value.param == "duplicates"


@pytest.mark.parametrize("copies", ["near", "negative_zero"])
def test_copies_equal_in_float32_are_duplicates(copies):
    # The search runs in float32: rows 1e-12 apart, or differing only in -0.0 / +0.0, are at distance
    # 0 there. Found on the float64 bytes they were kept, and gave MLE 0.0 and infinite TwoNN ratios.
    x = np.random.default_rng(0).random((1000, 3))
    if copies == "near":
        copied = x[:5] + 1e-12
    else:
        x[:, 0] = 0.0
        copied = x[:5].copy()
        copied[:, 0] = -0.0
    assert all(a.tobytes() != b.tobytes() for a, b in zip(x[:5], copied))  # distinct float64 bytes
    stage = IntrinsicDimension(estimators=["twonn", "mle", "gride"], bootstrap=20, plot=False, scales=[])
    clean = stage.apply(table(x))
    out = stage.apply(table(np.vstack([x, copied])))
    assert (out["duplicates_dropped"] == 5).all() and (out["points"] == 1000).all()
    columns = ["estimator", "dimension", "ci_low", "ci_high"]
    assert out.select(columns).equals(clean.select(columns))
    assert (clean["dimension"] > 1.5).all()


def test_too_few_points_and_non_finite_vectors_are_refused():
    with pytest.raises(InputDataError, match="distinct points") as err:
        IntrinsicDimension(k=10).apply(table(ball(16, 2, 4, seed=0)))
    assert err.value.param == "k"
    x = ball(200, 2, 4, seed=0)
    x[7, 1] = np.nan
    with pytest.raises(InputDataError, match="NaN or infinite") as err:
        IntrinsicDimension().apply(table(x))
    assert err.value.param == "column"


def test_cli_reports_non_finite_vectors_in_one_line(tmp_path):
    x = ball(200, 2, 4, seed=0)
    x[3, 0] = np.inf
    table(x).write_parquet(tmp_path / "points.parquet")
    cfg = write_config(tmp_path / "id.yaml", f"""
name: id_bad
steps:
  - id: dim
    stage: intrinsic_dimension
    inputs: {tmp_path / 'points.parquet'}
    params: {{bootstrap: 0}}
""")
    proc = run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"), "--quiet")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "step 'dim'" in line and "parameter 'column'" in line and "points.parquet" in line


@pytest.mark.parametrize("bootstrap", [-1, 10**12])
def test_bootstrap_out_of_range_is_refused_in_both_scaling_stages(bootstrap):
    from pipeline.errors import ParamError
    from stages.scaling.scaling_fit import ScalingFit

    for stage in (IntrinsicDimension, ScalingFit):
        with pytest.raises(ParamError) as err:
            stage.from_params({"bootstrap": bootstrap})
        assert err.value.param == "bootstrap" and "100,000" in str(err.value)


def test_the_plot_draws_an_estimate_outside_its_own_percentile_interval(tmp_path):
    from stages.scaling.intrinsic_dimension import _plot_scales

    # A small bootstrap's percentile interval can miss the estimate (seen: 2.248 with (2.041, 2.217)).
    result = pl.DataFrame({"group": [None], "estimator": ["twonn"], "dimension": [2.248], "ci_low": [2.041],
                           "ci_high": [2.217], "radius": [0.3]})
    _plot_scales([], result, tmp_path / "scales.png", "outside")
    assert (tmp_path / "scales.png").stat().st_size > 0


def test_nan_group_keys_are_refused():
    # NaN equals nothing: its points were estimated as a group 'nan' of their own. A null is a group of its own.
    x = ball(400, 2, 4, seed=0)
    kind = pl.Series([[1.0, float("nan")][i % 2] for i in range(400)])
    with pytest.raises(InputDataError, match="column 'kind' has 200 NaN values.*no defined group") as err:
        IntrinsicDimension(group_by="kind", bootstrap=0, plot=False).apply(table(x, kind=kind))
    assert err.value.param == "group_by"
    out = IntrinsicDimension(group_by="kind", bootstrap=0, plot=False, estimators=["twonn"]).apply(
        table(x, kind=kind.fill_nan(None)))
    assert out["group"].to_list() == ["1.0", None]
    assert out["group_by"].to_list() == ["kind", "kind"]  # the null key is a group, not an ungrouped estimate


def test_repeated_ids_and_ragged_vectors_are_refused_naming_the_file(tmp_path):
    # Repeated ids named several points of the `local` output alike (exit 0); ragged vectors named no file.
    points = table(ball(200, 2, 4, seed=0)).with_columns(id=pl.lit("r0"))
    with pytest.raises(InputDataError, match="duplicate ids") as err:
        IntrinsicDimension(bootstrap=0).apply(points)
    assert err.value.param == "id_column"
    path = tmp_path / "ragged.parquet"
    pl.DataFrame({"id": [f"p{i}" for i in range(40)],
                  "embedding": [[0.1 * i, 1.0, 2.0] if i % 2 else [0.1 * i, 1.0] for i in range(40)]}).write_parquet(path)
    cfg = write_config(tmp_path / "id.yaml", f"""
name: id_bad
steps:
  - id: dim
    stage: intrinsic_dimension
    inputs: {path}
    params: {{bootstrap: 0, k: 5}}
""")
    proc = run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"), "--quiet")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "step 'dim'" in line and "parameter 'column'" in line and str(path) in line, line


@pytest.mark.parametrize("scale", [1e-30, 1e20])
def test_the_estimate_does_not_depend_on_the_scale_of_the_vectors(scale):
    # The float32 search squares distances: vectors near 1e-30 had them underflow to 0 (arbitrary neighbours: TwoNN
    # 2.80 where the same points at scale 1 read 3.12) and near 1e20 overflow to inf (TwoNN and MLE NaN).
    x = np.random.default_rng(0).random((300, 3))
    stage = IntrinsicDimension(bootstrap=0, plot=False)
    unit = stage.execute(table(x), seed=0).table.sort("estimator")
    scaled = stage.execute(table(x * scale), seed=0).table.sort("estimator")
    assert scaled["dimension"].to_list() == pytest.approx(unit["dimension"].to_list(), rel=1e-5)
    assert scaled["radius"].to_list() == pytest.approx((unit["radius"] * scale).to_list(), rel=1e-5)  # same units


def test_twonn_on_lattice_points_warns_instead_of_a_silent_nan():
    """Points of an integer grid: every point's two nearest neighbours are one step away, r2/r1 = 1 says nothing of
    d, and TwoNN was NaN with only numpy's runtime warnings to show for it."""
    grid = np.array([(i, j) for i in range(20) for j in range(20)], dtype=np.float64) @ np.eye(2, 5)
    result = IntrinsicDimension(estimators=["twonn", "mle"], bootstrap=0, scales=[2]).execute(table(grid), seed=0)
    twonn = result.table.filter(pl.col("estimator") == "twonn")["dimension"][0]
    assert np.isnan(twonn)
    assert next(iter(result.stats)) == "warning"
    assert "TwoNN is undefined (NaN): 100% of the points have their two nearest neighbours at one distance" \
        in result.stats["warning"]
    assert "warning" not in IntrinsicDimension(bootstrap=0, scales=[2]).execute(table(ball(500, 3, 8, seed=0)),
                                                                                 seed=0).stats
