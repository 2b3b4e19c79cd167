"""stages._ids: the exact null count of a whole input's column, read from the footers or counted in batches."""

from __future__ import annotations

import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputDataError
from pipeline.io import Dataset
from stages._ids import nan_count, null_count, refuse_null_texts


@pytest.mark.parametrize("statistics", [True, False])
def test_null_count_is_exact_over_every_row_group_and_file(tmp_path, statistics):
    # Nulls spread over many row groups and two files: every one is counted, not only the first group's.
    frame = pl.DataFrame({"text": ["a", None, "c", None] * 5_000, "vec": [[1.0, None], None, [2.0], [3.0]] * 5_000})
    for i in range(2):
        pq.write_table(frame.to_arrow(), tmp_path / f"part-{i}.parquet", row_group_size=3_000,
                       write_statistics=statistics)
    data = Dataset.from_parquet(tmp_path)
    assert null_count(data, "text") == 20_000
    assert null_count(data, "vec") == 10_000  # rows that are null, not null values inside the lists
    assert null_count(Dataset.from_any(frame), "text") == 10_000


def test_refuse_null_texts_names_the_input_column_and_file():
    data = Dataset.from_any(pl.DataFrame({"body": ["x", None, None]}), label="corpus.parquet")
    with pytest.raises(InputDataError, match="input 'train' column 'body' has 2 null texts; it would vanish") as err:
        refuse_null_texts(data, "body", "it would vanish", input_name="train")
    assert (err.value.param, err.value.file) == ("text_column", "corpus.parquet")
    refuse_null_texts(Dataset.from_any(pl.DataFrame({"body": ["x"]})), "body", "unused")


def test_nan_count_counts_nan_not_null_in_files_and_frames(tmp_path):
    frame = pl.DataFrame({"id": ["a", "b", "c", "d"], "score": [1.0, float("nan"), None, float("nan")]})
    frame.write_parquet(tmp_path / "d.parquet", row_group_size=1)
    for data in (Dataset.from_parquet(tmp_path / "d.parquet"), Dataset.from_any(frame)):
        assert nan_count(data, "score") == 2
        assert nan_count(data, "id") == 0  # not a float column: nothing to count
