"""The id column a source takes: the cases that cannot name rows are told apart before any cast."""

from __future__ import annotations

import polars as pl

from stages.corpus_ids import id_column_problem


def test_id_column_problems():
    schema = {"id": pl.String, "text": pl.String, "k": pl.Int64, "meta": pl.Struct({"a": pl.Int64})}
    assert id_column_problem(schema, "text", None) is None and id_column_problem(schema, "text", "id") is None
    assert "also has a column 'id'" in id_column_problem(schema, "text", "k")
    assert "names the text column" in id_column_problem(schema, "text", "text")
    assert "not ids" in id_column_problem({"text": pl.String, "meta": schema["meta"]}, "text", "meta")
    assert id_column_problem({"id": pl.String, "k": pl.Int64}, "id", "k") is None  # 'id' is the text, renamed
