import numpy as np
import pytest

from pipeline.errors import InputDataError
from stages.scaling.fitting import fit_power_law, fit_transfer_law

# L(N) near its floor: 10 sizes x 3 seeds, the larger sizes within noise of L_inf = 0.1.
NEAR_FLOOR_N = np.repeat(np.geomspace(300, 3e5, 10), 3)


def near_floor_losses(seed: int, floor: float = 0.1, k: float = 300.0, alpha: float = 1.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (floor + k * NEAR_FLOOR_N ** -alpha) * np.exp(rng.normal(0, 0.05, NEAR_FLOOR_N.size))


def test_floor_is_not_capped_below_the_smallest_loss():
    # A floor capped under min(loss) biased alpha low here: median 1.03 over these 20 data sets, and
    # 95% intervals that missed the true 1.2 and 0.1 (even their own point estimates).
    alphas = [fit_power_law(NEAR_FLOOR_N, near_floor_losses(seed), bootstrap=0).alpha for seed in range(20)]
    assert np.median(alphas) == pytest.approx(1.2, abs=0.05)
    for seed in range(3):
        y = near_floor_losses(seed)
        law = fit_power_law(NEAR_FLOOR_N, y, bootstrap=100, rng=np.random.default_rng(seed))
        low, high = law.intervals["alpha"]
        assert low < 1.2 < high and low < law.alpha < high
        low, high = law.intervals["floor"]
        assert low < 0.1 < high
    assert law.floor > y.min()  # a floor above some noisy losses is a legitimate fit


def test_bootstrap_refits_do_not_stall_at_the_point_estimate():
    # model_size_scaling_quick, data size 320: 4 widths. Refits started from the point estimate all
    # stayed there, giving the zero-width intervals L_inf [0.107566, 0.107566], alpha [1.048, 1.048].
    params = np.array([310.0, 610.0, 1210.0, 4810.0])
    loss = np.array([0.685886, 0.566967, 0.240053, 0.142115])
    law = fit_power_law(params, loss, bootstrap=100, rng=np.random.default_rng(0))
    for name in ("floor", "alpha"):
        low, high = law.intervals[name]
        assert high - low > 0.05, (name, low, high)
    assert law.intervals["alpha"][0] < law.alpha < law.intervals["alpha"][1]


def transfer_points(d_f, n, seed=1):
    d_f, n = np.asarray(d_f, dtype=float), np.asarray(n, dtype=float)
    noise = np.exp(np.random.default_rng(seed).normal(0, 0.05, d_f.size))
    return d_f, n, 0.8 * d_f ** 0.35 * n ** 0.4 * noise


@pytest.mark.parametrize("bootstrap", [0, 50])
def test_transfer_law_needs_two_fine_tuning_sizes(bootstrap):
    # One D_F at four model sizes: alpha is not identified (the old fit invented one, or crashed).
    d_f, n, d_t = transfer_points([2e3] * 4, [1e5, 3e5, 1e6, 3e6])
    with pytest.raises(InputDataError, match="1 distinct fine-tuning size") as err:
        fit_transfer_law(d_f, n, d_t, bootstrap=bootstrap)
    assert err.value.param == "x_column"


def test_transfer_bootstrap_keeps_only_full_rank_replicates():
    # 4 points: many resamples hold 2 sizes and 2 model sizes but only 3 distinct rows, where the
    # least-squares "solution" is one of infinitely many and widened the interval.
    d_f, n, d_t = transfer_points([2e3, 4e3, 2e3, 8e3], [1e5, 1e5, 1e6, 1e6])
    law = fit_transfer_law(d_f, n, d_t, bootstrap=500, rng=np.random.default_rng(0))
    design = np.column_stack([np.ones(4), np.log(d_f), np.log(n)])
    rng, full = np.random.default_rng(0), []
    for _ in range(500):
        pick = rng.integers(0, 4, 4)
        if np.linalg.matrix_rank(design[pick]) == 3:
            full.append(np.linalg.lstsq(design[pick], np.log(d_t[pick]), rcond=None)[0][1])
    assert law.intervals["alpha"] == pytest.approx(tuple(np.quantile(full, [0.025, 0.975])))
    assert law.replicates == len(full) < 500


def test_transfer_bootstrap_with_no_full_rank_replicate_is_refused():
    # The one point at N = 1e6 carries beta: a resample without it (or with too few D_F left) has rank < 3.
    d_f, n, d_t = transfer_points([2e3, 4e3, 8e3, 2e3], [1e5, 1e5, 1e5, 1e6])
    design = np.column_stack([np.ones(4), np.log(d_f), np.log(n)])
    seed = next(s for s in range(100)
                if np.linalg.matrix_rank(design[np.random.default_rng(s).integers(0, 4, 4)]) < 3)
    assert np.isfinite(fit_transfer_law(d_f, n, d_t, bootstrap=0).beta)
    with pytest.raises(InputDataError, match="none of the 1 bootstrap resamples") as err:
        fit_transfer_law(d_f, n, d_t, bootstrap=1, rng=np.random.default_rng(seed))
    assert err.value.param == "bootstrap"


def test_transfer_law_refuses_collinear_sizes():
    # Each model size fine-tuned on its own data size: log D_F and log N move together.
    d_f, n, d_t = transfer_points([2e3, 2e3, 4e3, 4e3], [1e5, 1e5, 2e5, 2e5])
    with pytest.raises(InputDataError, match="collinear") as err:
        fit_transfer_law(d_f, n, d_t, bootstrap=0)
    assert err.value.param == "x_column"


def test_a_bad_size_is_blamed_on_the_size_column_and_a_bad_loss_on_the_loss_column():
    sizes, losses = np.array([100.0, 200, 400, 800, 1600]), np.array([3.0, 2.5, 2.2, 2.0, 1.9])
    with pytest.raises(InputDataError, match=r"parameter 'x_column'.*sizes must be finite and > 0.*e\.g\. 0\.0"):
        fit_power_law(np.where(sizes == 100, 0.0, sizes), losses, bootstrap=0)
    with pytest.raises(InputDataError, match=r"parameter 'y_column'.*losses must be finite and > 0"):
        fit_power_law(sizes, np.where(losses == 3.0, np.nan, losses), bootstrap=0)
