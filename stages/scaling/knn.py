"""Nearest neighbours for the scaling studies: FAISS search, exact distances, duplicate handling.

Intrinsic-dimension estimators read only the sorted distances from each point to its k nearest
*other* points. FAISS finds the neighbours (exact `Flat` up to `EXACT_MAX_POINTS`, HNSW beyond, so a
million points is minutes, not hours); the distances are then recomputed from the vectors directly
(difference first, then norm), because FAISS's ||x||^2 + ||y||^2 - 2xy form loses the small
distances that TwoNN's ratio r2/r1 depends on most.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

# Above this many points an exact search costs n^2 * dim; HNSW keeps it near n log n.
EXACT_MAX_POINTS = 50_000
HNSW_NEIGHBOURS = 32
RECALL_QUERIES = 500


@dataclass
class Neighbours:
    """Sorted distances (float64) and row numbers of each point's k nearest other points."""

    distances: np.ndarray
    ids: np.ndarray
    index: str
    recall: float | None = None  # measured against an exact search when the index is approximate


def _faiss():
    import faiss

    faiss.omp_set_num_threads(max(1, os.cpu_count() or 1))
    return faiss


def unique_rows(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Row numbers of the first copy of each distinct vector (in input order), and how many were repeats."""
    contiguous = np.ascontiguousarray(x)
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


def exact_distances(x: np.ndarray, ids: np.ndarray, rows: int = 1024) -> np.ndarray:
    """||x_i - x_ids[i, j]|| computed from the differences, in float64, a block of rows at a time."""
    out = np.empty(ids.shape, dtype=np.float64)
    for start in range(0, x.shape[0], rows):
        stop = min(start + rows, x.shape[0])
        diff = x[ids[start:stop]] - x[start:stop, None, :]
        out[start:stop] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff, dtype=np.float64))
    return out


def _search(index, x: np.ndarray, k: int, rows: int = 16_384) -> np.ndarray:
    ids = np.empty((x.shape[0], k), dtype=np.int64)
    for start in range(0, x.shape[0], rows):
        _, ids[start:start + rows] = index.search(x[start:start + rows], k)
    return ids


def _recall(x: np.ndarray, found: np.ndarray, k: int, seed: int) -> float:
    """Share of the true k nearest neighbours found, on a sample of queries searched exactly."""
    faiss = _faiss()
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(x.shape[0], size=min(RECALL_QUERIES, x.shape[0]), replace=False))
    exact = faiss.IndexFlatL2(x.shape[1])
    exact.add(x)
    _, truth = exact.search(x[queries], k + 1)
    truth = _drop_self_for(truth, queries, k)
    hits = sum(np.intersect1d(a, b).size for a, b in zip(found[queries], truth))
    return hits / (queries.size * k)


def _drop_self_for(ids: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    keep = ids != rows[:, None]
    keep[keep.all(axis=1), -1] = False
    return ids[keep].reshape(ids.shape[0], k)


def nearest_neighbours(x: np.ndarray, k: int, index: str = "auto", seed: int = 0) -> Neighbours:
    """The k nearest other points of every row of `x` (rows must be distinct), sorted by distance.

    `index`: 'exact' (FAISS Flat), 'hnsw' (FAISS HNSW32, recall measured on a sample), or 'auto'
    (exact up to EXACT_MAX_POINTS points).
    """
    faiss = _faiss()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, dim = x.shape
    kind = index if index != "auto" else ("exact" if n <= EXACT_MAX_POINTS else "hnsw")
    recall = None
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
        recall = _recall(x, ids, k, seed)
    distances = exact_distances(x, ids)
    order = np.argsort(distances, axis=1, kind="stable")
    return Neighbours(np.take_along_axis(distances, order, axis=1), np.take_along_axis(ids, order, axis=1),
                      kind, recall)
