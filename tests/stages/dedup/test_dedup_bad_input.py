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
    from cli_failures import fails_cleanly

    from pipeline.errors import ParamError

    data = pl.DataFrame({"id": ["a", "b", "c", "d"], "text": TEXTS})
    with pytest.raises(ParamError, match="no `reference` input") as err:
        DedupExact(within_data=False).apply(data)
    assert err.value.param == "within_data"
    assert DedupExact(within_data=False).apply(data, reference=data.head(1))["id"].to_list() == ["c", "d"]
    data.write_parquet(tmp_path / "docs.parquet")
    fails_cleanly(tmp_path, f"""
name: bad
steps:
  - id: dedup
    stage: dedup_minhash
    inputs: {tmp_path / "docs.parquet"}
    params: {{within_data: false}}
""", "step 'dedup' (stage 'dedup_minhash'), parameter 'within_data'", "no `reference` input")
