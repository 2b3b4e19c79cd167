"""Exact top-k (stages/exact_topk.py): same answer as a full float64 sort, ties by lower row, any block, batch or partition cut."""

from __future__ import annotations

import numpy as np
import pytest

from stages.exact_topk import ExactTopK, top_k_inner_product


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


def _full_sort_l2(queries, base, k):
    diff = queries.astype(np.float64)[:, None, :] - base.astype(np.float64)[None, :, :]
    scores = -(diff * diff).sum(-1).astype(np.float32)
    rows = np.broadcast_to(np.arange(len(base)), scores.shape)
    order = np.lexsort((rows, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def _clustered(seed=1):
    """Off-unit vectors in tight clusters, with duplicates: float32 |q|^2 + |x|^2 - 2 q.x cancels badly here."""
    rng = np.random.default_rng(seed)
    centres = 4.0 * rng.standard_normal((20, 48)).astype(np.float32)
    base = centres[rng.integers(0, 20, 2_000)] + 0.3 * rng.standard_normal((2_000, 48)).astype(np.float32)
    base[1::97] = base[0::97][: len(base[1::97])]
    return base, np.ascontiguousarray(base[::37])


@pytest.mark.parametrize("metric", ["inner_product", "l2"])
def test_streaming_blocks_and_merged_partitions_match_a_full_sort(metric):
    """However the base is cut (blocks, batches, partitions merged either way round), the exact top k."""
    base, queries = _clustered()
    want_scores, want_rows = (_full_sort(queries, base, 10) if metric == "inner_product"
                              else _full_sort_l2(queries, base, 10))
    whole = ExactTopK(queries, 10, metric)
    whole.add(base)
    streamed = ExactTopK(queries, 10, metric)
    for lo in range(0, len(base), 333):
        streamed.add(base[lo:lo + 333], lo, block_rows=50)
    first, second = ExactTopK(queries, 10, metric), ExactTopK(queries, 10, metric)
    first.add(base[:1_111])
    second.add(base[1_111:], 1_111)
    second.merge(first)
    for top in (whole, streamed, second):
        scores, rows = top.result()
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_array_equal(scores, want_scores)
    if metric == "l2":  # each query is a base row: first itself (or its lower copy) at distance exactly 0
        scores, rows = whole.result()
        assert (scores[:, 0] == 0).all() and np.array_equal(base[rows[:, 0]], queries)
        assert (rows[:, 0] <= np.arange(0, 2_000, 37)).all()


def test_fewer_rows_than_k_are_padded_and_unknown_metrics_refused():
    top = ExactTopK(np.eye(4, dtype=np.float32)[:2], 5, "l2")
    top.add(np.eye(4, dtype=np.float32)[:3], 10)
    scores, rows = top.result()
    assert rows.tolist() == [[10, 11, 12, -1, -1], [11, 10, 12, -1, -1]]
    assert scores[0].tolist() == [0, -2, -2, -np.inf, -np.inf]
    with pytest.raises(ValueError, match="metric"):
        ExactTopK(np.eye(2, dtype=np.float32), 1, "cosine")


@pytest.mark.parametrize("order", ["random", "ascending"])
def test_the_running_cut_and_the_block_cut_give_the_full_sort(order, monkeypatch):
    """Blocks after the first are cut by the k-th score kept so far (one comparison); a block that beats most
    of what is kept (base sorted by ascending score) falls back to its own k-th score. Both paths run here."""
    import stages.exact_topk as et

    rng = np.random.default_rng(1)
    queries = (rng.standard_normal(16) + 0.1 * rng.standard_normal((5, 16))).astype(np.float32)  # alike
    base = rng.standard_normal((2000, 16)).astype(np.float32)
    if order == "ascending":
        base = base[np.argsort(base @ queries[0])]
    paths = []
    partition = np.partition
    monkeypatch.setattr(et.np, "partition", lambda *a, **kw: paths.append("block") or partition(*a, **kw))
    top = ExactTopK(queries, 10)
    top.add(base, 0, block_rows=100)
    scores, rows = top.result()
    want_scores, want_rows = _full_sort(queries, base, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    blocks = 20
    if order == "random":
        assert len(paths) < blocks / 2, "later blocks use the running cut"
    else:
        assert len(paths) > blocks / 2, "blocks that beat the kept rows fall back to their own cut"


def test_a_floor_keeps_only_rows_reaching_it_and_the_same_rows_above_it():
    rng = np.random.default_rng(2)
    queries = rng.standard_normal((6, 16)).astype(np.float32)
    base = rng.standard_normal((500, 16)).astype(np.float32)
    want_scores, want_rows = _full_sort(queries, base, 10)
    floor = want_scores[:, 4].copy()  # the 5th best of each query
    floor[0] = -np.inf  # no floor for one query
    scores, rows = top_k_inner_product(queries, base, 10, block_rows=64, floor=floor)
    above = want_scores >= floor[:, None]
    np.testing.assert_array_equal(np.where(above, want_rows, -1), rows)
    assert (rows[1:, 5:] == -1).all() and (rows[0] >= 0).all() and np.isneginf(scores[rows == -1]).all()


@pytest.mark.parametrize("n, k", [(1, 1), (7, 3), (39, 10), (40, 10), (16_384, 10), (1000, 1)])
def test_a_block_cut_is_reached_by_k_rows_and_is_at_most_the_exact_kth(n, k):
    from stages.exact_topk import _block_cut

    rng = np.random.default_rng(n)
    scores = rng.standard_normal((6, n)).astype(np.float32)
    scores[0] = 0.5  # all tied
    scores[1, : n // 2] = scores[1, 0]  # half tied
    cut = _block_cut(scores, k)
    exact_kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]
    assert cut.shape == (6, 1)
    assert (cut <= exact_kth).all()
    assert ((scores >= cut).sum(axis=1) >= k).all()
    if n <= 4 * k:
        np.testing.assert_array_equal(cut, exact_kth)  # one column per group: the exact k-th
