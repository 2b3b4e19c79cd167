"""Dataset.from_parquet: the files of one input (a folder, a glob) must share a schema; say which column differs."""

import polars as pl
import pytest

from pipeline.errors import InputDataError
from pipeline.io import Dataset


@pytest.mark.parametrize("second, words", [
    ({"id": ["b"], "text": [1]}, "column 'text' is int64 here, large_string in"),
    ({"id": ["b"], "text": ["y"], "n": [1]}, "column 'n' (int64) is not in"),
    ({"id": ["b"]}, "column 'text' is missing here but present in"),
    ({"text": ["y"], "id": ["b"]}, "columns are in another order (text, id) than in"),
])
def test_shards_of_another_schema_are_one_line_naming_the_column(tmp_path, second, words):
    # The message printed both Arrow schemas, one column per line: 4-5 lines for one differing column.
    pl.DataFrame({"id": ["a"], "text": ["x"]}).write_parquet(tmp_path / "p0.parquet")
    pl.DataFrame(second).write_parquet(tmp_path / "p1.parquet")
    with pytest.raises(InputDataError) as err:
        Dataset.from_parquet(tmp_path)
    message = str(err.value)
    assert words in message and "\n" not in message and err.value.file == str(tmp_path / "p1.parquet")


def test_a_filtered_or_shuffled_datasets_dataset_is_read_as_its_rows():
    # A datasets.Dataset after filter/shuffle/select keeps the whole table and a row mapping: the table alone was
    # read, every row in the original order (filter(...) of 1 row gave all 10 to apply and the builder).
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"id": [str(i) for i in range(10)], "text": [f"t{i}" for i in range(10)]})
    assert Dataset.from_any(ds.filter(lambda row: row["id"] == "3")).frame["id"].to_list() == ["3"]
    shuffled = ds.shuffle(seed=1)
    assert Dataset.from_any(shuffled).frame["id"].to_list() == shuffled["id"][:]
    assert Dataset.from_any(ds.select([7, 2])).frame.rows() == [("7", "t7"), ("2", "t2")]
    assert Dataset.from_any(ds).frame.height == 10
