"""stages._vectors: the vector-column reader's refusals and unit rows."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.errors import InputDataError
from stages._vectors import unit_rows, vector_matrix


def test_vector_matrix_reads_lists_and_refuses_ragged_and_null_columns():
    good = pl.Series("v", [[1.0, 2.0], [3.0, 4.0]])
    assert vector_matrix(good, dtype=np.float32).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(InputDataError, match="different lengths"):
        vector_matrix(pl.Series("v", [[1.0, 2.0], [3.0]]))
    with pytest.raises(InputDataError, match="null rows"):
        vector_matrix(pl.Series("v", [[1.0, 2.0], None]))
    with pytest.raises(InputDataError, match="not numeric vectors"):
        vector_matrix(pl.Series("v", ["a", "b"]))


def test_unit_rows_scales_every_nonzero_row_and_leaves_zero_rows_zero():
    vectors = np.array([[3.0, 4.0], [0.0, 0.0], [1e-15, 0.0], [-2.0, 0.0]])
    unit = unit_rows(vectors)
    assert unit.dtype == np.float32
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], rtol=1e-6)
    assert unit_rows(vectors, np.float64).dtype == np.float64


def test_unit_rows_gives_a_row_the_same_bits_in_any_batch():
    rows = np.random.default_rng(3).standard_normal((500, 384)).astype(np.float32) * 7
    whole = unit_rows(rows)
    for size in (1, 7, 333):
        parts = np.concatenate([unit_rows(rows[lo:lo + size]) for lo in range(0, len(rows), size)])
        assert parts.tobytes() == whole.tobytes()
