"""Bad input to `index` and `retrieve` from a config: one line, exit 2, the step, parameter and file named."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from cli_failures import fails_cleanly, refused_by_validate
from conftest import run_cli, write_config

from pipeline.errors import ParamError
from stages.embedding import vectors_to_series
from stages.retrieval import BuildIndex, Index
from stages.retrieval.retrieve import Retrieve


def _queries(path, **columns) -> str:
    """Four unit 4-d query vectors with chunk and doc ids (each column replaceable), written to `path`."""
    frame = pl.DataFrame({"chunk_id": ["c0", "c1", "c2", "c3"], "doc_id": ["d0", "d0", "d1", "d1"]})
    frame = frame.with_columns(vectors_to_series("embedding", np.eye(4, dtype=np.float32)))
    frame.with_columns(**{k: pl.Series(v) for k, v in columns.items()}).write_parquet(path)
    return str(path)


def _index(folder) -> str:
    Index.build(np.eye(4, dtype=np.float32), ids=["c0", "c1", "c2", "c3"], doc_ids=["d0", "d0", "d1", "d1"],
                index_type="Flat").save(folder)
    return str(folder)


def _index_step(data, params) -> str:
    """A config of one `index` step (id idx) over `data`."""
    return f"""
name: bad
steps:
  - id: idx
    stage: index
    inputs: {data}
    params: {params}
"""


def _retrieve(queries, index, params) -> str:
    return f"""
name: bad
steps:
  - id: hits
    stage: retrieve
    inputs: {{queries: {queries}, index: {index}}}
    params: {params}
"""


@pytest.mark.parametrize("factory", ["HNSW0", "HNSW1", "IVF2_HNSW1,Flat"])
def test_index_refuses_an_hnsw_graph_of_fewer_than_two_links_at_validate(tmp_path, factory):
    # FAISS aborted the process filling the graph (an assertion: exit -6, no line of ours).
    message = refused_by_validate(tmp_path / "bad.yaml",
                                  _index_step(_queries(tmp_path / "v.parquet"), f"{{index_type: '{factory}'}}"))
    assert "step 'idx' (stage 'index'), parameter 'index_type'" in message and "at least 2 links" in message
    BuildIndex(index_type="HNSW2").validate()


def test_retrieve_refuses_a_list_doc_column_at_validate(tmp_path):
    # With exclude_same_doc, an Array doc column failed inside polars (exit 1).
    queries = _queries(tmp_path / "q.parquet")
    message = refused_by_validate(tmp_path / "bad.yaml", _retrieve(
        queries, _index(tmp_path / "idx"), "{exclude_same_doc: true, query_doc_column: embedding}"))
    assert f"parameter 'query_doc_column', file '{queries}'" in message and "not one value a row" in message


def test_retrieve_refuses_doc_ids_of_another_kind_than_the_index(tmp_path):
    # Integer doc ids against an index of string ones were cast to strings that matched nothing: every query
    # silently kept its own document's chunks.
    queries = _queries(tmp_path / "q.parquet", doc_id=[0, 0, 1, 1])
    fails_cleanly(tmp_path, _retrieve(queries, _index(tmp_path / "idx"), "{exclude_same_doc: true, k: 2}"),
                  "step 'hits' (stage 'retrieve'), parameter 'query_doc_column'", f"file '{queries}'",
                  "holds Int64 document ids but the index holds String ones")


@pytest.mark.parametrize("ids, words", [(["c0", None, "c2", "c3"], "1 null ids"),
                                        (["c0", "c0", "c2", "c3"], "duplicate ids")])
def test_retrieve_refuses_null_or_repeated_query_ids(tmp_path, ids, words):
    # Both gave exit 0: neighbours of a query named by no id, or two queries' neighbours under one id.
    queries = _queries(tmp_path / "q.parquet", chunk_id=ids)
    fails_cleanly(tmp_path, _retrieve(queries, _index(tmp_path / "idx"), "{k: 2}"),
                  "step 'hits' (stage 'retrieve'), parameter 'query_id_column'", f"file '{queries}'", words)
    good = pl.read_parquet(_queries(tmp_path / "good.parquet"))
    assert Retrieve(k=1).apply(good, index=str(tmp_path / "idx"))["neighbour_id"].to_list() == ["c0", "c1", "c2",
                                                                                               "c3"]


def test_chunk_takes_a_categorical_text_column_as_its_strings():
    # `pipeline validate` counts Categorical as text, but the run refused it ("is Categorical, not text").
    from stages.retrieval import Chunk

    docs = pl.DataFrame({"id": ["a", "b"], "text": ["one two three", "four five"]})
    plain = Chunk(tokenizer="whitespace", size=2).apply(docs)
    categorical = Chunk(tokenizer="whitespace", size=2).apply(docs.with_columns(pl.col("text").cast(pl.Categorical)))
    assert categorical.equals(plain) and plain["text"].to_list() == ["one two", "three", "four five"]


def test_index_refuses_a_null_first_vector_in_one_line(tmp_path):
    # A null in the first row failed inside polars reading the first batch (exit 1, 'this looks like a bug').
    vectors = [None, [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    data = tmp_path / "v.parquet"
    pl.DataFrame({"chunk_id": ["c0", "c1", "c2"], "doc_id": ["d0", "d0", "d1"],
                  "embedding": pl.Series(vectors, dtype=pl.Array(pl.Float32, 4))}).write_parquet(data)
    fails_cleanly(tmp_path, _index_step(data, "{index_type: Flat}"), "step 'idx' (stage 'index'), parameter "
                  "'embedding_column'", f"file '{data}'", "column 'embedding' has 1 null")


def test_index_refuses_a_missing_model_at_validate(tmp_path):
    # `retrieve` refused it; `index` recorded it, and only a later text query failed on it.
    message = refused_by_validate(tmp_path / "bad.yaml",
                                  _index_step(_queries(tmp_path / "v.parquet"), "{model: /no/such/model}"))
    assert "step 'idx' (stage 'index'), parameter 'model'" in message and "does not exist" in message


def test_index_stores_a_column_named_twice_once(tmp_path):
    # keep_columns [text, text] failed in polars writing the mapping (exit 1).
    data = pl.read_parquet(_queries(tmp_path / "v.parquet")).with_columns(text=pl.lit("words"))
    BuildIndex(index_type="Flat", keep_columns=["text", "text"]).execute(data, workdir=tmp_path / "idx")
    assert Index.load(tmp_path / "idx")._ids.to_list() == ["c0", "c1", "c2", "c3"]
    assert pl.read_parquet(tmp_path / "idx" / "index_ids.parquet").columns == ["faiss_id", "chunk_id", "doc_id",
                                                                                "text"]


def test_index_refuses_the_id_column_as_doc_column():
    # The index was built, but loading it failed renaming the one column twice (exit 1 at retrieve).
    with pytest.raises(ParamError, match="names the id column 'chunk_id' too") as err:
        BuildIndex(doc_column="chunk_id").validate()
    assert err.value.param == "doc_column"


def test_an_array_id_column_is_refused_at_validate(tmp_path, stage="index"):
    # It passed validate, and the run refused it as repeated ids over eight lines (the arrays' repr).
    data = _queries(tmp_path / "v.parquet")
    message = refused_by_validate(tmp_path / "bad.yaml", f"""
name: bad
steps:
  - id: s
    stage: {stage}
    inputs: {data}
    params: {{id_column: embedding}}
""")
    assert f"step 's' (stage '{stage}'), parameter 'id_column', file '{data}'" in message
    assert "not one value a row" in message


def test_retrieve_refuses_query_vectors_of_another_width_than_a_saved_index_at_validate(tmp_path):
    # Refused only when the step ran (after everything upstream), though both widths are known from the files.
    index = _index(tmp_path / "idx")
    queries = tmp_path / "q.parquet"
    pl.DataFrame({"chunk_id": ["c0", "c1"]}).with_columns(
        vectors_to_series("embedding", np.ones((2, 3), np.float32))).write_parquet(queries)
    message = refused_by_validate(tmp_path / "bad.yaml", _retrieve(queries, index, "{k: 1}"))
    assert f"step 'hits' (stage 'retrieve'), parameter 'query_column', file '{queries}'" in message, message
    assert f"column 'embedding' holds 3-d vectors (Array(Float32, shape=(3,))) but the index at '{index}' holds " \
           "4-d vectors" in message, message
    good = _queries(tmp_path / "good.parquet")
    assert run_cli("validate", str(write_config(tmp_path / "good.yaml", _retrieve(good, index, "{k: 1}")))) \
        .returncode == 0


def test_chunk_refuses_a_list_id_column():
    # The chunk ids are "<doc id>:<index>": a list doc id failed inside polars making them (exit 1).
    from pipeline.errors import InputDataError
    from stages.retrieval import Chunk

    with pytest.raises(InputDataError, match="not one value a row") as refused:
        Chunk(tokenizer="whitespace").apply(pl.DataFrame({"id": [[1], [2]], "text": ["one two", "three"]}))
    assert refused.value.param == "id_column"
