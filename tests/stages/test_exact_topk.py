"""Exact inner-product top-k (stages/exact_topk.py): same answer as a full sort, ties by lower row, any block size."""

from __future__ import annotations

import numpy as np
import pytest

from stages.exact_topk import top_k_inner_product


def _full_sort(queries, base, k):
    scores = (queries.astype(np.float64) @ base.astype(np.float64).T).astype(np.float32)
    rows = np.broadcast_to(np.arange(len(base)), scores.shape)
    order = np.lexsort((rows, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


@pytest.mark.parametrize("block_rows", [1, 7, 64, 10_000])
def test_matches_a_full_sort_with_duplicated_rows_for_any_block(block_rows):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 32)).astype(np.float32)
    base[100:140] = base[5]  # 41 identical rows: ties far beyond k
    base[200:203] = base[250]
    queries = np.concatenate([rng.standard_normal((20, 32)).astype(np.float32), base[[5, 250, 0]]])
    scores, rows = top_k_inner_product(queries, base, 10, block_rows=block_rows)
    want_scores, want_rows = _full_sort(queries, base, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    np.testing.assert_array_equal(scores, top_k_inner_product(queries, base, 10)[0]), "scores do not depend on the cut"
    assert list(rows[20]) == [5, *range(100, 109)], "ties go to the lowest rows"


def test_k_larger_than_the_base_and_empty_inputs():
    base = np.eye(3, dtype=np.float32)
    scores, rows = top_k_inner_product(np.eye(3, dtype=np.float32)[:2], base, 10)
    assert rows.tolist() == [[0, 1, 2], [1, 0, 2]] and scores.tolist() == [[1, 0, 0], [1, 0, 0]]
    assert top_k_inner_product(np.ones((2, 3), np.float32), np.empty((0, 3), np.float32), 5)[1].shape == (2, 0)
    assert top_k_inner_product(np.empty((0, 3), np.float32), base, 5)[0].shape == (0, 3)
