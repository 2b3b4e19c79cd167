"""`Index.build` / `Index.search` as a library: the metric 'auto' picks, and the arguments it refuses."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.errors import InputDataError, ParamError, PipelineError
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


@pytest.mark.parametrize("damage", ["overwritten", "truncated", "another build"])
def test_a_damaged_index_folder_is_refused_naming_the_file(tmp_path, damage):
    # Before: FAISS's RuntimeError (exit 1 on the CLI), or, for files of two builds, wrong neighbours.
    Index.build(_unit(40)).save(tmp_path / "idx")
    index_file = tmp_path / "idx" / "index.faiss"
    if damage == "overwritten":
        index_file.write_bytes(b"garbage" * 100)
    elif damage == "truncated":
        index_file.write_bytes(index_file.read_bytes()[:100])
    else:
        Index.build(_unit(10)).save(tmp_path / "other")
        index_file.write_bytes((tmp_path / "other" / "index.faiss").read_bytes())
    with pytest.raises(InputDataError, match="rebuild") as err:
        Index.load(tmp_path / "idx")
    assert err.value.file in (str(index_file), str(tmp_path / "idx"))
    if damage == "another build":
        assert "holds 10 vectors but index_ids.parquet names 40" in str(err.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mmap_threshold_mb": -1}, "parameter 'mmap_threshold_mb': must be >= 0, got -1"),
    ({"mmap": "yes"}, "parameter 'mmap': expects True, False or None"),
])
def test_load_refuses_the_settings_the_retrieve_stage_refuses(tmp_path, kwargs, message):
    Index.build(_unit(20)).save(tmp_path / "idx")
    with pytest.raises(ParamError, match=message.replace("(", r"\(")):
        Index.load(tmp_path / "idx", **kwargs)
    # 0 is allowed and means always: the small index is memory-mapped, which the default threshold does not do.
    assert Index.load(tmp_path / "idx", mmap_threshold_mb=0).meta["memory_mapped"] is True
    assert Index.load(tmp_path / "idx").meta["memory_mapped"] is False


def test_an_index_of_supplied_vectors_records_no_encoder_and_refuses_text_queries(tmp_path):
    # Before: it recorded backend 'sentence-transformers' and embedded text queries with MiniLM, whatever made the
    # vectors (384-d vectors of another model were searched with MiniLM's queries, silently).
    Index.build(_unit(20, dim=384)).save(tmp_path / "idx")
    idx = Index.load(tmp_path / "idx")
    assert idx.meta["backend"] is None and idx.meta["model"] is None
    assert idx.search(_unit(20, dim=384)[:1], k=1)["neighbour_id"].to_list() == [0]  # vectors: as before
    with pytest.raises(ParamError, match=r"parameter 'backend': this index records no encoder"):
        idx.search(["open a file"], k=1)
    assert Index.build(_unit(20), backend="static").meta["backend"] == "static"


# ------------------------------------------------------------------ arguments refused, with the parameter named

V = _unit(50)
IDS = [f"c{i}" for i in range(50)]
DOCS = [f"d{i // 5}" for i in range(50)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ids": IDS + ["x", "y"]}, r"parameter 'ids': has 52 values for 50 vectors"),
    ({"ids": IDS[:10]}, r"parameter 'ids': has 10 values for 50 vectors"),
    ({"ids": IDS, "doc_ids": ["d0", "d1", "d2"]}, r"parameter 'doc_ids': has 3 values for 50 vectors"),
    ({"recall_target": 2}, r"parameter 'recall_target': must be in \(0, 1\], got 2"),
    ({"metric": "cosine"}, r"parameter 'metric': expects 'auto' \| 'inner_product' \| 'l2', got 'cosine'"),
])
def test_build_refuses_arguments_that_do_not_fit_the_vectors(kwargs, message):
    with pytest.raises(PipelineError, match=message):
        Index.build(V, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_build_and_search_refuse_non_finite_vectors(bad):
    broken = V.copy()
    broken[3, 0] = bad
    with pytest.raises(InputDataError, match=r"parameter 'vectors': vectors has NaN or infinite values in 1 vector"):
        Index.build(broken)
    with pytest.raises(InputDataError, match=r"parameter 'queries': queries has NaN or infinite values"):
        Index.build(V).search(broken[2:4], k=3)


def test_build_and_search_refuse_rows_of_different_lengths_naming_the_argument():
    # A list of lists with a short row failed in NumPy ("setting an array element with a sequence"), naming nothing.
    ragged = [[1.0, 2.0, 3.0], [1.0, 2.0]]
    with pytest.raises(InputDataError, match=r"parameter 'vectors': vectors must be numbers, one row of the same"):
        Index.build(ragged)
    with pytest.raises(InputDataError, match=r"parameter 'queries': queries must be numbers, one row of the same"):
        Index.build(V).search([list(V[0]), list(V[1][:3])], k=2)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"k": 2.5}, ParamError, r"parameter 'k': expects int, got 2.5 \(float\)"),
    ({"k": "3"}, ParamError, r"parameter 'k': expects int, got '3' \(str\)"),
    ({"k": True}, ParamError, r"parameter 'k': expects int, got True \(bool\)"),
    ({"k": 0}, ParamError, r"parameter 'k': must be at least 1, got 0"),
    ({"min_score": float("nan")}, ParamError, r"parameter 'min_score': must not be NaN"),
    ({"query_ids": ["q"]}, ParamError, r"parameter 'query_ids': has 1 values for 3 queries"),
    ({"exclude_doc_ids": ["d0"]}, ParamError, r"parameter 'exclude_doc_ids': has 1 values for 3 queries"),
])
def test_search_refuses_arguments_with_the_parameter_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        Index.build(V, ids=IDS, doc_ids=DOCS).search(V[:3], **{"k": 2, **kwargs})


def test_excluding_documents_needs_an_index_built_with_them():
    with pytest.raises(ParamError, match=r"parameter 'exclude_doc_ids': this index was built without doc_ids"):
        Index.build(V, ids=IDS).search(V[:1], k=3, exclude_doc_ids=["c0"])


def test_a_bare_string_query_is_refused_and_no_queries_find_nothing():
    idx = Index.build(V, ids=IDS, doc_ids=DOCS)
    with pytest.raises(TypeError, match=r"queries must be a list of strings, got str"):
        idx.search("how do I open a file", k=2)
    empty = idx.search([], k=2)
    assert empty.height == 0 and empty.columns == ["query_id", "rank", "neighbour_id", "neighbour_doc_id", "score"]


# ------------------------------------------------------------------ chunk_texts (the README's retrieval example)


def test_chunk_texts_cuts_as_the_chunk_stage_does():
    from pydoc_data.topics import topics

    from stages.retrieval import Chunk, chunk_texts

    names = sorted(topics)[:5]
    docs = [topics[k] for k in names]
    expected = Chunk(size=32, overlap=8).apply(pl.DataFrame({"id": names, "text": docs}))
    assert chunk_texts(docs, size=32, overlap=8, ids=names).equals(expected)
    by_position = chunk_texts(docs[:2], size=32, tokenizer="whitespace")
    assert by_position["doc_id"].unique().sort().to_list() == [0, 1]
    assert chunk_texts([], size=32).columns == expected.columns
    with pytest.raises(TypeError, match="texts must be a list of strings"):
        chunk_texts(docs[0])
    with pytest.raises(ParamError, match="parameter 'ids': has 1 values for 2 texts"):
        chunk_texts(docs[:2], ids=["one"])


def test_readme_retrieval_example_runs_as_written(tmp_path, monkeypatch):
    """The README's chunk -> encode -> Index.build -> search lines, verbatim (static backend for speed)."""
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    start = readme.index("from stages.embedding import encode_texts             #")
    code = readme[start:readme.index("```", start)]
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(code.replace('cache_dir="~/.cache/corpusforge")', 'cache_dir="~/.cache/corpusforge", backend="static")')
         .replace('backend="sentence-transformers")', 'backend="static")')
         .replace('idx.search(["how do I open a file?"], k=5)', 'found = idx.search(["how do I open a file?"], k=5)'),
         scope)
    assert scope["found"]["neighbour_doc_id"][0] == 0 and not (tmp_path / "~").exists()
