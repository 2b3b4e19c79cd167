"""A FAISS search whose answer does not depend on the thread count or on which queries are searched together.

FAISS scores a block of queries with one BLAS product, and the product's last bits depend on the block's
size and the threads (up to 5e-7 on unit vectors): a query's scores, and among near-ties its neighbours,
moved with the machine's core count (Ray sets one OpenMP thread, so `retrieve` wrote other rows there than
locally) and with how the queries were cut into partitions. So FAISS only proposes candidates, twice as
many as asked for, and each (query, candidate) pair is scored again on its own: the candidate's stored
vector (`reconstruct`: exact for Flat, the decoded codes for PQ and SQ, what the index itself scores) against
the query, summed along one row, which no other row changes. Ties are broken by the lower FAISS row. An
index type that cannot give back its vectors keeps FAISS's scores (`rescored` says which).
"""

from __future__ import annotations

import numpy as np

# Queries re-scored at a time: their candidates' vectors are held (queries x candidates x dim floats).
QUERY_BLOCK = 512


def can_rescore(index) -> bool:
    """Whether the index gives back stored vectors (IVF indexes after `make_direct_map`)."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
        try:
            ivf.make_direct_map()
        except RuntimeError:
            return False
    try:
        index.reconstruct_batch(np.zeros(1, np.int64)) if index.ntotal else None
    except RuntimeError:
        return False
    return True


def canonical_search(index, vectors: np.ndarray, k: int, metric: str, rescore: bool) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of the `k` best rows per query, larger-is-better (L2 as -squared distance), -1 past the end."""
    k = min(k, index.ntotal)
    wide = min(index.ntotal, 2 * k) if rescore else k
    scores, rows = index.search(vectors, wide)
    if metric == "l2":
        scores = -scores
    if not rescore or k == 0:
        return scores, rows
    out_scores = np.empty((len(vectors), k), np.float32)
    out_rows = np.empty((len(vectors), k), np.int64)
    for lo in range(0, len(vectors), QUERY_BLOCK):
        block = slice(lo, lo + QUERY_BLOCK)
        out_scores[block], out_rows[block] = _rescore(index, vectors[block], rows[block], k, metric)
    return out_scores, out_rows


def _rescore(index, queries: np.ndarray, rows: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    found = rows >= 0
    stored = index.reconstruct_batch(np.where(found, rows, 0).reshape(-1)).reshape(*rows.shape, -1)
    if metric == "l2":
        score = -np.square(stored - queries[:, None, :]).sum(axis=2, dtype=np.float32)
    else:
        score = (stored * queries[:, None, :]).sum(axis=2, dtype=np.float32)
    score = np.where(found, score, -np.inf).astype(np.float32)
    # Best score first, then the lower row; rows FAISS did not fill (-1) last.
    order = np.lexsort((np.where(found, rows, np.iinfo(np.int64).max), -score), axis=1)[:, :k]
    return np.take_along_axis(score, order, axis=1), np.take_along_axis(rows, order, axis=1)
