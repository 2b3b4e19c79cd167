"""Intrinsic dimension: accuracy on manifolds of known d, agreement with scikit-dimension, speed.

Manifolds (20,000 points each at full scale), all randomly rotated into 384 dimensions:
- a uniform d-ball;
- a d-dimensional Swiss roll: (t cos t, t sin t) for t in [1.5 pi, 4.5 pi], times d - 1 uniform
  coordinates in [0, 21] (the classic roll's height), a curved manifold of dimension d in d + 1 dims.
Ours: `intrinsic_dimension` (TwoNN 'linear' with 10% discarded, MLE with k = 10 and the
MacKay-Ghahramani average). Baseline: scikit-dimension's TwoNN() and MLE() (n_neighbors = 10,
comb = 'mle': the same estimators). scikit-dimension's TwoNN sorts whole rows of the distance matrix
for inputs wider than 25 columns (84 s at 20,000 points, hours at 100,000), so for the agreement
check it gets the same points before the rotation (pairwise distances are the same); one case also
runs it on the rotated 384-d points. Speed: 20,000 and 100,000 points of a 10-ball in 384-d, each
side in a fresh process, alternated: ours (TwoNN + MLE; exact search at 20,000, the 'projected' IVF
search at 100,000, neighbour recall measured) against scikit-dimension's MLE alone (its kNN-based
estimator; its TwoNN would add the full sort). The 100,000-point speed-up comes from the points lying
in a 10-d linear subspace of the 384 dimensions (see stages/scaling/knn.py); full-rank data take the
HNSW path, which the previous measurement put at 3.4x.

    python -m bench.bench_scaling          # full (28 minutes on 2 cores at load average 6)
    python -m bench.bench_scaling quick    # 3,000 points, d in {2, 5}
    python -m bench.bench_scaling speed    # the timings only
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from bench.common import in_fresh_process, print_rows

AMBIENT = 384
K = 10
SCALES = {
    "full": {"points": 20_000, "dims": [2, 5, 10, 20], "speed_points": [20_000, 100_000],
             "speed_repeats": [(3, 3), (3, 1)]},
    "quick": {"points": 3_000, "dims": [2, 5], "speed_points": [3_000], "speed_repeats": [(1, 1)]},
    # only the side-by-side timings (about 30 minutes on the shared 2-core machine)
    "speed": {"points": 0, "dims": [], "speed_points": [20_000, 100_000], "speed_repeats": [(3, 3), (3, 1)]},
}


def ball(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    g = rng.standard_normal((n, d))
    return g * (rng.random((n, 1)) ** (1.0 / d)) / np.linalg.norm(g, axis=1, keepdims=True)


def swiss_roll(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(1.5 * np.pi, 4.5 * np.pi, n)
    return np.column_stack([t * np.cos(t), t * np.sin(t), rng.uniform(0.0, 21.0, (n, d - 1))])


def rotate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Embed in AMBIENT dimensions by a random orthonormal map (distances unchanged)."""
    basis, _ = np.linalg.qr(rng.standard_normal((AMBIENT, x.shape[1])))
    return np.ascontiguousarray((x @ basis.T).astype(np.float32))


def make(kind: str, n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    low = ball(n, d, rng) if kind == "ball" else swiss_roll(n, d, rng)
    return low.astype(np.float32), rotate(low, rng)


def ours(x: np.ndarray) -> dict:
    import polars as pl

    from stages.embedding import vectors_to_series
    from stages.scaling.intrinsic_dimension import IntrinsicDimension

    table = pl.DataFrame({"id": np.arange(x.shape[0])}).with_columns(vectors_to_series("embedding", x))
    out = IntrinsicDimension(k=K, bootstrap=0, scales=[], plot=False).apply(table)
    result = {r["estimator"]: r["dimension"] for r in out.iter_rows(named=True)}
    result["index"] = out["index"][0]
    result["recall"] = out["knn_recall"][0]
    return result


def theirs(x: np.ndarray, estimators: tuple[str, ...] = ("twonn", "mle")) -> dict:
    import skdim

    warnings.filterwarnings("ignore")
    result = {}
    if "twonn" in estimators:
        result["twonn"] = float(skdim.id.TwoNN().fit(x).dimension_)
    if "mle" in estimators:
        result["mle"] = float(skdim.id.MLE().fit(x, n_neighbors=K).dimension_)
    return result


def _speed_case(n: int, seed: int = 7) -> tuple[np.ndarray, str]:
    _, x = make("ball", n, 10, seed)
    return x, f"{n:,} points of a 10-ball in {AMBIENT}-d"


def time_ours(n: int) -> dict:
    return ours(_speed_case(n)[0])


def time_theirs(n: int, estimators: tuple[str, ...]) -> dict:
    return theirs(_speed_case(n)[0], estimators)


def accuracy_rows(cfg: dict) -> list[dict]:
    rows = []
    for kind in ("ball", "swiss_roll"):
        for d in cfg["dims"]:
            low, x = make(kind, cfg["points"], d, seed=d)
            mine, base = ours(x), theirs(low)
            target = 0.10 if d <= 10 else 0.20
            for name, label in (("twonn", "TwoNN"), ("mle", f"MLE k={K}")):
                error = mine[name] / d - 1
                rows.append({
                    "benchmark": "scaling", "case": f"{label}, {kind} d={d}, {cfg['points']:,} pts in {AMBIENT}-d",
                    "metric": "estimated d", "value": round(mine[name], 3),
                    "baseline": "scikit-dimension, same points (before rotation)",
                    "baseline_value": round(base[name], 3), "ratio": round(mine[name] / base[name], 4),
                    "ratio_meaning": "ours / scikit-dimension estimate (target within 5%)",
                    "notes": f"true d={d}: error {error:+.1%} (target {target:.0%}: "
                             f"{'met' if abs(error) <= target else 'MISSED'})",
                })
    low, x = make("ball", cfg["points"], cfg["dims"][-1] if len(cfg["dims"]) < 3 else 10, seed=99)
    mine, base = ours(x), theirs(x)
    for name in ("twonn", "mle"):
        rows.append({
            "benchmark": "scaling", "case": f"{name}, ball in {AMBIENT}-d as given to both (rotated)",
            "metric": "estimated d", "value": round(mine[name], 4), "baseline": "scikit-dimension, same 384-d points",
            "baseline_value": round(base[name], 4), "ratio": round(mine[name] / base[name], 6),
            "ratio_meaning": "ours / scikit-dimension estimate", "notes": "identical neighbours, same formula",
        })
    return rows


def speed_rows(cfg: dict) -> list[dict]:
    """Each side in a fresh process, alternated (ours, theirs, ours, ...); medians, spreads, ratio of medians."""
    rows = []
    preload = ("faiss", "polars", "stages.scaling.intrinsic_dimension", "skdim", "sklearn.neighbors")
    for n, (ours_runs, their_runs) in zip(cfg["speed_points"], cfg["speed_repeats"]):
        mine_walls, their_walls, mine, base = [], [], None, None
        for i in range(max(ours_runs, their_runs)):
            if i < ours_runs:
                wall, peak, mine = in_fresh_process(time_ours, n, preload=preload)
                mine_walls.append(wall)
            if i < their_runs:
                base_wall, base_peak, base = in_fresh_process(time_theirs, n, ("mle",), preload=preload)
                their_walls.append(base_wall)
        ours_median, their_median = float(np.median(mine_walls)), float(np.median(their_walls))
        recall = f", neighbour recall {mine['recall']:.4f}" if mine["recall"] is not None else ""
        rows.append({
            "benchmark": "scaling", "case": f"TwoNN + MLE, {_speed_case(n)[1]}",
            "metric": f"s (median of {ours_runs} / {their_runs}, fresh processes, alternated)",
            "value": round(ours_median, 2), "baseline": "scikit-dimension MLE(n_neighbors=10) alone",
            "baseline_value": round(their_median, 2), "ratio": round(their_median / ours_median, 2),
            "ratio_meaning": "speed-up: scikit-dimension median time / our median time (target >= 10 at 100,000)",
            "ours_s": [round(w, 1) for w in mine_walls], "theirs_s": [round(w, 1) for w in their_walls],
            "notes": f"ours: {mine['index']} search{recall}; d: ours MLE {mine['mle']:.4f} vs theirs "
                     f"{base['mle']:.4f} (ratio {mine['mle'] / base['mle']:.5f}); ours also ran TwoNN "
                     f"({mine['twonn']:.3f}); runs ours {[round(w, 1) for w in mine_walls]} s, theirs "
                     f"{[round(w, 1) for w in their_walls]} s; shared machine, noisy",
        })
    return rows


def run(scale: str = "full") -> list[dict]:
    cfg = SCALES[scale]
    return (accuracy_rows(cfg) if cfg["dims"] else []) + speed_rows(cfg)


if __name__ == "__main__":
    print_rows(run(sys.argv[1] if len(sys.argv) > 1 else "full"))
