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


def test_vector_matrix_refuses_non_finite_values_only_when_asked():
    nan = pl.Series("v", [[1.0, float("nan")], [3.0, 4.0], [float("inf"), 0.0]])
    with pytest.raises(InputDataError, match="NaN or infinite values in 2 vector") as err:
        vector_matrix(nan, "feature_column", finite=True, file="in.parquet")
    assert err.value.param == "feature_column" and err.value.file == "in.parquet"
    assert np.isnan(vector_matrix(nan)[0, 1])  # a caller that checks itself (intrinsic_dimension) still reads it
    with pytest.raises(InputDataError, match="NaN"):
        vector_matrix(pl.Series("v", [1.0, float("nan")]), finite=True)  # a plain numeric column too
    huge = pl.Series("v", [[3e38, 3e38]], dtype=pl.List(pl.Float32))  # the sum overflows; every value is finite
    assert vector_matrix(huge, dtype=np.float32, finite=True).shape == (1, 2)


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
