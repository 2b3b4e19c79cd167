"""Chunking, FAISS indexes and retrieval: recall against exact search, RETRO's exclusions, bad input."""

from __future__ import annotations

import os
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import polars as pl
import pytest

from pipeline.errors import InputDataError, ParamError, PipelineError
from stages.embedding import encode_texts, series_to_vectors, vectors_to_series
from stages.retrieval import BuildIndex, Chunk, Index, Retrieve, auto_factory
from stages.text import chunk_spans, model_tokenizer

DOCS = pl.DataFrame({"id": sorted(topics), "text": [topics[k] for k in sorted(topics)]})


def paragraphs() -> list[str]:
    """Paragraphs of the Python reference (ships with Python): short and long real prose."""
    return [p.strip() for k in sorted(topics) for p in topics[k].split("\n\n") if p.strip()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The Python docs, chunked and embedded with the static backend (fast enough for every test)."""
    default = Path.home() / ".cache" / "corpusforge" / "static-models"
    with pytest.MonkeyPatch.context() as mp:
        # Distilling takes a minute on 2 cores: do it once per machine, not once per test session.
        mp.setenv("CORPUSFORGE_MODEL_CACHE", os.environ.get("CORPUSFORGE_MODEL_CACHE", str(default)))
        chunks = Chunk().apply(DOCS)
        vectors = encode_texts(chunks["text"].to_list(), backend="static")
        yield chunks.with_columns(vectors_to_series("embedding", vectors))


def _index_dir(corpus, tmp_path, **params) -> Path:
    BuildIndex(backend="static", **params).execute(corpus, workdir=tmp_path / "index")
    return tmp_path / "index"


# ------------------------------------------------------------------ chunking


def chunk_texts(texts, size=64, overlap=0, tokenizer="model"):
    """Per text, its chunks as (char_start, char_end, n_tokens), from the text core's flat spans."""
    spans = chunk_spans(texts, size, overlap, tokenizer)
    out = [[] for _ in texts]
    for d, a, b, n in zip(spans.doc.tolist(), spans.char_start.tolist(), spans.char_end.tolist(),
                          spans.n_tokens.tolist()):
        out[d].append((a, b, n))
    return out


def test_whitespace_chunks_cover_every_word_once():
    for text in paragraphs()[:200]:
        spans = chunk_texts([text], size=16, tokenizer="whitespace")[0]
        words = text.split()
        assert sum(n for _, _, n in spans) == len(words)
        assert all(n <= 16 for _, _, n in spans)
        assert " ".join(text[a:b] for a, b, _ in spans).split() == words


def test_overlapping_chunks_share_exactly_overlap_tokens():
    text = next(p for p in paragraphs() if 30 <= len(p.split()) <= 60) * 3
    words = text.split()
    spans = chunk_texts([text], size=10, overlap=4, tokenizer="whitespace")[0]
    chunks = [text[a:b].split() for a, b, _ in spans]
    for before, after in zip(chunks, chunks[1:]):
        assert before[-4:] == after[:4]
    assert chunks[-1][-1] == words[-1]
    assert not set(range(len(chunks) - 1)) & {i for i, c in enumerate(chunks) if len(c) < 10}


def test_model_tokenizer_counts_word_pieces():
    text = topics["assert"]
    spans = chunk_texts([text, "", "   "], size=64)
    assert spans[1] == [] and spans[2] == []
    tok = model_tokenizer()
    total = len(tok.encode(text, add_special_tokens=False).ids)
    assert sum(n for _, _, n in spans[0]) == total
    assert [n for _, _, n in spans[0][:-1]] == [64] * (len(spans[0]) - 1)
    # A chunk's text re-tokenises to (about) its count: the offsets cut at word-piece boundaries.
    a, b, n = spans[0][0]
    assert abs(len(tok.encode(text[a:b], add_special_tokens=False).ids) - n) <= 1


def test_chunk_stage_rows_point_back_into_documents():
    docs = DOCS.head(5).with_columns(pl.lit("train").alias("split"))
    out = Chunk(size=32, overlap=8, keep_columns=["split"]).apply(docs)
    assert out.columns == ["chunk_id", "doc_id", "chunk_index", "char_start", "char_end", "text", "n_tokens", "split"]
    texts = dict(zip(docs["id"], docs["text"]))
    for row in out.head(40).iter_rows(named=True):
        assert texts[row["doc_id"]][row["char_start"]:row["char_end"]] == row["text"]
        assert row["chunk_id"] == f"{row['doc_id']}:{row['chunk_index']}"
    assert out["chunk_id"].n_unique() == out.height
    assert out["n_tokens"].max() == 32


def test_chunk_texts_are_the_documents_characters_between_the_offsets():
    # Offsets count characters, not bytes: emoji, CJK and accents before a chunk must not shift it.
    docs = pl.DataFrame({"id": ["a", "b", "c"], "text": [
        "🎉 café 日本語のテキスト " * 40, "", " ".join(f"w{i}" for i in range(500))]})
    out = Chunk(size=7, overlap=2, tokenizer="whitespace").apply(docs)
    texts = dict(zip(docs["id"], docs["text"]))
    assert set(out["doc_id"]) == {"a", "c"}
    for row in out.iter_rows(named=True):
        assert row["text"] == texts[row["doc_id"]][row["char_start"]:row["char_end"]]
        assert len(row["text"].split()) == row["n_tokens"]


def test_chunk_bad_params_and_input():
    with pytest.raises(ParamError, match="overlap"):
        Chunk.from_params({"size": 16, "overlap": 16})
    with pytest.raises(ParamError, match="size"):
        Chunk.from_params({"size": 0})
    with pytest.raises(InputDataError, match="no column 'body'"):
        Chunk(text_column="body").apply(DOCS)
    with pytest.raises(InputDataError, match="no rows"):
        Chunk().apply(DOCS.head(0))


@pytest.mark.parametrize("keep", [["text"], ["chunk_id"], ["split", "split"]])
def test_chunk_refuses_keep_columns_that_clash(keep):
    with pytest.raises(ParamError, match="named twice or is one of the chunk's own columns") as info:
        Chunk.from_params({"tokenizer": "whitespace", "keep_columns": keep})
    assert info.value.param == "keep_columns"


@pytest.mark.parametrize("ids, words", [(["a", None, "c"], "1 null ids"), (["a", "b", "a"], "duplicate ids")])
def test_chunk_refuses_null_or_repeated_ids(ids, words):
    docs = pl.DataFrame({"id": ids, "text": ["one two", "three", "four five"]})
    with pytest.raises(InputDataError, match=words) as info:  # else chunk_ids repeat or are null
        Chunk(tokenizer="whitespace", size=8).apply(docs)
    assert info.value.param == "id_column" and "column 'id'" in str(info.value)


def test_chunk_refuses_null_texts_and_gives_empty_ones_no_chunks(tmp_path):
    # A null text was read as '' and its document left the index without a word (exit 0).
    from cli_failures import fails_cleanly

    docs = tmp_path / "docs.parquet"
    pl.DataFrame({"id": ["a", "b", "c"], "text": ["one two three", None, "four five"]}).write_parquet(docs)
    proc = fails_cleanly(tmp_path, f"""
name: bad
steps:
  - id: chunks
    stage: chunk
    inputs: {docs}
    params: {{size: 4, tokenizer: whitespace}}
""", "step 'chunks' (stage 'chunk'), parameter 'text_column'", f"file '{docs}'", "column 'text' has 1 null texts")
    assert len(proc.stderr.strip().splitlines()) == 1
    empty = pl.DataFrame({"id": ["a", "b"], "text": ["one two three", ""]})
    assert Chunk(tokenizer="whitespace", size=4).apply(empty)["doc_id"].to_list() == ["a"]


def test_retrieve_refuses_a_negative_mmap_threshold_at_validate(tmp_path):
    # A negative threshold passed validate (it memory-maps every index, as 0 says plainly).
    from cli_failures import refused_by_validate

    message = refused_by_validate(tmp_path / "bad.yaml", """
name: bad
steps:
  - id: src
    stage: test_random_rows
    params: {n: 3}
  - id: hits
    stage: retrieve
    inputs: {queries: src, index: src}
    params: {mmap_threshold_mb: -1}
""")
    assert message.endswith("step 'hits' (stage 'retrieve'), parameter 'mmap_threshold_mb', file "
                            f"'{tmp_path / 'bad.yaml'}': must be >= 0, got -1"), message
    assert Retrieve(mmap_threshold_mb=0).mmap_threshold_mb == 0


# ------------------------------------------------------------------ index and recall


def test_exact_index_finds_every_chunk_itself(corpus, tmp_path):
    """recall@1 = 1.0: each chunk's nearest neighbour is itself (up to exact score ties)."""
    index_dir = _index_dir(corpus, tmp_path)
    idx = Index.load(index_dir)
    assert idx.meta["factory"] == "Flat" and idx.meta["metric"] == "inner_product"
    hits = Retrieve(k=1).apply(corpus, index=index_dir)
    assert hits.height == corpus.height
    row_of = {cid: i for i, cid in enumerate(corpus["chunk_id"])}
    vectors = series_to_vectors(corpus["embedding"])
    query_rows = np.array([row_of[q] for q in hits["query_id"]])
    top_rows = np.array([row_of[n] for n in hits["neighbour_id"]])
    is_self = query_rows == top_rows
    # Where the top hit is another chunk, it ties with the chunk itself: repeated text, or (static
    # vectors are token means) table borders made of the same '-' and '+' tokens.
    self_score = (vectors[query_rows] * vectors[query_rows]).sum(axis=1)
    ties = hits["score"].to_numpy() >= self_score - 1e-5
    assert (is_self | ties).all()
    assert is_self.mean() > 0.95


@pytest.mark.parametrize("factory", ["IVF32,Flat", "HNSW32"])
def test_approximate_indexes_reach_recall_target_on_real_vectors(corpus, factory):
    vectors = series_to_vectors(corpus["embedding"])
    exact = Index.build(vectors, index_type="Flat")
    approx = Index.build(vectors, index_type=factory, seed=1)
    _, truth = exact.search_raw(vectors, 10)
    _, found = approx.search_raw(vectors, 10)
    recall = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(found, truth)])
    assert recall >= 0.95
    assert approx.meta["calibrated_recall_at_10"] >= 0.95



def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(a, b)) / truth.shape[1] for a, b in zip(found, truth)]))


def test_refine_tier_lifts_pq_recall_on_real_vectors(corpus, tmp_path):
    """IVF-PQ with 4-bit codes finds a quarter of the true top 10; re-ranked on 8-bit copies, the target."""
    vectors = series_to_vectors(corpus["embedding"])
    _, truth = Index.build(vectors, index_type="Flat").search_raw(vectors, 10)
    plain = Index.build(vectors, index_type="IVF16,PQ16x4", seed=1)
    refined = Index.build(vectors, index_type="IVF16,PQ16x4", seed=1, refine="sq8")
    recall_plain, recall_refined = (_recall(i.search_raw(vectors, 10)[1], truth) for i in (plain, refined))
    assert recall_plain < 0.5 and recall_refined >= 0.9
    assert refined.meta["calibrated_recall_at_10"] >= 0.9 and refined.meta["refine"] == "sq8"
    refined.set_k_factor(1)  # (what retrieve's k_factor does) re-ranking only the k PQ best adds nothing
    assert _recall(refined.search_raw(vectors, 10)[1], truth) < recall_refined
    with pytest.raises(ParamError, match="k_factor"):
        plain.set_k_factor(8)
    with pytest.raises(ParamError, match="refine"):
        Index.build(vectors, index_type="IVF16,Flat", refine="sq8")


def test_refined_calibration_probes_the_fewest_lists(corpus):
    """nprobe is calibrated with the most candidates re-ranked, then k_factor lowered at that nprobe: the
    fewest lists probed of any k_factor, and no calibration search probes more lists than it chooses
    (calibrating nprobe at each k_factor in turn probed every list whenever a k_factor fell short)."""
    import faiss

    from stages.retrieval.index import calibrate_refined
    from stages.retrieval.refine import REFINE_K_FACTORS

    vectors = series_to_vectors(corpus["embedding"])
    queries = vectors[:300]
    _, truth = Index.build(vectors, index_type="Flat").search_raw(queries, 10)
    refined = Index.build(vectors, index_type="IVF64,PQ16x4", seed=1, refine="sq8")
    probed: list[tuple[int, int]] = []

    class Watched:  # records the (nprobe, k_factor) of every calibration search
        def __init__(self, index):
            self.index = index

        def __getattr__(self, name):
            return getattr(self.index, name)

        def search(self, queries, k):
            probed.append((faiss.extract_index_ivf(self.index).nprobe, int(faiss.downcast_index(self.index).k_factor)))
            return self.index.search(queries, k)

    params, recall = calibrate_refined(Watched(refined.index), queries, truth, 10, 0.9)
    assert recall >= 0.9 and max(n for n, _ in probed) == params["nprobe"]

    def recall_at(nprobe: int, k_factor: int) -> float:
        faiss.ParameterSpace().set_index_parameter(refined.index, "nprobe", nprobe)
        faiss.ParameterSpace().set_index_parameter(refined.index, "k_factor_rf", k_factor)
        return _recall(refined.index.search(queries, 10)[1], truth)

    assert recall_at(params["nprobe"], params["k_factor_rf"]) == pytest.approx(recall)
    fewest = min(next((p for p in (1, 2, 4, 8, 16, 32, 64) if recall_at(p, kf) >= 0.9), 64) for kf in REFINE_K_FACTORS)
    assert params["nprobe"] == fewest
    smaller = [kf for kf in REFINE_K_FACTORS if kf < params["k_factor_rf"]]
    assert all(recall_at(params["nprobe"], kf) < 0.9 for kf in smaller)


def test_retrieve_k_factor_needs_a_refined_index(corpus, tmp_path):
    index_dir = _index_dir(corpus, tmp_path, index_type="IVF16,PQ16x4", refine="fp16")
    assert Retrieve(k=3, k_factor=2).apply(corpus.head(20), index=index_dir).height == 60
    plain_dir = _index_dir(corpus, tmp_path / "plain", index_type="IVF16,PQ16x4")
    with pytest.raises(ParamError, match="k_factor"):
        Retrieve(k=3, k_factor=2).apply(corpus.head(20), index=plain_dir)

def test_approximate_index_on_clustered_random_vectors():
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((200, 64)).astype(np.float32)
    vectors = centres[rng.integers(0, 200, 20_000)] + 0.35 * rng.standard_normal((20_000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(20_000, 300, replace=False)]
    approx = Index.build(vectors, index_type="IVF128,Flat", seed=0)
    assert "nprobe" in approx.meta["search_params"]
    _, truth = Index.build(vectors, index_type="Flat").search_raw(queries, 10)
    _, found = approx.search_raw(queries, 10)
    assert np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(found, truth)]) >= 0.95


def test_auto_factory_follows_collection_size():
    assert auto_factory(2_000, 384) == "Flat"
    assert auto_factory(1_000_000, 384) == "IVF4096,Flat"
    assert auto_factory(10_000_000, 384).endswith(",PQ96x8")


def test_saved_index_loads_memory_mapped_with_same_answers(corpus, tmp_path):
    index_dir = _index_dir(corpus, tmp_path)
    queries = series_to_vectors(corpus["embedding"].head(50))
    in_ram = Index.load(index_dir, mmap=False).search(queries, k=5)
    mapped = Index.load(index_dir, mmap_threshold_mb=0)
    assert mapped.meta["memory_mapped"]
    assert mapped.search(queries, k=5).equals(in_ram)


def test_library_search_by_text(corpus, tmp_path):
    idx = Index.load(_index_dir(corpus, tmp_path, keep_columns=["text"]))
    query = corpus.filter(pl.col("doc_id") == "assert")["text"][0]
    hits = idx.search([query], k=3)
    assert hits.columns == ["query_id", "rank", "neighbour_id", "neighbour_doc_id", "score"]
    assert hits["rank"].to_list() == [0, 1, 2]
    assert hits["neighbour_doc_id"][0] == "assert"
    assert hits["score"].is_sorted(descending=True)


# ------------------------------------------------------------------ retrieve


def test_retrieve_excludes_the_query_document_and_applies_the_floor(corpus, tmp_path):
    index_dir = _index_dir(corpus, tmp_path)
    out = Retrieve(k=5, exclude_same_doc=True, min_score=0.5).apply(corpus.head(300), index=index_dir)
    assert out.columns == ["query_id", "rank", "neighbour_id", "neighbour_doc_id", "score"]
    query_docs = corpus.select(pl.col("chunk_id").alias("query_id"), pl.col("doc_id").alias("qdoc"))
    joined = out.join(query_docs, on="query_id")
    assert (joined["qdoc"] != joined["neighbour_doc_id"]).all()
    assert (out["score"] >= 0.5).all()
    ranks = out.group_by("query_id").agg(pl.col("rank"))
    assert all(r == list(range(len(r))) for r in ranks["rank"].to_list())
    assert out.group_by("query_id").len()["len"].max() == 5


def test_retrieve_text_queries_use_the_index_encoder(corpus, tmp_path):
    index_dir = _index_dir(corpus, tmp_path)
    queries = corpus.select("chunk_id", "doc_id", "text").head(20)
    by_text = Retrieve(k=3, query_column="text").apply(queries, index=index_dir)
    by_vector = Retrieve(k=3).apply(corpus.head(20), index=index_dir)
    assert by_text.select("query_id", "neighbour_id").equals(by_vector.select("query_id", "neighbour_id"))


def test_dimension_mismatch_is_a_clear_error(corpus, tmp_path):
    index_dir = _index_dir(corpus, tmp_path)
    wrong = corpus.head(3).with_columns(vectors_to_series("embedding", np.ones((3, 384), np.float32)))
    with pytest.raises(InputDataError, match="384-d vectors but the index holds 256-d"):
        Retrieve(k=2).apply(wrong, index=index_dir)
    # From a file, the one line names it (the engine adds a map's partition file to its errors).
    wrong.write_parquet(tmp_path / "queries.parquet")
    with pytest.raises(InputDataError, match="384-d vectors") as err:
        Retrieve(k=2).apply(str(tmp_path / "queries.parquet"), index=index_dir)
    assert err.value.file == str(tmp_path / "queries.parquet") and err.value.param == "query_column"


def test_factory_string_faiss_refuses(corpus, tmp_path):
    with pytest.raises(ParamError, match="FAISS refuses the factory string 'IVF12,PQ7'") as err:
        BuildIndex(index_type="IVF12,PQ7").apply(corpus)
    assert err.value.param == "index_type"
    with pytest.raises(ParamError, match="index_type"):
        BuildIndex(index_type="Sparkly42").apply(corpus)


def test_index_bad_input():
    with pytest.raises(InputDataError, match="no column 'embedding'"):
        BuildIndex().apply(DOCS.rename({"id": "chunk_id"}).with_columns(doc_id=pl.col("chunk_id")))
    not_vectors = pl.DataFrame({"chunk_id": ["a"], "doc_id": ["a"], "embedding": ["text"]})
    with pytest.raises(InputDataError, match="not an embedding"):
        BuildIndex().apply(not_vectors)
    nan = pl.DataFrame({"chunk_id": ["a", "b"], "doc_id": ["a", "b"]}).with_columns(
        vectors_to_series("embedding", np.array([[1, 0], [np.nan, 1]], np.float32)))
    with pytest.raises(InputDataError, match="NaN or infinite") as err:
        BuildIndex().apply(nan)
    assert err.value.param == "embedding_column"
    with pytest.raises(PipelineError, match="recall_target"):
        BuildIndex.from_params({"recall_target": 1.5})


def test_retrieve_needs_an_index_step(corpus):
    with pytest.raises(InputDataError, match="index"):
        Retrieve().apply(corpus.head(3), index=corpus.select("chunk_id").with_row_index("faiss_id"))


def test_pipeline_end_to_end(tmp_path):
    from pipeline.runner import run_pipeline

    config = {
        "name": "retrieval-test", "seed": 1,
        "steps": [
            {"id": "docs", "stage": "python_docs", "params": {}},
            {"id": "chunks", "stage": "chunk", "inputs": "docs", "params": {"size": 64}},
            {"id": "emb", "stage": "embed", "inputs": "chunks", "params": {"backend": "static"}},
            {"id": "index", "stage": "index", "inputs": "emb", "params": {"backend": "static"}},
            {"id": "nn", "stage": "retrieve", "inputs": {"queries": "emb", "index": "index"},
             "params": {"k": 4, "exclude_same_doc": True}},
        ],
    }
    run_pipeline(config, workdir=tmp_path)
    run_dir = tmp_path / "retrieval-test"
    assert (run_dir / "index" / "index.faiss").is_file()
    nn = pl.read_parquet(run_dir / "nn" / "part-*.parquet")
    chunks = pl.read_parquet(run_dir / "chunks" / "part-*.parquet")
    assert nn.height == 4 * chunks.height
    hits = Index.load(run_dir / "index").search(["How are exceptions raised and caught?"], k=5)
    assert hits.height == 5


def test_refine_of_an_uncompressed_factory_is_refused_before_any_work():
    for factory in ("IVF16,Flat", "HNSW32", "Flat"):
        with pytest.raises(ParamError, match="refine"):
            BuildIndex(index_type=factory, refine="sq8").validate()
    BuildIndex(index_type="IVF16,PQ8x8", refine="sq8").validate()
    BuildIndex(index_type="auto", refine="sq8").validate()  # auto adds refine only where it picks IVF-PQ


@pytest.mark.parametrize("ids, words", [(["e0", "e1", "e0"], "duplicate ids"), (["e0", None, "e2"], "1 null ids")])
def test_index_refuses_repeated_or_null_ids(ids, words):
    # Each vector is reported by its id: two vectors named e0 came back as the same neighbour_id (exit 0).
    from stages.retrieval import BuildIndex

    vectors = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    data = pl.DataFrame({"chunk_id": ids, "doc_id": ["d0", "d1", "d2"]}).with_columns(vectors_to_series("embedding", vectors))
    with pytest.raises(InputDataError, match=words) as info:
        BuildIndex(index_type="Flat").apply(data)
    assert info.value.param == "id_column"
