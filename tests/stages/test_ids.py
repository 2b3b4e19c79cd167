"""stages._ids: exact null and NaN counts over a whole input, and the id check streamed in 8 bytes an id."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputDataError
from pipeline.io import Dataset
from stages import _ids
from stages._ids import (
    nan_count,
    null_count,
    refuse_bad_id_column,
    refuse_bad_ids,
    refuse_null_texts,
    refuse_nulls,
)

COLUMNS = {
    "unique strings": pl.Series("id", [f"doc-{i}" for i in range(40)]),
    "repeats across batches": pl.Series("id", [f"doc-{i % 23}" for i in range(40)]),
    "one repeat at the end": pl.Series("id", [*(f"doc-{i}" for i in range(39)), "doc-0"]),
    "integers with repeats": pl.Series("id", [i % 31 for i in range(40)], dtype=pl.Int64),
    "unsigned integers": pl.Series("id", [2**64 - 1 - i for i in range(40)], dtype=pl.UInt64),
    "categorical with repeats": pl.Series("id", [f"c{i % 17}" for i in range(40)], dtype=pl.Categorical),
    "nulls and repeats": pl.Series("id", [None if i % 9 == 0 else f"d{i % 20}" for i in range(40)]),
    "floats (read whole)": pl.Series("id", [float(i % 33) for i in range(40)]),
}


def _outcome(check) -> str | None:
    try:
        check()
    except InputDataError as exc:
        return str(exc)
    return None


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(_ids, "ID_BATCH_ROWS", 7)


@pytest.mark.parametrize("name", COLUMNS)
def test_same_verdict_and_message_as_the_whole_column_check(tmp_path, small_batches, name):
    ids = COLUMNS[name]
    path = tmp_path / "ids.parquet"
    pl.DataFrame({"id": ids, "text": ["t"] * ids.len()}).write_parquet(path, row_group_size=11)
    whole = _outcome(lambda: refuse_bad_ids(ids, "id", str(path)))
    assert _outcome(lambda: refuse_bad_id_column(Dataset.from_parquet(path), "id")) == whole
    assert (whole is None) == (name in ("unique strings", "unsigned integers"))
    frame = Dataset.from_any(pl.DataFrame({"id": ids}), label=str(path))  # a library call's in-memory input
    assert _outcome(lambda: refuse_bad_id_column(frame, "id")) == whole


@pytest.mark.parametrize("name", ["unique strings", "repeats across batches", "integers with repeats"])
def test_a_hash_collision_is_confirmed_on_the_ids_and_refuses_nothing(monkeypatch, small_batches, name):
    # Every id gets one of three words: distinct ids collide everywhere, and only the ids' own values decide.
    monkeypatch.setattr(_ids, "_id_word", lambda ids: np.arange(ids.len(), dtype=np.uint64) % 3)
    ids = COLUMNS[name]
    whole = _outcome(lambda: refuse_bad_ids(ids, "id", "ids"))
    assert _outcome(lambda: refuse_bad_id_column(Dataset.from_any(pl.DataFrame({"id": ids}), label="ids"), "id")) == whole


def test_the_column_is_streamed_never_read_whole(monkeypatch, small_batches, tmp_path):
    ids = pl.Series("id", [f"doc-{i}" for i in range(100)] + ["doc-5"])
    pl.DataFrame({"id": ids}).write_parquet(tmp_path / "ids.parquet", row_group_size=30)
    data = Dataset.from_parquet(tmp_path / "ids.parquet")
    monkeypatch.setattr(Dataset, "lazy", lambda self: pytest.fail("the id column was read whole"))
    heights = []
    iter_batches = Dataset.iter_batches

    def recorded(self, rows, columns=None):
        for batch in iter_batches(self, rows, columns):
            heights.append(batch.height)
            yield batch

    monkeypatch.setattr(Dataset, "iter_batches", recorded)
    with pytest.raises(InputDataError, match=r"1 ids repeated, e.g. 'doc-5'"):
        refuse_bad_id_column(data, "id")
    assert max(heights) <= 7 and sum(heights) == 2 * ids.len()  # the hashing pass, then the repeated words' pass


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


def test_refuse_nulls_says_what_the_values_are_and_with_every_row_only_refuses_an_empty_column():
    # One helper for the null checks scaling_curve (labels) and corpus_metrics (an all-null text column) wrote inline.
    data = Dataset.from_any(pl.DataFrame({"label": [1, None, None]}), label="train.parquet")
    with pytest.raises(InputDataError, match="input 'test' column 'label' has 2 null labels; every row needs a "
                                             "class; drop or fill them first") as err:
        refuse_nulls(data, "label", "every row needs a class", kind="label", param="label_column", input_name="test")
    assert (err.value.param, err.value.file) == ("label_column", "train.parquet")
    refuse_nulls(data, "label", "unused", kind="label", param="label_column", every_row=True)  # one row has a label
    empty = Dataset.from_any(pl.DataFrame({"text": [None, None]}, schema={"text": pl.String}), label="c.parquet")
    with pytest.raises(InputDataError, match="column 'text' holds no text \\(all 2 rows null\\); nothing to "
                                             "measure; check that text_column names the right column") as err:
        refuse_nulls(empty, "text", "nothing to measure", kind="text", param="text_column", every_row=True)
    assert err.value.file == "c.parquet"


def test_nan_count_counts_nan_not_null_in_files_and_frames(tmp_path):
    frame = pl.DataFrame({"id": ["a", "b", "c", "d"], "score": [1.0, float("nan"), None, float("nan")]})
    frame.write_parquet(tmp_path / "d.parquet", row_group_size=1)
    for data in (Dataset.from_parquet(tmp_path / "d.parquet"), Dataset.from_any(frame)):
        assert nan_count(data, "score") == 2
        assert nan_count(data, "id") == 0  # not a float column: nothing to count


@pytest.mark.parametrize("statistics", [True, False])
def test_null_rows_counts_rows_null_in_every_column(tmp_path, small_batches, statistics):
    # Rows 1 and 5 have every field null; rows 2 and 3 only some. A column with no null answers at once.
    frame = pl.DataFrame({"q": ["a", None, None, "d", "e", None, "g"], "a": ["x", None, "y", None, "z", None, "w"],
                          "full": list("abcdefg")})
    pq.write_table(frame.to_arrow(), tmp_path / "d.parquet", row_group_size=3, write_statistics=statistics)
    for data in (Dataset.from_parquet(tmp_path / "d.parquet"), Dataset.from_any(frame)):
        assert _ids.null_rows(data, ["q", "a"]) == 2
        assert _ids.null_rows(data, ["q", "a", "full"]) == 0
        with pytest.raises(InputDataError, match="input 'train' has 2 rows with no text \\(columns 'q', 'a' all "
                                                 "null\\); it would vanish") as err:
            refuse_null_texts(data, ["q", "a"], "it would vanish", input_name="train", param="train_fields")
        assert err.value.param == "train_fields"


def test_nan_ids_are_refused_they_name_no_row(tmp_path):
    # A NaN id passed as unique (NaN is not null, and polars counts it once): dedup's keep: lowest_id ranked it.
    path = tmp_path / "f.parquet"
    pl.DataFrame({"id": [1.0, float("nan"), 2.0]}).write_parquet(path)
    with pytest.raises(InputDataError, match="column 'id' holds 1 NaN ids; a NaN equals no id") as err:
        _ids.refuse_bad_id_column(Dataset.from_parquet(path), "id")
    assert err.value.file == str(path) and err.value.param == "id_column"
