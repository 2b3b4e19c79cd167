"""pipeline/writing.py: a stage's batches written as one table, whatever each batch's own inferred schema."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.errors import PipelineError
from pipeline.writing import write_table


def test_batches_whose_columns_grow_or_widen_are_kept_whole(tmp_path):
    # A generator's rows typed batch by batch: a field first seen in the second batch was dropped without a
    # word, and an integer field that turned float failed with a schema dump over several lines.
    batches = [pl.DataFrame({"text": ["a", "b"], "score": [1, 2]}),
               pl.DataFrame({"text": ["c"], "score": [2.5], "lang": ["en"]}),
               pl.DataFrame({"text": ["d"]})]
    write_table(iter(batches), tmp_path)
    out = pl.read_parquet(tmp_path / "part-*.parquet")
    assert out.columns == ["text", "score", "lang"]
    assert out["score"].to_list() == [1.0, 2.0, 2.5, None] and out["lang"].to_list() == [None, None, "en", None]


def test_batches_of_conflicting_types_are_one_line_naming_both(tmp_path):
    batches = [pl.DataFrame({"text": ["a"], "n": [1]}), pl.DataFrame({"text": ["b"], "n": ["one"]})]
    with pytest.raises(PipelineError, match="different schemas") as err:
        write_table(iter(batches), tmp_path)
    assert "\n" not in str(err.value) and "n: int64" in str(err.value)
