"""The `sql` stage declares its output columns by binding the query to the input's schema (nothing runs).

So `pipeline validate` refuses a later step that names a column the query does not produce, and a
query that names a column its input lacks, before any step runs.
"""

from __future__ import annotations

import polars as pl
import pytest
from cli_failures import refused_by_validate

from pipeline.columns import check_column_flow
from pipeline.config import parse_config
from pipeline.errors import PipelineError
from stages.sql import Sql, describe_query

ROWS = {"id": "rows", "stage": "test_random_rows", "params": {"n": 5}}


def _config(*steps: dict) -> dict:
    return {"name": "sqlflow", "seed": 1, "steps": [ROWS, *steps]}


def test_validate_rejects_a_column_the_query_does_not_produce(tmp_path):
    message = refused_by_validate(tmp_path / "bad.yaml", """
name: sqlflow
seed: 1
steps:
  - {id: rows, stage: test_random_rows, params: {n: 5}}
  - {id: ids, stage: sql, inputs: rows, params: {query: "SELECT id, length(text) AS n_chars FROM data"}}
  - {id: long, stage: length_filter, inputs: ids, params: {min_words: 2}}
""")
    assert "step 'long'" in message and "'text'" in message
    assert "available columns are: ['id', 'n_chars']" in message


def test_validate_rejects_a_query_naming_a_missing_input_column(tmp_path):
    message = refused_by_validate(tmp_path / "bad.yaml", """
name: sqlflow
seed: 1
steps:
  - {id: rows, stage: test_random_rows, params: {n: 5}}
  - {id: q, stage: sql, inputs: rows, params: {query: "SELECT lable FROM data"}}
""")
    assert "step 'q'" in message and "parameter 'query'" in message and "lable" in message
    assert "['id', 'text']" in message


def test_declared_columns_and_types_follow_the_query():
    known = check_column_flow(parse_config(_config(
        {"id": "q", "stage": "sql", "inputs": "rows",
         "params": {"query": "SELECT id, upper(text) AS body, length(text) AS n FROM data ORDER BY id"}},
        {"id": "f", "stage": "length_filter", "inputs": "q", "params": {"text_column": "body"}},
    )))
    assert known["q"] == {"id": pl.String, "body": pl.String, "n": pl.Int64}
    assert known["f"] == known["q"]


def test_declaration_matches_what_the_query_produces():
    data = pl.DataFrame({"id": ["a", "b"], "n": [1, 2], "v": [[0.5, 1.0], [2.0, 3.0]]})
    stage = Sql(query="SELECT id, n * 2 AS twice, v, count(*) OVER () AS total FROM data")
    produced = stage.apply(data)
    assert stage.output_schema({"data": dict(data.schema)}) == dict(produced.schema)


def test_untyped_input_columns_still_flow_and_a_missing_column_is_refused():
    # A column of unknown type (None) is bound as SQL NULL: the names still flow, its type stays unknown.
    assert describe_query("SELECT x, 1 AS one FROM data", {"x": None}) == {"x": None, "one": pl.Int32}
    # A missing column is refused whatever the types are.
    with pytest.raises(PipelineError, match="lable"):
        describe_query("SELECT lable FROM data", {"x": None})
