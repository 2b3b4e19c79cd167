"""The `embed` stage (stages/embedding/embed.py): the output column, cache reuse across runs, refused inputs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from cli_failures import BASE, refused_by_validate
from embedding_texts import PARAGRAPHS

from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from stages.embedding import (
    Embed,
    encode_texts,
    series_to_vectors,
)


def test_embed_stage_adds_fixed_size_float32_column(tmp_path):
    df = pl.DataFrame({"id": range(6), "body": PARAGRAPHS[:6]})
    result = Embed(text_column="body", output_column="vec").execute(df, workdir=tmp_path)
    out = result.table
    assert out.columns == ["id", "body", "vec"]
    assert out.schema["vec"] == pl.Array(pl.Float32, 384)
    np.testing.assert_allclose(series_to_vectors(out["vec"]), encode_texts(PARAGRAPHS[:6]), atol=1e-5)
    assert result.stats["computed"] == 6 and result.stats["dim"] == 384


def test_embed_stage_reuses_cache_across_runs(tmp_path):
    df = pl.DataFrame({"text": PARAGRAPHS[:8]})
    Embed().execute(df, workdir=tmp_path / "a")
    grown = pl.DataFrame({"text": PARAGRAPHS[:9]})
    again = Embed().execute(grown, workdir=tmp_path / "b")
    assert again.stats["cache_hits"] == 8 and again.stats["computed"] == 1


def test_missing_text_column_names_the_column():
    with pytest.raises(InputDataError, match="no column 'body'"):
        Embed(text_column="body").apply(pl.DataFrame({"text": ["a"]}))


def test_null_texts_are_refused():
    with pytest.raises(InputDataError, match="null"):
        Embed().apply(pl.DataFrame({"text": ["print a line", None]}))


def test_null_texts_are_counted_over_the_whole_input_before_any_embedding(tmp_path):
    # Nulls in the first and the last of many row groups: the count is the input's, not the first batch's.
    texts = ["print a line", None] + ["a text"] * 20_000 + [None, None]
    pl.DataFrame({"text": texts}).write_parquet(tmp_path / "t.parquet", row_group_size=1_000)
    with pytest.raises(InputDataError, match="column 'text' has 3 null texts"):
        Embed(backend="static").execute(data=Dataset.from_parquet(tmp_path / "t.parquet"))


def test_an_output_column_the_input_has_is_refused_by_validate(tmp_path):
    """`output_column: id` replaced the ids with vectors, silently."""
    message = refused_by_validate(tmp_path / "c.yaml", BASE + "  - id: e\n    stage: embed\n    inputs: docs\n"
                                                              "    params: {output_column: id, backend: static}\n")
    assert "step 'e' (stage 'embed'), parameter 'output_column'" in message
    assert "names column 'id', which the input already has" in message


def test_an_output_column_the_input_has_is_refused_when_its_columns_were_not_declared():
    with pytest.raises(ParamError, match="names column 'id', which the input already has") as info:
        Embed(output_column="id", backend="static").execute(data=Dataset.from_any(
            pl.DataFrame({"id": ["a", "b"], "text": ["print a line", "a text"]}), label="docs.parquet"))
    assert info.value.param == "output_column" and info.value.file == "docs.parquet"


def test_empty_corpus_is_refused():
    with pytest.raises(InputDataError, match="no rows"):
        Embed().apply(pl.DataFrame({"text": pl.Series([], dtype=pl.String)}))


def test_the_manifest_names_the_model_that_made_the_vectors(tmp_path):
    # With `model` unset the params do not say which model embedded; the manifest records its identity.
    import json

    from conftest import write_config

    import pipeline

    config = write_config(tmp_path / "c.yaml", """
name: emb
steps:
  - {id: docs, stage: python_docs, params: {granularity: topic}}
  - {id: e, stage: embed, inputs: docs, params: {backend: static}}
""")
    pipeline.run_pipeline(config, workdir=tmp_path / "runs")
    manifest = json.loads((tmp_path / "runs" / "emb" / "e" / "_manifest.json").read_text())
    assert manifest["params"]["model"] is None
    assert manifest["fingerprint_extra"] == Embed(backend="static").fingerprint_extra()
    assert len(manifest["fingerprint_extra"]["model_identity"]) == 32



def test_a_categorical_text_column_is_embedded_as_its_strings():
    # `pipeline validate` counts Categorical as text; the run refused it ("is Categorical, not text").
    texts = pl.DataFrame({"id": ["a", "b"], "text": PARAGRAPHS[:2]})
    plain = Embed(backend="static").apply(texts)["embedding"].to_numpy()
    categorical = Embed(backend="static").apply(texts.with_columns(pl.col("text").cast(pl.Categorical)))
    assert categorical.schema["text"] == pl.Categorical
    np.testing.assert_array_equal(categorical["embedding"].to_numpy(), plain)
