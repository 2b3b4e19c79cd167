"""Parameters of `corpus_metrics` refused by `pipeline validate`: one line naming step, parameter and config."""

from __future__ import annotations

import polars as pl
import pytest
from cli_failures import refused_by_validate


@pytest.mark.parametrize("params, param, words", [
    # polars failed grouping by one column twice (exit 1, 'this looks like a bug').
    ("{group_by: [g, g], embedding_backend: none}", "group_by", "lists column 'g' twice"),
    # A missing model was refused only when the metrics were measured, after every partition was read.
    ("{embedding_backend: static, embedding_model: /no/such/model}", "embedding_model", "does not exist"),
    # A model with no backend to load it was dropped without a word.
    ("{embedding_backend: none, embedding_model: all-MiniLM-L6-v2}", "embedding_model",
     "is unused with embedding_backend: none"),
])
def test_corpus_metrics_refuses_at_validate(tmp_path, params, param, words):
    data = tmp_path / "docs.parquet"
    pl.DataFrame({"text": ["one two", "three four"], "g": ["a", "b"]}).write_parquet(data)
    config = tmp_path / "bad.yaml"
    message = refused_by_validate(config, f"""
name: bad
steps:
  - id: metrics
    stage: corpus_metrics
    inputs: {data}
    params: {params}
""")
    assert f"step 'metrics' (stage 'corpus_metrics'), parameter '{param}', file '{config}'" in message
    assert words in message
