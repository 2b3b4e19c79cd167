"""The LSH shuffle's second round: band pairs cut by row, made distinct per part, merged back in order."""

from __future__ import annotations

import numpy as np
import pytest

from stages.dedup.lsh import unique_pairs
from stages.dedup.shuffle import merge_sorted_pairs, split_by_row


def _band_pairs(rng: np.random.Generator, n: int, bands: int) -> list[np.ndarray]:
    """Pairs as band reducers give them: each band finds some of the same pairs (low < high), in row order."""
    shared = np.sort(rng.integers(0, n, size=(400, 2)), axis=1)
    shared = shared[shared[:, 0] < shared[:, 1]]
    out = []
    for _ in range(bands):
        own = np.sort(rng.integers(0, n, size=(50, 2)), axis=1)
        pairs = np.concatenate([shared[rng.random(len(shared)) < 0.6], own[own[:, 0] < own[:, 1]]])
        out.append(pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))])
    return out


@pytest.mark.parametrize("parts", [1, 2, 4, 8])
def test_distinct_per_part_then_merged_equals_distinct_over_all_bands(parts):
    rng = np.random.default_rng(parts)
    n = 5_000
    bands = _band_pairs(rng, n, 16)
    expected = unique_pairs([b.copy() for b in bands], n)
    assert sum(len(b) for b in bands) > 2 * len(expected)  # most pairs come from several bands
    split = [split_by_row(b, parts) for b in bands]
    results = []
    for k in range(parts):
        share = [s[k] for s in split]
        assert all((p[:, 0] % parts == k).all() for p in share)
        found = [p for p in share if len(p)]
        results.append(unique_pairs(found, max(int(p.max()) for p in found) + 1))
    assert sum(len(r) for r in results) == len(expected)  # what the driver receives: each pair once
    assert np.array_equal(merge_sorted_pairs(results, n), expected)


def test_empty_parts():
    empty = np.empty((0, 2), np.int64)
    assert [len(p) for p in split_by_row(empty, 4)] == [0, 0, 0, 0]
    assert merge_sorted_pairs([empty, empty], 10).shape == (0, 2)
    one = np.array([[1, 2], [1, 5]], np.int64)
    assert np.array_equal(merge_sorted_pairs([empty, one], 10), one)
