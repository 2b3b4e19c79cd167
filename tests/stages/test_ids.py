"""`refuse_bad_id_column`: the whole-column id check of `check_input_data`, streamed in 8 bytes an id."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.errors import InputDataError
from pipeline.io import Dataset
from stages import _ids
from stages._ids import refuse_bad_id_column, refuse_bad_ids

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
