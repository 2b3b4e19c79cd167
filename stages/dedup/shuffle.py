"""The LSH shuffle: every row's band keys grouped by band, buckets of equal keys become candidate pairs.

Map side (`band_parts`, in each partition's map task): a partition's (rows, bands) key matrix is cut
into one key column per band. Reduce side (`band_pairs`, one reducer per band): the band's columns
of the reference and of every partition, in input order, are one column over all rows, sorted
(`lsh.bucket_stars`) so that each bucket's members pair with its first row. A pair that several bands
find comes out of several reducers, so `dedup_minhash` sends the reducers' pairs on to a second round by
pair (`split_by_row`), whose reducers make them distinct (`lsh.unique_pairs`); the driver merges their
sorted, disjoint results (`merge_sorted_pairs`).

This is the partitioned stage contract's shuffle (`pipeline.partitioned`): on the Ray executor a
band's columns go from the map tasks' workers to its reducer's through the object store, and the
driver gets only candidate pairs; locally the same functions run band after band. Either way the
pairs are the same, in the same order.
"""

from __future__ import annotations

import numpy as np

from stages.dedup.lsh import bucket_stars


def band_parts(keys: np.ndarray, ranges: int = 1, first_row: int = 0) -> list:
    """Each reducer's share of an (n, columns) key matrix whose rows are rows `first_row`... of the input.

    With one range, a reducer per column gets the column itself (its rows are implied: they arrive in row
    order). With `ranges` (a power of two) > 1, the column's keys are cut by their top bits: reducer
    `column * ranges + r` gets (rows, keys) of the keys in range r. Equal keys always share a range, so a
    range's buckets are the column's buckets, and a reducer holds 1/ranges of the column (16 bytes a row).
    """
    if ranges == 1:
        return [np.ascontiguousarray(keys[:, b]) for b in range(keys.shape[1])]
    rows = first_row + np.arange(keys.shape[0], dtype=np.int64)
    shift = np.uint64(64 - (ranges.bit_length() - 1))
    parts = []
    for b in range(keys.shape[1]):
        column = keys[:, b]
        parts.extend((rows[at], column[at]) for at in _positions_by_bucket((column >> shift).astype(np.int64), ranges))
    return parts


def _positions_by_bucket(which: np.ndarray, buckets: int) -> list[np.ndarray]:
    """For each bucket 0..buckets-1, the positions i with which[i] == bucket, increasing (a stable sort)."""
    order = np.argsort(which, kind="stable")
    cuts = np.searchsorted(which[order], np.arange(buckets + 1))
    return [order[lo:hi] for lo, hi in zip(cuts[:-1], cuts[1:])]


def band_pairs(parts: list) -> np.ndarray:
    """(m, 2) pairs (first row of the bucket, other member) of one reducer's parts, in row order: key columns,
    or (rows, keys) of a key range (`band_parts`)."""
    if parts and isinstance(parts[0], tuple):
        parts = [p for p in parts if p[0].size]
        if not parts:
            return np.empty((0, 2), np.int64)
        rows = np.concatenate([p[0] for p in parts])  # increasing: parts arrive in input order
        return rows[bucket_stars(np.concatenate([p[1] for p in parts]))]
    columns = [c for c in parts if c.size]
    if not columns:
        return np.empty((0, 2), np.int64)
    return bucket_stars(np.concatenate(columns) if len(columns) > 1 else columns[0])


def split_by_row(pairs: np.ndarray, parts: int) -> list[np.ndarray]:
    """(m, 2) pairs cut into `parts` by their first row's residue (the second round's buckets), in order within
    each: every copy of a pair lands in the same part."""
    if parts == 1:
        return [pairs]
    return [pairs[at] for at in _positions_by_bucket(pairs[:, 0] % parts, parts)]


def merge_sorted_pairs(parts: list[np.ndarray], n: int) -> np.ndarray:
    """One (m, 2) array sorted by (low, high) row of parts that are each sorted and distinct and share no pair
    (the second round's results); `n` bounds the rows."""
    parts = [p for p in parts if len(p)]
    if len(parts) <= 1:
        return parts[0] if parts else np.empty((0, 2), np.int64)
    codes = np.concatenate([p[:, 0] * np.int64(n) + p[:, 1] for p in parts])
    codes.sort()
    return np.stack([codes // n, codes % n], axis=1)
