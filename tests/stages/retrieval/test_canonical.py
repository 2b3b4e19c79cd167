"""stages.retrieval.canonical: a search's answer does not depend on the thread count or the query blocks."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from stages.retrieval import Index


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((5000, 32), dtype=np.float32)
    base[100:110] = base[99]  # ten exact copies: a tie the lower row must win, every time
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    return base, base[:300] + np.float32(0.01)


@pytest.mark.parametrize("kind", ["Flat", "IVF16,Flat", "IVF16,PQ8x4"])
def test_same_scores_and_rows_for_any_thread_count_and_query_block(vectors, kind):
    # FAISS's BLAS product moved scores by ~5e-7 with the threads (Ray runs one) and with the block of queries,
    # which reordered near-ties: `retrieve` wrote other rows on Ray than locally.
    base, queries = vectors
    index = Index.build(base, index_type=kind, seed=0)
    before = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(2)
        scores, rows = index.search_raw(queries, 10)
        faiss.omp_set_num_threads(1)
        one = index.search_raw(queries, 10)
    finally:
        faiss.omp_set_num_threads(before)
    np.testing.assert_array_equal(one[0], scores)
    np.testing.assert_array_equal(one[1], rows)
    for lo, hi in [(0, 7), (37, 80), (250, 300)]:
        part = index.search_raw(queries[lo:hi], 10)
        np.testing.assert_array_equal(part[0], scores[lo:hi])
        np.testing.assert_array_equal(part[1], rows[lo:hi])
    assert rows[99, :5].tolist() == [99, 100, 101, 102, 103]  # copies tie: the lower rows, in order
    assert (np.diff(scores, axis=1) <= 0).all()


def test_scores_are_each_pairs_own_product(vectors):
    base, queries = vectors
    scores, rows = Index.build(base, index_type="Flat").search_raw(queries[:20], 5)
    expected = np.array([[np.float32(base[r] @ q) for r in row] for row, q in zip(rows, queries[:20])])
    np.testing.assert_allclose(scores, expected, rtol=0, atol=2e-6)
