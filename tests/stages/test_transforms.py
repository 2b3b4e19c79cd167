"""select, length_filter, sample, split: parameter refusals that name the parameter."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.errors import InputDataError, ParamError
from stages.transforms import LengthFilter, Sample, Select, Split

SCHEMA = {"data": {"id": pl.String, "text": pl.String, "label": pl.Int64}}


@pytest.mark.parametrize("params, param, words", [
    ({"columns": ["id", "id"]}, "columns", "'id' more than once"),
    ({"drop": ["id", "id"]}, "drop", "'id' more than once"),
    ({"rename": {"text": ""}}, "rename", "non-empty string"),
    ({"rename": {"id": "x", "text": "x"}}, "rename", "two columns to 'x'"),
])
def test_select_refuses_bad_params_when_built(params, param, words):
    with pytest.raises(ParamError) as info:
        Select.from_params(params)
    assert info.value.param == param and words in str(info.value)


@pytest.mark.parametrize("params, param, words", [
    ({"rename": {"id": "text"}}, "rename", "'text', which the output already has"),
    ({"drop": ["id", "text", "label"]}, "drop", "leaves no columns"),
    ({"columns": ["id"], "rename": {"text": "body"}}, "rename", "'text', which columns or drop removes"),
])
def test_select_refuses_an_output_it_cannot_make(params, param, words):
    with pytest.raises(ParamError) as info:
        Select.from_params(params).output_schema(SCHEMA)
    assert info.value.param == param and words in str(info.value)


def test_select_still_swaps_and_refuses_a_clash_in_an_undeclared_input():
    assert Select(rename={"id": "text", "text": "id"}).output_schema(SCHEMA) == {
        "text": pl.String, "id": pl.String, "label": pl.Int64}
    with pytest.raises(ParamError, match="already has"):  # upstream schema unknown at validate: refused per batch
        Select(rename={"id": "text"}).apply(pl.DataFrame({"id": ["a"], "text": ["b"]}))


@pytest.mark.parametrize("stage", [Sample, Split])
def test_a_step_seed_is_non_negative_like_the_pipeline_seed(stage):
    with pytest.raises(ParamError, match=">= 0") as info:
        stage.from_params({"seed": -1, **({"n": 2} if stage is Sample else {})})
    assert info.value.param == "seed"


def test_sample_refuses_an_n_larger_than_its_input():
    """It returned all 3 rows for n: 5, silently; sample(n) without replacement in polars and pandas raises."""
    data = pl.DataFrame({"id": ["a", "b", "c"], "text": ["x", "y", "z"]})
    with pytest.raises(ParamError, match="is 5, but the input has 3 rows") as info:
        Sample(n=5).apply(data)
    assert info.value.param == "n" and "fraction: 1.0" in info.value.hint
    assert Sample(n=3).apply(data).height == 3


@pytest.mark.parametrize("ids, words", [(["a", "a", "b", "c"], "duplicate ids"), (["a", None, "b", "c"], "null")])
def test_sample_refuses_ids_it_cannot_key_the_draw_on(ids, words):
    """The draw is keyed on each id's hash, like split's: a repeated id went in or out with its twin."""
    with pytest.raises(InputDataError, match=words) as info:
        Sample(n=2).apply(pl.DataFrame({"id": ids, "text": list("wxyz")}))
    assert info.value.param == "id_column"


@pytest.mark.parametrize("dtype", [pl.Categorical, pl.Enum(["ab", "abcd efg"])])
def test_length_filter_measures_a_categorical_or_enum_text_column(dtype):
    # Both count as text when the step is checked (pipeline.columns.is_text), so the filter must measure them.
    docs = pl.DataFrame({"id": ["a", "b"], "text": ["ab", "abcd efg"]}).with_columns(pl.col("text").cast(dtype))
    kept = LengthFilter(min_chars=3, min_words=2).apply(docs)
    assert kept["id"].to_list() == ["b"]
    assert kept.schema["text"] == docs.schema["text"]  # the column is passed through as it came


def test_length_filter_counts_the_rows_it_drops_for_having_no_text():
    # A text column of nulls gave no rows and no word why.
    frame = pl.DataFrame({"id": ["a", "b", "c"], "text": ["long enough text", None, None]})
    result = LengthFilter(min_chars=3).execute(frame)
    assert result.table["id"].to_list() == ["a"] and result.stats["null_texts_dropped"] == 2
    assert "null_texts_dropped" not in LengthFilter().execute(frame.head(1)).stats


@pytest.mark.parametrize("stage", [Split(), Sample(n=1)])
def test_a_list_id_column_is_refused_in_one_line(stage):
    # The draw hashes each id: a list id failed inside polars (exit 1).
    with pytest.raises(InputDataError, match="not one value a row") as refused:
        stage.execute(pl.DataFrame({"id": [[1], [2]], "text": ["a", "b"]}), seed=0)
    assert refused.value.param == "id_column"
