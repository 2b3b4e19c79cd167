"""Declared outputs: `pipeline validate` checks the column flow of the whole DAG before anything runs."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import polars as pl
import pytest
from conftest import REPO, run_cli, write_config

from pipeline import PipelineBuilder, Stage
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


@pytest.mark.parametrize("stage, params, param, expected", [
    ("corpus_metrics", {"group_by": ["vec"]}, "group_by", "not one value a row"),
    ("nested_subsets", {"strata": "vec", "sizes": [2]}, "strata", "not one value a row"),
    ("scaling_fit", {"x_column": "text", "y_column": "loss"}, "x_column", "not numeric"),
    ("scaling_fit", {"x_column": "size", "y_column": "loss", "group_by": "vec"}, "group_by", "not one value a row"),
])
def test_key_and_numeric_columns_of_the_wrong_kind_are_refused_before_running(tmp_path, stage, params, param,
                                                                               expected):
    path = tmp_path / "rows.parquet"
    pl.DataFrame({"id": ["a", "b"], "text": ["x y", "z"], "vec": [[1.0], [2.0]], "size": [10, 20],
                  "loss": [1.0, 0.5]}).write_parquet(path)
    with pytest.raises(InputDataError) as info:
        parse_config(_config({"id": "s", "stage": stage, "inputs": str(path), "params": params}))
    assert info.value.param == param and expected in str(info.value)
    assert ("String" if expected == "not numeric" else "List(Float64)") in str(info.value)


@pytest.mark.parametrize("stage, params", [
    ("label_noise", {"mode": "flip", "noise": "symmetric", "rate": 0.1}),
    ("label_noise_curve", {"alphas": [0], "noises": ["uniform"]}),
])
def test_a_float_label_column_is_refused_by_validate_before_running(tmp_path, stage, params):
    # Labels are integers or strings: a float column passed `pipeline validate` and was refused only when the
    # step ran (after a split, in the studies).
    path = tmp_path / "rows.parquet"
    pl.DataFrame({"id": ["a", "b"], "label": [0.0, 1.0], "x": [1.0, 2.0]}).write_parquet(path)
    with pytest.raises(InputDataError) as info:
        parse_config(_config({"id": "s", "stage": stage, "inputs": str(path), "params": params}))
    assert info.value.param == "label_column" and info.value.file == str(path)
    assert "column 'label'" in str(info.value) and "Float64, not integer or string class labels" in str(info.value)
    pl.DataFrame({"id": ["a", "b"], "label": [0, 1], "x": [1.0, 2.0]}).write_parquet(path)
    parse_config(_config({"id": "s", "stage": stage, "inputs": str(path), "params": params}))  # integers pass


def test_the_label_kind_is_the_label_noise_stages_own():
    # scaling_curve sorts whatever classes it is given (booleans, categories): its boolean labels still pass.
    from pipeline.columns import check_schema
    from stages.noise import LabelNoise
    from stages.scaling.scaling_curve import ScalingCurve

    columns = {"id": pl.String, "label": pl.Boolean, "pixels": pl.List(pl.Float64)}
    check_schema(ScalingCurve(), {"data": columns | {"subset_index": pl.Int64, "subset_size": pl.Int64},
                                  "test": columns}, {})
    with pytest.raises(InputDataError, match="is Boolean, not integer or string class labels"):
        check_schema(LabelNoise(mode="flip", rate=0.1), {"data": columns}, {})


@pytest.mark.skipif(importlib.util.find_spec("pandas") is None, reason="pandas is not installed: nothing to import")
def test_checking_and_running_a_parquet_pipeline_does_not_import_pandas(tmp_path):
    """Schemas are read without `pyarrow.Schema.empty_table()`, which imports pandas (about 0.5 s per process).

    Covers a Parquet path input's footer (column flow), a streamed Parquet file (read_corpus) and the
    sql stage's declared columns. (Running an sql step does import pandas: pyarrow.dataset, which
    scans its input, imports it when loaded.)
    """
    pl.DataFrame({"id": ["a", "b"], "text": ["x y", "z"]}).write_parquet(tmp_path / "corpus.parquet",
                                                                         compression="uncompressed")
    pl.DataFrame(schema={"id": pl.String, "text": pl.String}).write_parquet(tmp_path / "empty.parquet")
    write_config(tmp_path / "run.yaml", """
name: nopandas
seed: 1
steps:
  - {id: corpus, stage: read_corpus, params: {path: corpus.parquet, format: parquet}}
  - {id: long, stage: length_filter, inputs: corpus, params: {min_words: 2}}
  - {id: ids, stage: select, inputs: empty.parquet, params: {columns: [id]}}
""")
    write_config(tmp_path / "check.yaml", """
name: nopandas-sql
seed: 1
steps:
  - {id: picked, stage: sql, inputs: empty.parquet, params: {query: "SELECT id, upper(text) AS t FROM data"}}
""")
    code = ("import sys; from pipeline.cli import main; "
            "codes = [main(['run', 'run.yaml']), main(['validate', 'check.yaml'])]; "
            "print(codes, 'pandas' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[0, 0] False", out.stdout + out.stderr
    assert pl.read_parquet(tmp_path / "data/runs/nopandas/long/*.parquet")["id"].to_list() == ["a"]


def test_validate_refuses_a_side_output_of_a_stage_that_writes_none(tmp_path):
    config = write_config(tmp_path / "sides.yaml", """
name: sides
seed: 1
steps:
  - {id: p, stage: python_docs}
  - {id: q, stage: select, inputs: "p:nosuchside", params: {columns: [text]}}
""")
    out = run_cli("validate", str(config))
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.strip() == (f"error: step 'q' (stage 'select'), file '{config}': input 'data': "
                                  "step 'p' has no side output 'nosuchside'; it has: none")


DOCS = {"id": "docs", "stage": "test_random_rows", "params": {"n": 20}}


@pytest.mark.parametrize("upstream, ref, has", [
    ({"stage": "split", "params": {"fractions": {"train": 0.8, "test": 0.2}}}, "up:valid", "train, test"),
    ({"stage": "nested_subsets", "params": {"sizes": [5, 10]}}, "up:size_10", "sizes"),  # side_outputs: false
    ({"stage": "nested_subsets", "params": {"sizes": [5, 10], "side_outputs": True}}, "up:size_7",
     "sizes, size_5, size_10"),
    ({"stage": "corpus_metrics", "params": {"perplexity_order": 0}}, "up:perplexity", "none"),
    ({"stage": "dedup_exact"}, "up:kept", "removed, clusters"),
])
def test_a_side_output_the_params_do_not_write_is_refused_naming_those_they_do(upstream, ref, has):
    with pytest.raises(InputDataError) as info:
        parse_config(_config(DOCS, {"id": "up", "inputs": "docs", **upstream},
                             {"id": "reader", "stage": "select", "inputs": ref}))
    side = ref.split(":")[1]
    assert info.value.step == "reader"
    assert str(info.value).endswith(f"input 'data': step 'up' has no side output '{side}'; it has: {has}")


@pytest.mark.parametrize("upstream, ref", [
    ({"stage": "split", "params": {"fractions": {"train": 0.8, "test": 0.2}}}, "up:test"),
    ({"stage": "nested_subsets", "params": {"sizes": [5, 10], "side_outputs": True}}, "up:size_10"),
    ({"stage": "nested_subsets", "params": {"min_size": 5, "side_outputs": True}}, "up:size_17"),  # data decides
    ({"stage": "corpus_metrics"}, "up:perplexity"),
    ({"stage": "dedup_exact"}, "up:removed"),
])
def test_a_side_output_the_params_write_is_accepted(upstream, ref):
    config = parse_config(_config(DOCS, {"id": "up", "inputs": "docs", **upstream},
                                  {"id": "reader", "stage": "select", "inputs": ref}))
    assert str(config.step("reader").inputs["data"]) == ref


def test_a_stage_writing_an_undeclared_side_output_fails_the_step_naming_the_method(tmp_path):
    # validate checks step:side inputs against side_output_names(); a stage writing another one would make that
    # check wrong, so the step fails (nothing published) and says what to add. (Defined here, not at import, so
    # the contract test over every registered stage does not collect it.)
    class UndeclaredSide(Stage):
        """Writes a side output it does not declare: what a plugin stage written before the declaration did."""

        name = "test_undeclared_side"
        inputs = ("data",)

        def run(self, ctx, data):
            frame = data.lazy().collect()
            ctx.write_side_output("extra", frame.head(1))
            return frame

    p = PipelineBuilder("undeclared", seed=0)
    p.add("plain", UndeclaredSide(), data=pl.DataFrame({"id": ["a", "b"], "text": ["x", "y"]}))
    with pytest.raises(PipelineError, match=r"stage 'test_undeclared_side' wrote side output\(s\) extra that its "
                                            r"side_output_names\(\) does not declare \(it declares: none\)"):
        p.run(workdir=tmp_path)
    assert not (tmp_path / "undeclared" / "plain").exists()


def test_a_declaration_refusing_an_input_names_that_inputs_file(tmp_path):
    """`output_schema` sees schemas only; a refusal that starts "input 'data' ..." names the data's file, not the
    config (before: file 'c.yaml' for a column of d.parquet)."""
    from cli_failures import refused_by_validate

    data = tmp_path / "d.parquet"
    pl.DataFrame({"id": [str(i) for i in range(40)], "label": ["a", "b"] * 20, "text": range(40)}).write_parquet(data)
    message = refused_by_validate(tmp_path / "c.yaml", f"""
name: flow
steps:
  - {{id: curve, stage: label_noise_curve, inputs: {data}, params: {{features: text}}}}
""")
    assert f"file '{data}'" in message and "input 'data' column 'text'" in message and "c.yaml" not in message
