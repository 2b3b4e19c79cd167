"""Intrinsic-dimension estimators over sorted nearest-neighbour distances (pure NumPy/SciPy).

- TwoNN (Facco et al. 2017): mu = r2/r1 follows a Pareto law with shape d. 'linear' fits the line
  through (log mu, -log(1 - F(mu))) after discarding the largest 10% of ratios, as the paper does;
  'mle' is the closed-form censored maximum-likelihood estimate.
- MLE (Levina and Bickel 2005): the local estimate at x is (k-1) / sum_{j<k} log(T_k/T_j); the global
  estimate averages the *inverses* of the local ones (MacKay and Ghahramani's correction: averaging
  the local estimates themselves is biased upwards).
- GRIDE (Denti et al. 2022): the likelihood of mu = r_{2n}/r_n, which generalises TwoNN to larger
  neighbourhoods, so the estimate can be followed as the scale grows (noise shows at small scales,
  curvature at large ones).

Confidence intervals are percentile bootstraps over points, conditional on the neighbour graph
(neighbouring points share neighbours, so the true uncertainty is somewhat wider).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def twonn_ratios(distances: np.ndarray) -> np.ndarray:
    """mu = r2 / r1 for every point, from its sorted neighbour distances."""
    return distances[:, 1] / distances[:, 0]


def twonn(mu: np.ndarray, method: str = "linear", discard_fraction: float = 0.1) -> float:
    """The TwoNN estimate from the ratios mu (all > 1)."""
    return twonn_statistic(mu.size, method, discard_fraction)(np.sort(np.log(mu)))


def twonn_statistic(n: int, method: str, discard_fraction: float) -> Callable[[np.ndarray], float]:
    """TwoNN as a function of the n sorted log ratios, with everything that depends only on n computed
    once (the bootstrap calls it once per replicate)."""
    kept = max(2, int(n * (1.0 - discard_fraction)))
    if method == "mle":
        # log mu ~ Exponential(d); keeping the smallest `kept` ratios is type-II censoring.
        return lambda log_mu: float((kept - 1) / (log_mu[:kept].sum() + (n - kept) * log_mu[kept - 1]))
    # Least-squares line through the origin of -log(1 - F_emp) against log mu.
    y = -np.log1p(-np.arange(1, kept + 1) / n)

    def linear(log_mu: np.ndarray) -> float:
        # einsum, not np.dot: a BLAS call per replicate spins its threads on a busy machine (50x slower).
        x = log_mu[:kept]
        return float(np.einsum("i,i->", x, y) / np.einsum("i,i->", x, x))

    return linear


def mle_local(distances: np.ndarray, k: int) -> np.ndarray:
    """Levina-Bickel local estimates from the first k neighbour distances of each point.

    Infinite where all k distances tie (lattice data such as 0-16 pixel values): the inverse is then 0,
    which is what the MacKay-Ghahramani average uses, so the global estimate stays defined.
    """
    logs = np.log(distances[:, :k])
    with np.errstate(divide="ignore"):
        return (k - 1) / ((k - 1) * logs[:, k - 1] - logs[:, : k - 1].sum(axis=1))


def mle_global(local: np.ndarray) -> float:
    """MacKay-Ghahramani: the inverse of the mean inverse local estimate."""
    return float(1.0 / np.mean(1.0 / local))


def gride_ratios(distances: np.ndarray, n1: int) -> np.ndarray:
    """mu = r_{2 n1} / r_{n1} for every point."""
    return distances[:, 2 * n1 - 1] / distances[:, n1 - 1]


def gride(mu: np.ndarray, n1: int) -> float:
    """Maximum-likelihood dimension from the ratios r_{n2}/r_{n1} with n2 = 2 n1 (Denti et al. 2022)."""
    from scipy.optimize import minimize_scalar  # imported on use: scipy costs every CLI start 0.2 s
    from scipy.special import betaln

    n2 = 2 * n1
    log_mu = np.log(mu)
    total = log_mu.sum()
    count = mu.size

    def negative_log_likelihood(log_d: float) -> float:
        d = np.exp(log_d)
        # log(mu^d - 1) = d log mu + log(1 - mu^-d), stable for large d log mu.
        shape_term = (n2 - n1 - 1) * (d * total + np.log(-np.expm1(-d * log_mu)).sum()) if n2 - n1 > 1 else 0.0
        ll = count * np.log(d) + shape_term - ((n2 - 1) * d + 1) * total - count * betaln(n2 - n1, n1)
        return -ll

    best = minimize_scalar(negative_log_likelihood, bounds=(np.log(0.05), np.log(5000.0)), method="bounded",
                           options={"xatol": 1e-8})
    return float(np.exp(best.x))


# Bootstrap replicates a scaling stage takes at most: intervals settle long before; 10^12 was a MemoryError.
MAX_BOOTSTRAP = 100_000


def bootstrap_interval(values: np.ndarray, statistic: Callable[[np.ndarray], float], replicates: int,
                       confidence: float, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over resampled `values` (NaNs when replicates is 0).

    Each replicate repeats every value as often as it was drawn, in the order of `values`: the
    per-point values are computed once (never the neighbour search again), and a sorted `values`
    gives sorted replicates, so TwoNN's fit needs no sort per replicate."""
    if replicates <= 0:
        return float("nan"), float("nan")
    draws = np.empty(replicates)
    n = values.size
    for b in range(replicates):
        draws[b] = statistic(np.repeat(values, np.bincount(rng.integers(0, n, n), minlength=n)))
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(draws, tail)), float(np.quantile(draws, 1.0 - tail))


def estimate(name: str, distances: np.ndarray, *, k: int, n1: int, twonn_method: str,
             discard_fraction: float) -> tuple[float, np.ndarray, Callable[[np.ndarray], float]]:
    """(estimate, per-point values, statistic over those values) for one estimator, for bootstrapping."""
    if name == "twonn":
        log_mu = np.sort(np.log(twonn_ratios(distances)))
        statistic = twonn_statistic(log_mu.size, twonn_method, discard_fraction)
        return statistic(log_mu), log_mu, statistic
    if name == "mle":
        local = mle_local(distances, k)
        return mle_global(local), 1.0 / local, lambda v: float(1.0 / np.mean(v))
    if name == "gride":
        mu = gride_ratios(distances, n1)
        return gride(mu, n1), mu, lambda v: gride(v, n1)
    raise ValueError(f"unknown estimator {name!r}")


def scale_curve(distances: np.ndarray, scales: list[int]) -> list[dict]:
    """MLE with k = 2s neighbours and GRIDE with n1 = s (n2 = 2s) for each scale s, at the same radius."""
    rows = []
    for s in scales:
        k = 2 * s
        if k > distances.shape[1]:
            continue
        radius = float(np.median(distances[:, k - 1]))
        rows.append({"estimator": "mle", "neighbours": k, "radius": radius,
                     "dimension": mle_global(mle_local(distances, k))})
        rows.append({"estimator": "gride", "neighbours": k, "radius": radius,
                     "dimension": gride(gride_ratios(distances, s), s)})
    return rows
