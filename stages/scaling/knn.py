"""Nearest neighbours for the scaling studies: FAISS search, exact distances, duplicate handling.

Intrinsic-dimension estimators read only the sorted distances from each point to its k nearest
*other* points. FAISS finds the neighbours: exact `Flat` up to `EXACT_MAX_POINTS`; beyond that, when
the points lie in a low-dimensional linear subspace (a manifold embedded by a linear map, the case of
the issue's benchmark: all but `PROJECTION_RESIDUAL` of the variance in at most `PROJECTION_MAX_DIM`
principal directions), an IVF search over the projected coordinates with `nprobe` raised until the
recall of an exact search on a sample reaches `TARGET_RECALL` ('projected'); otherwise HNSW over the
full vectors. Distances in the projected space equal the full ones up to the tiny residual, so the
candidates are re-ranked by full distances. Every distance is then recomputed from the vectors
directly (difference first, then norm), because FAISS's ||x||^2 + ||y||^2 - 2xy form loses the small
distances that TwoNN's ratio r2/r1 depends on most.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages._threads import load_faiss

# Above this many points an exact search costs n^2 * dim; HNSW keeps it near n log n.
EXACT_MAX_POINTS = 50_000
HNSW_NEIGHBOURS = 32
RECALL_QUERIES = 500
# 'projected': used when at most this share of the variance lies outside the leading directions.
PROJECTION_RESIDUAL = 1e-4
PROJECTION_MAX_DIM = 64
TARGET_RECALL = 0.999


@dataclass
class Neighbours:
    """Sorted distances (float64) and row numbers of each point's k nearest other points."""

    distances: np.ndarray
    ids: np.ndarray
    index: str
    recall: float | None = None  # measured against an exact search when the index is approximate


def search_matrix(x: np.ndarray) -> np.ndarray:
    """The float32 matrix the neighbour search runs on, with -0.0 made +0.0 (x + 0.0).

    Duplicates must be found on exactly this matrix: rows distinct in float64 but equal after the
    cast, or differing only in the sign of a zero, are at distance 0 in the search (r1 = 0)."""
    return np.ascontiguousarray(x, dtype=np.float32) + np.float32(0.0)


def unique_rows(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Row numbers of the first copy of each distinct vector (in input order), and how many were repeats.

    Rows are compared as the search sees them (`search_matrix`), not in their own dtype."""
    contiguous = search_matrix(x)
    view = contiguous.view(np.dtype((np.void, contiguous.dtype.itemsize * contiguous.shape[1]))).ravel()
    _, first = np.unique(view, return_index=True)
    first.sort()
    return first, int(x.shape[0] - first.size)


def _drop_self(ids: np.ndarray, k: int) -> np.ndarray:
    """From k+1 results per row, drop the row's own id (or the farthest result when self was missed)."""
    n = ids.shape[0]
    keep = ids != np.arange(n)[:, None]
    missed_self = keep.all(axis=1)
    keep[missed_self, -1] = False
    return ids[keep].reshape(n, k)


def exact_distances(x: np.ndarray, ids: np.ndarray, rows: np.ndarray | None = None, block: int = 1024) -> np.ndarray:
    """||x_r - x_ids[i, j]|| for r = rows[i] (default: row i), from the differences, in float64.

    Negative ids (FAISS's "no result") give inf."""
    rows = np.arange(ids.shape[0]) if rows is None else rows
    out = np.empty(ids.shape, dtype=np.float64)
    for start in range(0, ids.shape[0], block):
        stop = min(start + block, ids.shape[0])
        diff = x[np.maximum(ids[start:stop], 0)] - x[rows[start:stop], None, :]
        out[start:stop] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff, dtype=np.float64))
    out[ids < 0] = np.inf
    return out


def _search(index, x: np.ndarray, k: int, rows: int = 16_384) -> np.ndarray:
    ids = np.empty((x.shape[0], k), dtype=np.int64)
    for start in range(0, x.shape[0], rows):
        _, ids[start:start + rows] = index.search(x[start:start + rows], k)
    return ids


def _drop_self_for(ids: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    keep = ids != rows[:, None]
    keep[keep.all(axis=1), -1] = False
    return ids[keep].reshape(ids.shape[0], k)


def principal_projection(x: np.ndarray, sample: int = 20_000, seed: int = 0) -> np.ndarray | None:
    """Coordinates of `x` in its leading principal directions when the rest holds at most
    PROJECTION_RESIDUAL of the variance and there are at most PROJECTION_MAX_DIM of them; else None.

    The directions come from the covariance of a sample of `sample` rows (the cost is then fixed);
    the candidates found in the projection are re-ranked by full distances and the recall is measured,
    so a direction the sample missed costs recall, never correctness of the reported distances."""
    rows = x if x.shape[0] <= sample else x[np.sort(np.random.default_rng(seed).choice(x.shape[0], sample, False))]
    mean = rows.mean(axis=0, dtype=np.float64).astype(np.float32)
    centred = rows - mean
    values, vectors = np.linalg.eigh((centred.T @ centred).astype(np.float64))
    values, vectors = np.clip(values[::-1], 0.0, None), vectors[:, ::-1]
    total = values.sum()
    if total <= 0:
        return None
    outside = 1.0 - np.cumsum(values) / total  # share of the variance beyond the first m + 1 directions
    m = int(np.argmax(outside <= PROJECTION_RESIDUAL)) + 1
    if outside[m - 1] > PROJECTION_RESIDUAL or m > PROJECTION_MAX_DIM or m >= x.shape[1]:
        return None
    return np.ascontiguousarray((x - mean) @ vectors[:, :m].astype(np.float32))


def _rerank(x: np.ndarray, rows: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k candidates of each row nearest by full-vector distance (the row itself excluded), and
    those distances, sorted."""
    distances = exact_distances(x, candidates, rows=rows)
    distances[candidates == rows[:, None]] = np.inf
    best = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(candidates, best, axis=1), np.take_along_axis(distances, best, axis=1)


def _projected_search(x: np.ndarray, projected: np.ndarray, k: int, seed: int) -> tuple[Neighbours, int]:
    """IVF over the projected points, nprobe doubled until a sample's recall reaches TARGET_RECALL."""
    faiss = load_faiss()
    n, m = projected.shape
    lists = int(max(16, min(4 * np.sqrt(n), n // 40)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(m), m, lists)
    index.cp.seed = seed
    index.cp.niter = 10
    index.train(projected)
    index.add(projected)
    width = k + 4  # self + k + a few: projected distances differ from full ones only by the residual
    queries, truth = _exact_sample(x, k, seed)
    nprobe, recall = 8, 0.0
    while True:
        index.nprobe = nprobe
        _, found = index.search(projected[queries], width)
        recall = _overlap(_rerank(x, queries, found, k)[0], truth)
        if recall >= TARGET_RECALL or nprobe >= lists:
            break
        nprobe = min(2 * nprobe, lists)
    ids, distances = np.empty((n, k), dtype=np.int64), np.empty((n, k))
    for start in range(0, n, 16_384):
        rows = np.arange(start, min(start + 16_384, n))
        _, found = index.search(projected[rows], width)
        ids[rows], distances[rows] = _rerank(x, rows, found, k)
    short = np.flatnonzero((ids < 0).any(axis=1))  # probed lists held fewer than k other points
    if short.size:
        exact = faiss.IndexFlatL2(x.shape[1])
        exact.add(x)
        _, found = exact.search(x[short], k + 1)
        ids[short], distances[short] = _rerank(x, short, found, k)
    return Neighbours(distances, ids, f"projected{m}-ivf{lists}-nprobe{nprobe}", recall), nprobe


def _exact_sample(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A sample of query rows and their exact k nearest other rows (FAISS Flat)."""
    faiss = load_faiss()
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(x.shape[0], size=min(RECALL_QUERIES, x.shape[0]), replace=False))
    exact = faiss.IndexFlatL2(x.shape[1])
    exact.add(x)
    _, truth = exact.search(x[queries], k + 1)
    return queries, _drop_self_for(truth, queries, k)


def _overlap(found: np.ndarray, truth: np.ndarray) -> float:
    return sum(np.intersect1d(a, b).size for a, b in zip(found, truth)) / truth.size


def nearest_neighbours(x: np.ndarray, k: int, index: str = "auto", seed: int = 0) -> Neighbours:
    """The k nearest other points of every row of `x` (rows must be distinct), sorted by distance.

    `index`: 'exact' (FAISS Flat), 'hnsw' (FAISS HNSW32), 'projected' (IVF over the principal
    coordinates of low-rank data; falls back to 'hnsw' when the data are not low-rank), or 'auto'
    (exact up to EXACT_MAX_POINTS points, then 'projected'). Approximate searches report the recall
    measured against an exact search on a sample of RECALL_QUERIES points.

    The search runs on x scaled by a power of two (exact in floating point) to a largest |value| in [0.5, 1), and
    the distances are scaled back: FAISS compares squared float32 distances, which overflowed to inf from values
    near 1e19 (d NaN) and underflowed to 0 below about 1e-19 (arbitrary neighbours: d 2.80 for points whose d
    read 3.12 at scale 1), yet intrinsic dimension does not depend on the scale.
    """
    x = search_matrix(x)
    largest = float(np.abs(x).max()) if x.size else 0.0
    exponent = int(np.frexp(largest)[1]) if 0.0 < largest < np.inf else 0
    found = _nearest_neighbours(np.ldexp(x, np.int32(-exponent)).astype(np.float32, copy=False), k, index, seed)
    found.distances = np.ldexp(found.distances, exponent)
    return found


def _nearest_neighbours(x: np.ndarray, k: int, index: str, seed: int) -> Neighbours:
    """`nearest_neighbours` on a float32 matrix whose largest |value| lies in [0.5, 1)."""
    faiss = load_faiss()
    n, dim = x.shape
    kind = index if index != "auto" else ("exact" if n <= EXACT_MAX_POINTS else "projected")
    recall = None
    if kind == "projected":
        projected = principal_projection(x, seed=seed) if n > k + 4 else None
        if projected is not None:
            return _projected_search(x, projected, k, seed)[0]
        kind = "hnsw"
    if kind == "exact":
        searcher = faiss.IndexFlatL2(dim)
        searcher.add(x)
    else:
        searcher = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS)
        searcher.hnsw.efConstruction = 64
        searcher.add(x)
        searcher.hnsw.efSearch = max(64, 4 * (k + 1))
    ids = _drop_self(_search(searcher, x, k + 1), k)
    if kind != "exact":
        queries, truth = _exact_sample(x, k, seed)
        recall = _overlap(ids[queries], truth)
    return _sorted(x, ids, kind, recall)


def _sorted(x: np.ndarray, ids: np.ndarray, kind: str, recall: float | None) -> Neighbours:
    distances = exact_distances(x, ids)
    order = np.argsort(distances, axis=1, kind="stable")
    return Neighbours(np.take_along_axis(distances, order, axis=1), np.take_along_axis(ids, order, axis=1),
                      kind, recall)
