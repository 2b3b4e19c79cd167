"""The LSH shuffle: every row's band keys grouped by band, buckets of equal keys become candidate pairs.

Map side (`band_parts`, in each partition's map task): a partition's (rows, bands) key matrix is cut
into one key column per band. Reduce side (`band_pairs`, one reducer per band): the band's columns
of the reference and of every partition, in input order, are one column over all rows, sorted
(`lsh.bucket_stars`) so that each bucket's members pair with its first row. The reducers' pairs are
then made distinct (`lsh.unique_pairs`, in `finish`).

This is the partitioned stage contract's shuffle (`pipeline.partitioned`): on the Ray executor a
band's columns go from the map tasks' workers to its reducer's through the object store, and the
driver gets only candidate pairs; locally the same functions run band after band. Either way the
pairs are the same, in the same order.
"""

from __future__ import annotations

import numpy as np

from stages.dedup.lsh import bucket_stars


def band_parts(keys: np.ndarray) -> list[np.ndarray]:
    """One contiguous key column per band of an (n, bands) key matrix (each reducer's share)."""
    return [np.ascontiguousarray(keys[:, b]) for b in range(keys.shape[1])]


def band_pairs(columns: list[np.ndarray]) -> np.ndarray:
    """(m, 2) pairs (first row of the bucket, other member) of one band, its columns in row order."""
    columns = [c for c in columns if c.size]
    if not columns:
        return np.empty((0, 2), np.int64)
    return bucket_stars(np.concatenate(columns) if len(columns) > 1 else columns[0])

