"""Scaling-law fits: L(D) = L_inf + k D^-alpha, and the transfer law D_T = k D_F^alpha N^beta.

The power law is fitted in log space (residual log L - log L_hat), as Hoffmann et al. do: losses
spread over a decade weigh alike, and a robust loss (Huber by default) keeps one diverged run from
bending the exponent. The start comes from a grid over alpha with L_inf and k solved linearly at
each point (variable projection), so the fit does not depend on a hand-picked initial guess. The
floor is not held under the smallest loss (the log-space model needs only floor >= 0), which would
bias alpha low wherever the points reach the floor. Intervals are residual bootstraps (resampled log
residuals put back on the fitted curve), each replicate refitted from its own grid start and from the
point estimate, keeping the better: one start alone can stall.

The transfer law follows Hernandez et al. (2021): for a model of N parameters fine-tuned on D_F
tokens to loss L, the effective data D_E is the from-scratch data at which a model of the same size
reaches L (read off the from-scratch curve), and D_T = D_E - D_F is the data transferred. Then
log D_T = log k + alpha log D_F + beta log N is fitted by least squares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import InputDataError

ALPHA_GRID = np.geomspace(0.005, 5.0, 200)


@dataclass
class PowerLaw:
    """A fitted L(x) = floor + k x^-alpha with bootstrap intervals {name: (low, high)}."""

    floor: float
    k: float
    alpha: float
    points: int
    rmse_log: float
    r2_log: float
    confidence: float = 0.95  # the level of the intervals and of the band on plots
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    curves: np.ndarray | None = None  # bootstrap replicate parameters (B, 3), for bands on plots

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.floor + self.k * np.power(np.asarray(x, dtype=np.float64), -self.alpha)

    def inverse(self, loss: np.ndarray) -> np.ndarray:
        """The x at which the law reaches `loss` (NaN at or below the floor)."""
        excess = np.asarray(loss, dtype=np.float64) - self.floor
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(excess > 0, np.power(excess / self.k, -1.0 / self.alpha), np.nan)


def _model(theta: np.ndarray, x: np.ndarray, with_floor: bool) -> np.ndarray:
    return np.exp(_log_model(theta, np.log(x), with_floor))


def _log_model(theta: np.ndarray, log_x: np.ndarray, with_floor: bool) -> np.ndarray:
    """log(floor + k x^-alpha), with theta = (floor, log k, alpha), in log space: the optimiser's trial steps
    (a large log k or alpha) neither overflow exp nor reach log(0)."""
    log_power = theta[1] - theta[2] * log_x
    if not with_floor:
        return log_power
    with np.errstate(divide="ignore"):  # a floor of 0 is log 0 = -inf, which logaddexp takes
        return np.logaddexp(np.log(theta[0]), log_power)


def _start(x: np.ndarray, y: np.ndarray, with_floor: bool) -> np.ndarray:
    """Best (floor, log k, alpha) over a grid of alpha, floor and k solved by linear least squares.

    The floor is clipped only to [0, max y]: the log-space model is defined for any floor >= 0, so a
    floor above some losses is a legitimate fit (noisy points near the floor fall below it), and
    clipping it under the smallest loss would bias alpha low when the points approach the floor.
    All grid points are solved at once (the bootstrap calls this once per replicate)."""
    basis = np.power(x[None, :], -ALPHA_GRID[:, None])
    if with_floor:
        centred = basis - basis.mean(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = centred @ (y - y.mean()) / np.einsum("ij,ij->i", centred, centred)
        floor = np.clip(np.nan_to_num(y.mean() - slope * basis.mean(axis=1)), 0.0, y.max())
    else:
        floor = np.zeros(ALPHA_GRID.size)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        k = np.einsum("ij,ij->i", basis, y[None, :] - floor[:, None]) / np.einsum("ij,ij->i", basis, basis)
        k = np.maximum(np.nan_to_num(k, nan=1e-12), 1e-12)
        err = np.sum((np.log(floor[:, None] + k[:, None] * basis) - np.log(y)) ** 2, axis=1)
    if not np.isfinite(err).any():
        return np.array([0.0, np.log(np.mean(y)), 0.1])
    best = int(np.nanargmin(np.where(np.isfinite(err), err, np.nan)))
    return np.array([floor[best], np.log(k[best]), ALPHA_GRID[best]])


def _solve(x, y, starts, with_floor, loss, f_scale) -> np.ndarray:
    """The lowest-cost robust least-squares solution from each of `starts`.

    The floor's only bound is [0, max y]: at a floor >= every loss each prediction exceeds each loss,
    so lowering the floor lowers every residual and the optimum lies inside; the bound only keeps
    trial steps sensible. More than one start and x_scale=1 because a single start can stall: with
    few points most residuals sit in Huber's linear part, and a bootstrap refit started from the point
    estimate stayed there in 100 of 100 replicates of 4 points (zero-width intervals) where a grid
    start reached a lower cost."""
    from scipy.optimize import least_squares  # imported on use: scipy costs every CLI start 0.2 s

    log_x, log_y = np.log(x), np.log(y)

    def residual(theta):
        return _log_model(theta, log_x, with_floor) - log_y

    lower = np.array([0.0 if with_floor else -np.inf, -np.inf, 0.0])
    upper = np.array([float(y.max()) if with_floor else np.inf, np.inf, 20.0])
    best = None
    for theta0 in starts:
        theta0 = np.clip(theta0, lower + 1e-12, upper - 1e-12)
        solution = least_squares(residual, theta0, loss=loss, f_scale=f_scale, bounds=(lower, upper),
                                 x_scale=1.0, max_nfev=2000)
        if best is None or solution.cost < best.cost:
            best = solution
    return best.x


def check_power_law_points(x: np.ndarray, y: np.ndarray, with_floor: bool, what: str = "points") -> None:
    """Refuse points no power law can be fitted to: too few distinct sizes, or a size or loss not finite and > 0."""
    params = 3 if with_floor else 2
    if np.unique(x).size < params + 1:
        raise InputDataError(
            f"{np.unique(x).size} distinct {what} cannot fit {params} parameters with a residual left; "
            f"give at least {params + 1} (or fit without the floor)", param="x_column")
    for values, name, param in ((x, "sizes", "x_column"), (y, "losses", "y_column")):
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            raise InputDataError(f"{name} must be finite and > 0 to fit a power law; {int(bad.sum())} are not "
                                 f"(e.g. {float(values[bad][0])!r})", param=param)


def log_log_slope(x, y) -> float:
    """Least-squares slope of log y on log x: > 0 when the loss rises with x overall, which no
    L_inf + k x^-alpha with k, alpha > 0 can describe (the fit then pins alpha to a bound, a meaningless
    exponent: 5.0 with k = 1e-12 on a loss growing with log x)."""
    log_x, log_y = np.log(np.asarray(x, dtype=np.float64)), np.log(np.asarray(y, dtype=np.float64))
    centred = log_x - log_x.mean()
    return float(centred @ (log_y - log_y.mean()) / (centred @ centred))


def fit_power_law(x, y, *, with_floor: bool = True, loss: str = "huber", f_scale: float = 0.05,
                  bootstrap: int = 300, confidence: float = 0.95, rng: np.random.Generator | None = None,
                  what: str = "points") -> PowerLaw:
    """Fit y = floor + k x^-alpha (floor = 0 when with_floor is False) to positive x and y."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    check_power_law_points(x, y, with_floor, what)
    theta = _solve(x, y, [_start(x, y, with_floor)], with_floor, loss, f_scale)
    pred = _model(theta, x, with_floor)
    residuals = np.log(y) - np.log(pred)
    total = np.sum((np.log(y) - np.log(y).mean()) ** 2)
    law = PowerLaw(floor=float(theta[0]) if with_floor else 0.0, k=float(np.exp(theta[1])), alpha=float(theta[2]),
                   points=int(x.size), rmse_log=float(np.sqrt(np.mean(residuals ** 2))),
                   r2_log=float(1 - np.sum(residuals ** 2) / total) if total > 0 else float("nan"),
                   confidence=confidence)
    if bootstrap > 0:
        rng = rng or np.random.default_rng(0)
        draws = np.empty((bootstrap, 3))
        centred = residuals - residuals.mean()
        for b in range(bootstrap):
            y_star = pred * np.exp(centred[rng.integers(0, x.size, x.size)])
            draws[b] = _solve(x, y_star, [_start(x, y_star, with_floor), theta], with_floor, loss, f_scale)
        draws[:, 1] = np.exp(draws[:, 1])
        if not with_floor:
            draws[:, 0] = 0.0
        tail = (1 - confidence) / 2
        for i, name in enumerate(("floor", "k", "alpha")):
            law.intervals[name] = (float(np.quantile(draws[:, i], tail)), float(np.quantile(draws[:, i], 1 - tail)))
        law.curves = draws
    return law


@dataclass
class TransferLaw:
    """D_T = k D_F^alpha N^beta with bootstrap intervals."""

    k: float
    alpha: float
    beta: float
    points: int
    rmse_log: float
    confidence: float = 0.95  # the level of the intervals
    replicates: int = 0  # bootstrap resamples kept (those whose design has full rank)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __call__(self, d_f, n) -> np.ndarray:
        return self.k * np.power(d_f, self.alpha) * np.power(n, self.beta)


def effective_data(scratch_d: np.ndarray, scratch_loss: np.ndarray, loss: np.ndarray, law: PowerLaw | None,
                   method: str = "interpolate") -> tuple[np.ndarray, np.ndarray]:
    """From-scratch data needed to reach each `loss`, and whether it was extrapolated past the curve.

    'interpolate' reads the curve piecewise linearly in log-log (Hernandez et al.), after averaging
    repeats and making it monotone; losses outside the measured range fall back on the fitted law.
    'fit' always inverts the fitted law.
    """
    d = np.unique(scratch_d)
    mean_loss = np.array([scratch_loss[scratch_d == v].mean() for v in d])
    mean_loss = np.minimum.accumulate(mean_loss)  # a from-scratch curve cannot get worse with more data
    inside = (loss <= mean_loss[0]) & (loss >= mean_loss[-1])
    fitted = law.inverse(loss) if law is not None else np.full(loss.shape, np.nan)
    if method == "fit":
        return fitted, ~inside
    # np.interp wants increasing x: interpolate log D against -log L.
    read = np.exp(np.interp(-np.log(loss), -np.log(mean_loss), np.log(d)))
    return np.where(inside, read, fitted), ~inside


def fit_transfer_law(d_f, n, d_t, *, bootstrap: int = 500, confidence: float = 0.95,
                     rng: np.random.Generator | None = None) -> TransferLaw:
    """Least squares of log D_T on log D_F and log N; pairs bootstrap for the intervals.

    The design (1, log D_F, log N) must have rank 3, or alpha and beta are not identified and lstsq
    returns one of infinitely many solutions (one D_F at several N gave an invented alpha of 0.315).
    Resamples that repeat points until the rank drops are skipped for the same reason: kept, they
    widened the intervals with arbitrary values."""
    d_f, n, d_t = (np.asarray(v, dtype=np.float64) for v in (d_f, n, d_t))
    if d_t.size < 4:
        raise InputDataError(
            f"{d_t.size} usable (D_F, N) points cannot fit k, alpha and beta with a residual left; need at "
            "least 4 with positive transferred data (more fine-tuning sizes, or a longer from-scratch curve)",
            param="x_column")
    if np.unique(n).size < 2:
        raise InputDataError("the transfer law's beta needs fine-tuned runs at >= 2 model sizes N; got "
                             f"{np.unique(n).size}", param="params_column")
    if np.unique(d_f).size < 2:
        raise InputDataError(
            f"{np.unique(d_f).size} distinct fine-tuning sizes D_F among the usable points: the transfer law's "
            "alpha needs >= 2 (fine-tune on more subsets, or use those with positive transferred data)",
            param="x_column")
    design = np.column_stack([np.ones_like(d_f), np.log(d_f), np.log(n)])
    if np.linalg.matrix_rank(design) < 3:
        raise InputDataError(
            "log D_F and log N are collinear over the usable points, so alpha and beta cannot be told apart; "
            "fine-tune every model size on more than one data size", param="x_column")
    target = np.log(d_t)
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    residuals = target - design @ coef
    law = TransferLaw(k=float(np.exp(coef[0])), alpha=float(coef[1]), beta=float(coef[2]), points=int(d_t.size),
                      rmse_log=float(np.sqrt(np.mean(residuals ** 2))), confidence=confidence)
    if bootstrap > 0:
        rng = rng or np.random.default_rng(0)
        draws = []
        for _ in range(bootstrap):
            pick = rng.integers(0, d_t.size, d_t.size)
            if np.linalg.matrix_rank(design[pick]) < 3:
                continue
            draws.append(np.linalg.lstsq(design[pick], target[pick], rcond=None)[0])
        if not draws:
            raise InputDataError(
                f"none of the {bootstrap} bootstrap resamples of the {d_t.size} usable points identifies alpha "
                "and beta (each repeats points until log D_F and log N are collinear); give more (D_F, N) "
                "points or more replicates, or set bootstrap: 0", param="bootstrap")
        draws = np.array(draws)
        draws[:, 0] = np.exp(draws[:, 0])
        law.replicates = len(draws)
        tail = (1 - confidence) / 2
        for i, name in enumerate(("k", "alpha", "beta")):
            law.intervals[name] = (float(np.quantile(draws[:, i], tail)), float(np.quantile(draws[:, i], 1 - tail)))
    return law
