"""The `embed` stage and encode_texts: both backends, the content-addressed cache, and bad input."""

from __future__ import annotations

import os
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import polars as pl
import pytest

from pipeline.errors import InputDataError, ParamError, PipelineError
from stages.embedding import (
    Embed,
    embedding_dim,
    encode_texts,
    encode_with_stats,
    load_sentence_transformer,
    series_to_vectors,
    vectors_to_series,
)

# Paragraphs of the Python language reference: real technical prose that ships with Python.
PARAGRAPHS = [
    p.strip() for _, body in sorted(topics.items()) for p in body.split("\n\n") if len(p.strip()) > 80
]


@pytest.fixture()
def static_models(monkeypatch):
    """Distilled tables are machine-wide (distilling takes a minute on 2 cores); the data cache stays isolated."""
    where = Path(os.environ.get("CORPUSFORGE_MODEL_CACHE", Path.home() / ".cache" / "corpusforge" / "static-models"))
    monkeypatch.setenv("CORPUSFORGE_MODEL_CACHE", str(where))
    return where


def test_transformer_vectors_match_sentence_transformers_encode():
    texts = PARAGRAPHS[:6]
    ours = encode_texts(texts)
    direct = load_sentence_transformer().encode(texts, normalize_embeddings=True)
    assert ours.dtype == np.float32 and ours.shape == (6, 384) == (6, embedding_dim())
    np.testing.assert_allclose(ours, direct, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_identical_texts_get_identical_vectors_and_are_embedded_once():
    texts = [PARAGRAPHS[0], PARAGRAPHS[1], PARAGRAPHS[0]]
    vectors, stats = encode_with_stats(texts)
    assert stats["unique"] == 2 and stats["computed"] == 2
    np.testing.assert_array_equal(vectors[0], vectors[2])


def test_cache_computes_only_new_texts(tmp_path):
    first, first_stats = encode_with_stats(PARAGRAPHS[:10], cache_dir=tmp_path)
    assert first_stats["computed"] == 10 and first_stats["cache_hits"] == 0
    # The next generation: 10 old texts, 3 new ones, in another order.
    texts = PARAGRAPHS[10:13] + PARAGRAPHS[:10][::-1]
    again, stats = encode_with_stats(texts, cache_dir=tmp_path)
    assert stats["cache_hits"] == 10 and stats["computed"] == 3
    np.testing.assert_allclose(again[3:], first[::-1], atol=0)
    np.testing.assert_allclose(again[:3], encode_texts(PARAGRAPHS[10:13]), atol=1e-5)
    # The width is remembered, so a fully cached corpus is served without loading the model.
    assert [p.name for p in tmp_path.glob("embeddings/*/meta.json")] == ["meta.json"]


def test_cache_is_keyed_by_settings(tmp_path):
    encode_texts(PARAGRAPHS[:5], cache_dir=tmp_path)
    truncated, stats = encode_with_stats(PARAGRAPHS[:5], max_seq_length=8, cache_dir=tmp_path)
    assert stats["computed"] == 5  # a different max_seq_length must not reuse full-length vectors
    assert not np.allclose(truncated, encode_texts(PARAGRAPHS[:5]), atol=1e-3)


def test_static_backend_is_unit_length_and_agrees_with_transformer(static_models):
    texts = PARAGRAPHS[:40]
    static = encode_texts(texts, backend="static")
    assert static.shape == (40, embedding_dim("static")) and static.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(static, axis=1), 1.0, atol=1e-5)
    assert any(static_models.glob("*/vectors.npy")), "the distilled table is kept on disk"
    # Same neighbourhood structure as the teacher (bench_retrieval measures retrieval agreement).
    dense = encode_texts(texts)
    iu = np.triu_indices(40, 1)
    corr = np.corrcoef((static @ static.T)[iu], (dense @ dense.T)[iu])[0, 1]
    assert corr > 0.2


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


def test_vector_column_round_trip():
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    series = vectors_to_series("v", vectors)
    np.testing.assert_array_equal(series_to_vectors(series), vectors)
    np.testing.assert_array_equal(series_to_vectors(series.slice(1, 2)), vectors[1:3])
    as_list = pl.Series("v", vectors.tolist())
    np.testing.assert_array_equal(series_to_vectors(as_list), vectors)


# ------------------------------------------------------------------ bad input


def test_missing_text_column_names_the_column():
    with pytest.raises(InputDataError, match="no column 'body'"):
        Embed(text_column="body").apply(pl.DataFrame({"text": ["a"]}))


def test_null_texts_are_refused():
    with pytest.raises(InputDataError, match="null"):
        Embed().apply(pl.DataFrame({"text": ["print a line", None]}))


def test_empty_corpus_is_refused():
    with pytest.raises(InputDataError, match="no rows"):
        Embed().apply(pl.DataFrame({"text": pl.Series([], dtype=pl.String)}))


def test_model_path_that_does_not_exist():
    with pytest.raises(ParamError, match="does not exist") as err:
        Embed.from_params({"model": "/nonexistent/minilm"})
    assert err.value.param == "model"


def test_model_path_that_is_not_a_sentence_transformer(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ParamError, match="not a sentence-transformers model"):
        encode_texts(["x"], model=str(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "modules.json").write_text("[]")
    with pytest.raises(ParamError, match="could not be loaded"):
        encode_texts(["x"], model=str(broken))


def test_unknown_backend_and_bad_numbers():
    with pytest.raises(PipelineError, match="backend"):
        Embed.from_params({"backend": "word2vec"})
    with pytest.raises(ParamError, match="batch_size"):
        Embed.from_params({"batch_size": 0})
    with pytest.raises(ParamError, match="backend"):
        encode_texts(["x"], backend="word2vec")


def test_packaged_model_alias_resolves_offline():
    from stages.embedding import packaged_model_path, resolve_model_path

    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == packaged_model_path()
    assert Path(packaged_model_path(), "modules.json").is_file()
