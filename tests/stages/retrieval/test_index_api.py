"""`Index.build` / `Index.search` as a library: the metric 'auto' picks, and the arguments it refuses."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from stages.embedding import encode_texts, vectors_to_series
from stages.retrieval import BuildIndex, Index

TEXTS = ["how to open a file in python", "lists are mutable sequences", "dictionaries map keys to values"]


@pytest.fixture(autouse=True)
def _static_model_cache(monkeypatch):
    default = Path.home() / ".cache" / "corpusforge" / "static-models"
    monkeypatch.setenv("CORPUSFORGE_MODEL_CACHE", os.environ.get("CORPUSFORGE_MODEL_CACHE", str(default)))


def _unit(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ------------------------------------------------------------------ metric 'auto'


def test_a_text_the_static_table_cannot_encode_keeps_the_inner_product():
    vectors = encode_texts(TEXTS + ["😀", ""], backend="static")
    assert not vectors[3:].any()  # the static backend's vectors for them are zero (bit-identical to model2vec)
    idx = Index.build(vectors, backend="static")
    assert idx.meta["metric"] == "inner_product"
    found = idx.search(["open a file"], k=2)
    assert found["neighbour_id"].to_list() == [0, 2]  # the zero rows score 0, below both
    assert found["score"].to_list()[0] > 0.5  # a cosine, not -L2^2


def test_the_index_stage_keeps_the_inner_product_with_zero_rows(tmp_path):
    vectors = encode_texts(TEXTS + ["😀"], backend="static")
    df = pl.DataFrame({"id": ["a", "b", "c", "d"]}).with_columns(vectors_to_series("embedding", vectors))
    result = BuildIndex(id_column="id", doc_column=None, backend="static").execute(df, workdir=tmp_path / "i")
    assert result.stats["metric"] == "inner_product"


@pytest.mark.parametrize("where", [0, 1500])
def test_metric_auto_reads_every_vector_not_the_first_thousand(where):
    vectors = _unit(2000)
    vectors[where] *= 3.0  # one vector that is neither unit nor zero, early or late
    assert Index.build(vectors).meta["metric"] == "l2"
    vectors[where] = 0.0
    assert Index.build(vectors).meta["metric"] == "inner_product"


def test_save_and_load_expand_a_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    vectors = _unit(20)
    Index.build(vectors).save("~/idx")
    assert (tmp_path / "home" / "idx").is_dir() and not (tmp_path / "~").exists()
    assert Index.load("~/idx").search(vectors[:1], k=1)["neighbour_id"].to_list() == [0]
