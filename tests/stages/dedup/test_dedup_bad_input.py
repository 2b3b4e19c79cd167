"""Inputs of odd but valid kinds, and bad ones, given to the dedup stages."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.errors import ParamError
from stages.dedup import DedupExact, DedupMinhash

TEXTS = ["the cat sat on the mat today", "the cat sat on the mat today", "a dog ran in the park", "hello there"]


@pytest.mark.parametrize("stage", [DedupExact(), DedupExact(keep="longest"), DedupMinhash(ngram=2),
                                   DedupMinhash(ngram=2, keep="longest")])
def test_a_categorical_text_column_is_deduplicated_as_its_strings(stage):
    # `pipeline validate` counts Categorical as text, but the run refused it ("is Categorical, not text").
    data = pl.DataFrame({"id": ["a", "b", "c", "d"], "text": pl.Series(TEXTS, dtype=pl.Categorical)})
    kept = stage.apply(data)
    assert kept["id"].to_list() == ["a", "c", "d"]
    assert kept["id"].to_list() == stage.apply(data.with_columns(pl.col("text").cast(pl.String)))["id"].to_list()


def test_within_data_false_needs_a_reference(tmp_path):
    # It was ignored without a reference: duplicates within data were removed all the same (exit 0).
    from cli_failures import fails_cleanly, refused_by_validate

    from pipeline.errors import ParamError

    data = pl.DataFrame({"id": ["a", "b", "c", "d"], "text": TEXTS})
    with pytest.raises(ParamError, match="no `reference` input") as err:
        DedupExact(within_data=False).apply(data)
    assert err.value.param == "within_data"
    assert DedupExact(within_data=False).apply(data, reference=data.head(1))["id"].to_list() == ["c", "d"]
    data.write_parquet(tmp_path / "docs.parquet")
    config = f"""
name: bad
steps:
  - id: dedup
    stage: dedup_minhash
    inputs: {tmp_path / "docs.parquet"}
    params: {{within_data: false}}
"""
    fails_cleanly(tmp_path, config, "step 'dedup' (stage 'dedup_minhash'), parameter 'within_data'",
                  "no `reference` input")
    assert "no `reference` input" in refused_by_validate(tmp_path / "v.yaml", config)  # before anything runs


def test_a_list_keep_column_is_refused_at_validate(tmp_path):
    # A list has no best value: it was ranked as one, and a row kept by it (exit 0).
    from cli_failures import refused_by_validate

    data = tmp_path / "docs.parquet"
    pl.DataFrame({"id": ["a", "b", "c", "d"], "text": TEXTS, "q": [[1], [2], [3], [4]]}).write_parquet(data)
    message = refused_by_validate(tmp_path / "bad.yaml", f"""
name: bad
steps:
  - id: dedup
    stage: dedup_exact
    inputs: {data}
    params: {{keep: column, keep_column: q}}
""")
    assert f"step 'dedup' (stage 'dedup_exact'), parameter 'keep_column', file '{data}'" in message
    assert "is List(Int64), not numbers, booleans, dates, times or an Enum to rank rows by" in message


def test_an_array_id_column_is_refused_at_validate(tmp_path):
    # It passed validate, and the run refused it as repeated ids over eight lines (the arrays' repr).
    from cli_failures import refused_by_validate

    data = tmp_path / "v.parquet"
    pl.DataFrame({"embedding": pl.Series([[1.0, 0.0], [0.0, 1.0]], dtype=pl.Array(pl.Float32, 2))}).write_parquet(data)
    message = refused_by_validate(tmp_path / "bad.yaml", f"""
name: bad
steps:
  - id: dedup
    stage: dedup_semantic
    inputs: {data}
    params: {{id_column: embedding}}
""")
    assert f"step 'dedup' (stage 'dedup_semantic'), parameter 'id_column', file '{data}'" in message
    assert "not one value a row" in message


@pytest.mark.parametrize(("values", "dtype"), [(["9.5", "10.2", "1", "2"], "String"),
                                               (["b", "a", "c", "d"], "Categorical")])
def test_a_text_keep_column_is_refused_at_validate(tmp_path, values, dtype):
    # A score read as text ranked by its characters: "9.5" won over "10.2" (exit 0).
    from cli_failures import refused_by_validate

    data = tmp_path / "docs.parquet"
    pl.DataFrame({"id": ["a", "b", "c", "d"], "text": TEXTS, "q": values}).with_columns(
        pl.col("q").cast(getattr(pl, dtype))).write_parquet(data)
    message = refused_by_validate(tmp_path / "bad.yaml", f"""
name: bad
steps:
  - id: dedup
    stage: dedup_minhash
    inputs: {data}
    params: {{keep: column, keep_column: q}}
""")
    assert f"step 'dedup' (stage 'dedup_minhash'), parameter 'keep_column', file '{data}'" in message, message
    assert f"column 'q' (named by parameter 'keep_column') is {dtype}, not numbers, booleans, dates, times or an Enum " \
           "to rank rows by (text would rank by its characters, '10' before '9')" in message, message


def test_boolean_and_date_keep_columns_rank_in_their_order():
    data = pl.DataFrame({"id": ["a", "b", "c", "d"], "text": TEXTS, "curated": [False, True, False, False],
                         "day": pl.Series(["2024-03-01", "2023-01-01", "2024-01-01", "2024-01-01"]).str.to_date()})
    assert DedupExact(keep="column", keep_column="curated").apply(data)["id"].to_list() == ["b", "c", "d"]
    assert DedupExact(keep="column", keep_column="day", keep_descending=False).apply(data)["id"].to_list() == \
        ["b", "c", "d"]
    # An Enum ranks in the order of its declared categories, not of its characters.
    levels = pl.Series(["mid", "high", "low", "low"], dtype=pl.Enum(["low", "mid", "high"]))
    assert DedupExact(keep="column", keep_column="q").apply(data.with_columns(q=levels))["id"].to_list() == \
        ["b", "c", "d"]


@pytest.mark.parametrize("stage", [DedupExact, DedupMinhash])
def test_a_keep_column_without_keep_column_is_refused_not_ignored(stage):
    # keep_column: q with the default keep: first kept the first row of each cluster, not q's best.
    with pytest.raises(ParamError, match="keep: column") as refused:
        stage.from_params({"keep_column": "q"})
    assert refused.value.param == "keep_column"
