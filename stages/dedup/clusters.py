"""From duplicate pairs to clusters, the row each cluster keeps, and the stats every dedup stage records.

Rows are numbered over the concatenation reference + data (reference rows first, none when there
is no reference). Pairs found by any method (equal hash, LSH and verification, cosine) become
edges; connected components (union-find, here scipy's) are the clusters. Each cluster keeps one
row by a priority that puts reference rows first (a `reference` is never reduced, only used to
remove from `data`) and then applies the stage's keep policy, with the row position as the final
tie-break so the result never depends on sort stability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


@dataclass
class Resolution:
    """Per row (reference + data): its cluster, the row its cluster keeps, and whether it is removed."""

    cluster: np.ndarray  # int64: the lowest row position in the row's cluster (its own position if alone)
    kept: np.ndarray  # int64: position of the row kept for the row's cluster
    size: np.ndarray  # int64: size of the row's cluster
    n_reference: int
    # False: only data rows whose cluster keeps a reference row are removed (decontamination alone).
    within_data: bool = True

    @property
    def removed(self) -> np.ndarray:
        """Data rows (not reference rows) whose cluster keeps another row."""
        out = self.kept != np.arange(self.kept.size)
        out[: self.n_reference] = False
        if not self.within_data:
            out &= self.kept < self.n_reference
        return out


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Cluster label of each of `n` rows: the lowest row position of its connected component."""
    if n == 0:
        return np.empty(0, np.int64)
    if len(pairs) == 0:
        return np.arange(n, dtype=np.int64)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    lowest = np.full(labels.max() + 1, n, np.int64)
    np.minimum.at(lowest, labels, np.arange(n, dtype=np.int64))
    return lowest[labels]


def keep_rank(n_reference: int, n: int, priority: list[np.ndarray]) -> np.ndarray:
    """Each row's rank in keep order (0 = kept first): reference rows, then `priority`, then position.

    `priority` holds sort keys over all rows, most significant first; lower sorts first.
    """
    position = np.arange(n, dtype=np.int64)
    is_data = (position >= n_reference).astype(np.int8)
    # np.lexsort sorts by the last key first.
    order = np.lexsort((position, *reversed(priority), is_data))
    rank = np.empty(n, np.int64)
    rank[order] = position
    return rank


def resolve(n_reference: int, n_data: int, pairs: np.ndarray, priority: list[np.ndarray],
            within_data: bool = True) -> Resolution:
    """Cluster rows joined by `pairs` and keep, per cluster, the row first in `keep_rank` order."""
    n = n_reference + n_data
    cluster = components(n, pairs)
    order = np.lexsort((keep_rank(n_reference, n, priority), cluster))
    first = np.ones(n, bool)
    first[1:] = cluster[order][1:] != cluster[order][:-1]
    kept_of_cluster = np.empty(n, np.int64)
    kept_of_cluster[cluster[order][first]] = order[first]
    size = np.bincount(cluster, minlength=n)
    return Resolution(cluster=cluster, kept=kept_of_cluster[cluster], size=size[cluster], n_reference=n_reference,
                      within_data=within_data)


def size_histogram(resolution: Resolution) -> dict[str, int]:
    """Clusters of two or more rows by size, in power-of-two bins ('2', '3-4', '5-8', ...)."""
    labels, first = np.unique(resolution.cluster, return_index=True)
    sizes = resolution.size[first]
    sizes = sizes[sizes >= 2]
    histogram: dict[str, int] = {}
    lo = 2
    while sizes.size and lo <= sizes.max():
        hi = 2 if lo == 2 else lo * 2 - 2
        label = str(lo) if lo == hi else f"{lo}-{hi}"
        count = int(((sizes >= lo) & (sizes <= hi)).sum())
        if count:
            histogram[label] = count
        lo = hi + 1
    return histogram


def summary(resolution: Resolution) -> dict:
    """Figures every dedup step records: rows in, kept, removed, duplicate rate, cluster sizes."""
    n_data = resolution.kept.size - resolution.n_reference
    removed = int(resolution.removed.sum())
    data_clusters = resolution.cluster[resolution.n_reference:]
    in_clusters = resolution.size[resolution.n_reference:] >= 2
    stats = {
        "rows_in": n_data,
        "rows_kept": n_data - removed,
        "rows_removed": removed,
        "duplicate_rate": round(removed / n_data, 6) if n_data else 0.0,
        "clusters": int(np.unique(data_clusters[in_clusters]).size),
        "rows_in_clusters": int(in_clusters.sum()),
        "cluster_size_histogram": size_histogram(resolution),
    }
    if resolution.n_reference:
        stats["reference_rows"] = resolution.n_reference
        stats["removed_as_reference_duplicates"] = int(
            (resolution.removed & (resolution.kept < resolution.n_reference)).sum())
    return stats
