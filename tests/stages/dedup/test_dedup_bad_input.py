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
