"""Declared outputs: `pipeline validate` checks the column flow of the whole DAG before anything runs."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import run_cli, write_config

from pipeline.columns import check_column_flow
from pipeline.config import parse_config
from pipeline.errors import InputDataError, PipelineError
from stages.transforms import LengthFilter


def _config(*steps: dict) -> dict:
    return {"name": "flow", "seed": 1, "steps": list(steps)}


ROWS = {"id": "rows", "stage": "test_random_rows", "params": {"n": 5}}


def test_validate_rejects_a_column_no_upstream_step_produces(tmp_path):
    config = write_config(tmp_path / "bad.yaml", """
name: flow
seed: 1
steps:
  - {id: rows, stage: test_random_rows, params: {n: 5}}
  - {id: keep_ids, stage: select, inputs: rows, params: {columns: [id]}}
  - {id: long, stage: length_filter, inputs: keep_ids, params: {min_words: 2, text_column: text}}
""")
    out = run_cli("validate", str(config))
    assert out.returncode == 2, out.stdout + out.stderr
    message = out.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert "step 'long'" in message and "'text'" in message and "available columns are: ['id']" in message
    assert "text_column" in message


def test_validate_accepts_a_config_whose_columns_flow(tmp_path):
    config = write_config(tmp_path / "ok.yaml", """
name: flow
seed: 1
steps:
  - {id: rows, stage: test_random_rows, params: {n: 20}}
  - {id: split, stage: split, inputs: rows, params: {fractions: {train: 0.5, test: 0.5}}}
  - {id: only, stage: select, inputs: "split:train", params: {columns: [id, split, text]}}
  - {id: long, stage: length_filter, inputs: only, params: {min_words: 1}}
""")
    out = run_cli("validate", str(config))
    assert out.returncode == 0, out.stderr


def test_flow_names_the_step_the_column_and_what_is_available():
    with pytest.raises(PipelineError) as info:
        parse_config(_config(ROWS, {"id": "f", "stage": "length_filter", "inputs": "rows",
                                    "params": {"text_column": "body"}}))
    err = info.value
    assert err.step == "f" and err.param == "text_column"
    assert "'body'" in str(err) and "['id', 'text']" in str(err)


def test_parquet_path_inputs_are_checked_from_the_footer(tmp_path):
    path = tmp_path / "ints.parquet"
    pl.DataFrame({"id": ["a", "b"], "text": [1, 2]}).write_parquet(path)
    with pytest.raises(InputDataError) as info:
        parse_config(_config({"id": "f", "stage": "length_filter", "inputs": str(path), "params": {}}))
    message = str(info.value)
    assert "'text'" in message and "Int64" in message and "not text" in message and "\n" not in message


def test_unknown_outputs_stop_the_check_without_guessing(tmp_path):
    # `test_slow_copy` declares no output: its readers are checked when they run, not refused here.
    known = check_column_flow(parse_config(_config(
        ROWS, {"id": "q", "stage": "test_slow_copy", "inputs": "rows"},
        {"id": "f", "stage": "length_filter", "inputs": "q", "params": {"text_column": "body"}},
    )))
    assert known["rows"] == {"id": pl.String, "text": pl.String}
    assert known["q"] is None and known["f"] is None


def test_library_call_with_an_int_text_column_is_one_clear_error():
    with pytest.raises(InputDataError) as info:
        LengthFilter(min_words=1).apply(pl.DataFrame({"id": ["a"], "text": [5]}))
    assert "column 'text'" in str(info.value) and "Int64" in str(info.value) and "not text" in str(info.value)
