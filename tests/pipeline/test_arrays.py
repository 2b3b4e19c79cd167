"""Distinct values by sorting: NumPy's results, for every dtype and shape the stages pass."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.arrays import unique_inverse, unique_sorted


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint64, np.uint8, np.float64])
def test_same_as_numpy_unique(dtype):
    rng = np.random.default_rng(3)
    for size, high in [(0, 1), (1, 5), (2, 2), (1000, 10), (5000, 10**9 if dtype != np.uint8 else 250)]:
        values = rng.integers(0, high, size=(size // 2, 2) if size > 1 else size).astype(dtype)
        assert np.array_equal(unique_sorted(values), np.unique(values))
        distinct, inverse = unique_inverse(values)
        want, want_inverse = np.unique(values, return_inverse=True)
        assert np.array_equal(distinct, want) and distinct.dtype == want.dtype
        assert inverse.shape == (values.size,) and np.array_equal(inverse, want_inverse.reshape(-1))
        assert np.array_equal(distinct[inverse], values.reshape(-1))


def test_values_too_wide_to_pack_with_their_positions_fall_back_to_numpy():
    values = np.array([2**62, -5, 7, 2**62, 7], np.int64)  # a negative value and one of 63 bits
    distinct, inverse = unique_inverse(values)
    assert distinct.tolist() == [-5, 7, 2**62] and inverse.tolist() == [2, 0, 1, 2, 1]
    for high in (2**60, 2**61):  # with 2 position bits: 63 bits, packed; 64 bits, NumPy's
        distinct, inverse = unique_inverse(np.array([high, 3, high], np.int64))
        assert distinct.tolist() == [3, high] and inverse.tolist() == [1, 0, 1]
