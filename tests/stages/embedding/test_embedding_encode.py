"""Encoding texts (stages/embedding/encode.py): agreement with sentence-transformers, de-duplication, backends, vector columns."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from embedding_texts import PARAGRAPHS

from pipeline.errors import ParamError, PipelineError
from stages.embedding import (
    Embed,
    embedding_dim,
    encode_texts,
    encode_with_stats,
    load_sentence_transformer,
    series_to_vectors,
    vectors_to_series,
)


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


def test_a_transformer_vector_is_the_same_bits_whatever_shares_its_call(tmp_path):
    # sentence-transformers pads a batch to its longest text, which moved a text's vector by up to 1e-7 with its
    # batch-mates: a warm and a cold cache, or two partitionings, gave different bits. And short texts of one
    # token count took another path through the matrix products alone than with others (up to 3e-7). Now each
    # text's vector is the same bits in any call, and the model's own to float precision.
    from stages.embedding.encode import _token_counts

    st = load_sentence_transformer()
    words = " ".join(PARAGRAPHS).split()
    short = [" ".join(words[i:i + 3]) for i in range(0, 300, 3)]
    counts = _token_counts(st, short)
    common = np.bincount(counts).argmax()
    same_length = [t for t, c in zip(short, counts) if c == common][:4]  # short texts of one token count
    assert len(same_length) == 4
    texts = [PARAGRAPHS[0], same_length[0], PARAGRAPHS[3], same_length[1], PARAGRAPHS[1], *same_length[2:]]
    alone = np.stack([encode_texts([t])[0] for t in texts])
    np.testing.assert_allclose(alone, st.encode(texts, normalize_embeddings=True), atol=1e-6)
    np.testing.assert_array_equal(encode_texts(texts), alone)
    np.testing.assert_array_equal(encode_texts(texts[::-1], batch_size=2), alone[::-1])
    encode_texts(texts[:3], cache_dir=tmp_path / "warm")
    warm, stats = encode_with_stats(texts, cache_dir=tmp_path / "warm")
    assert stats["cache_hits"] == 3 and stats["computed"] == 4
    np.testing.assert_array_equal(warm, alone)


def test_identical_texts_get_identical_vectors_and_are_embedded_once():
    texts = [PARAGRAPHS[0], PARAGRAPHS[1], PARAGRAPHS[0]]
    vectors, stats = encode_with_stats(texts)
    assert stats["unique"] == 2 and stats["computed"] == 2
    np.testing.assert_array_equal(vectors[0], vectors[2])


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


def test_vector_column_round_trip():
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    series = vectors_to_series("v", vectors)
    np.testing.assert_array_equal(series_to_vectors(series), vectors)
    np.testing.assert_array_equal(series_to_vectors(series.slice(1, 2)), vectors[1:3])
    as_list = pl.Series("v", vectors.tolist())
    np.testing.assert_array_equal(series_to_vectors(as_list), vectors)


def test_unknown_backend_and_bad_numbers():
    with pytest.raises(PipelineError, match="backend"):
        Embed.from_params({"backend": "word2vec"})
    with pytest.raises(ParamError, match="batch_size"):
        Embed.from_params({"batch_size": 0})
    with pytest.raises(ParamError, match="backend"):
        encode_texts(["x"], backend="word2vec")


# ------------------------------------------------------------------ arguments a library caller can get wrong


def test_a_bare_string_is_refused_not_split_into_characters(static_models):
    with pytest.raises(TypeError, match=r"texts must be a list of strings, got str; wrap a single text"):
        encode_texts("hello", backend="static")


@pytest.mark.parametrize(("param", "value"), [("batch_size", 2.5), ("batch_size", "8"), ("batch_size", True),
                                              ("max_seq_length", "8"), ("max_seq_length", 8.0)])
def test_non_integer_sizes_are_refused_with_the_parameter_named(static_models, param, value):
    with pytest.raises(ParamError, match=rf"parameter '{param}': expects int, got {value!r}"):
        encode_texts(["a"], backend="static", **{param: value})


def test_a_lone_surrogate_is_refused_with_the_text_position(static_models):
    with pytest.raises(PipelineError, match=r"parameter 'texts': texts\[2\] holds a lone surrogate '\\ud800' at "
                                            r"character 1"):
        encode_texts(["fine", "é too", "a\ud800b"], backend="static")
    with pytest.raises(PipelineError, match=r"texts\[1\] is int, not a string"):
        encode_texts(["fine", 3], backend="static")


def test_cache_dir_with_a_tilde_is_the_home_folder(static_models, tmp_path, monkeypatch):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    first = encode_texts(["a", "b"], backend="static", cache_dir="~/.cache/cf")
    assert not (cwd / "~").exists()
    assert list((home / ".cache" / "cf" / "embeddings").glob("*/shard-*.parquet"))
    np.testing.assert_array_equal(encode_texts(["a", "b"], backend="static", cache_dir="~/.cache/cf"), first)
