"""Inputs of odd but valid kinds, and bad ones, given to the dedup stages."""

from __future__ import annotations

import polars as pl
import pytest

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
    assert "is List(Int64), not one value a row" in message


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
