"""`index` and `retrieve` on the partitioned contract: the same index and rows for any partitioning."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.executors import LocalExecutor
from pipeline.io import Dataset
from pipeline.stage import Context
from stages.embedding import vectors_to_series
from stages.retrieval import BuildIndex, Index, Retrieve
from stages.retrieval.index import INDEX_FILE

ROWS, DIM, ROWS_PER_GROUP = 3_000, 32, 250
# (factory, refine): the refine tier's second codes travel and merge beside the PQ codes
FACTORIES = [("Flat", None), ("IVF16,Flat", None), ("IVF16,PQ8x4", None), ("IVF16,PQ8x4", "sq8")]


def vector_files(folder: Path) -> Dataset:
    """Clustered unit vectors (with exact duplicates, so ties happen) in two files of 250-row groups."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((40, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, 40, ROWS)] + 0.3 * rng.standard_normal((ROWS, DIM)).astype(np.float32)
    vectors[1::97] = vectors[0::97][: len(vectors[1::97])]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    df = pl.DataFrame({"chunk_id": [f"d{i // 5}:{i % 5}" for i in range(ROWS)],
                       "doc_id": [f"d{i // 5}" for i in range(ROWS)]}).with_columns(vectors_to_series("embedding", vectors))
    folder.mkdir(parents=True, exist_ok=True)
    for k, part in enumerate((df[: ROWS // 3], df[ROWS // 3 :])):
        pq.write_table(part.to_arrow(), folder / f"part-{k:05d}.parquet", row_group_size=ROWS_PER_GROUP)
    return Dataset.from_parquet(folder)


def build(data: Dataset, out: Path, executor, factory: str, refine: str | None = None):
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(step_id="index", seed=5, out_dir=out)
    executor.run_step(BuildIndex(index_type=factory, train_size=2_000, refine=refine), ctx, {"data": data}, out)
    return out, ctx.stats


def retrieve(queries: Dataset, index_dir: Path, out: Path, executor) -> tuple[pl.DataFrame, dict]:
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(step_id="nn", seed=5, out_dir=out)
    stage = Retrieve(k=7, exclude_same_doc=True)
    executor.run_step(stage, ctx, {"queries": queries, "index": Dataset.from_parquet(index_dir)}, out)
    return pl.read_parquet(out / "*.parquet"), ctx.stats


def same_index(a: tuple[Path, dict], b: tuple[Path, dict]) -> None:
    """Byte-identical FAISS files (same lists, same order, same codes), mapping and stats."""
    (dir_a, stats_a), (dir_b, stats_b) = a, b
    assert (dir_a / INDEX_FILE).read_bytes() == (dir_b / INDEX_FILE).read_bytes()
    assert pl.read_parquet(dir_a / "*.parquet").equals(pl.read_parquet(dir_b / "*.parquet"))
    varying = {"partitions", "partition_profile"}
    assert {k: v for k, v in stats_a.items() if k not in varying} == {k: v for k, v in stats_b.items() if k not in varying}


@pytest.fixture(scope="module")
def vectors(tmp_path_factory) -> Dataset:
    return vector_files(tmp_path_factory.mktemp("vectors"))


@pytest.mark.parametrize(("factory", "refine"), FACTORIES)
def test_index_is_the_same_for_any_partitioning(vectors, tmp_path, factory, refine):
    whole = build(vectors, tmp_path / "whole", LocalExecutor(partition_bytes=1 << 40), factory, refine)
    assert whole[1]["partitions"] == 1
    for size in (1, 50_000):  # one row group per partition (12), and a few groups each
        split = build(vectors, tmp_path / f"split-{size}", LocalExecutor(partition_bytes=size), factory, refine)
        assert split[1]["partitions"] > 2
        same_index(whole, split)
    idx = Index.load(whole[0])
    assert idx.ntotal == ROWS and idx.meta["factory"] == factory and idx.meta.get("refine") == refine
    if refine:
        assert isinstance(idx.index, faiss.IndexRefine) and "k_factor_rf" in idx.meta["search_params"]
    if factory == "IVF16,Flat":  # (PQ codes cap recall; their calibration is judged in bench_retrieval)
        assert "nprobe" in idx.meta["search_params"] and idx.meta["calibrated_recall_at_10"] >= 0.95


def test_partitioned_index_answers_as_one_faiss_build(vectors, tmp_path):
    """The merged IVF index finds what one faiss add of all rows finds, given the same trained quantiser."""
    out, _ = build(vectors, tmp_path / "split", LocalExecutor(partition_bytes=1), "IVF16,Flat")
    merged = faiss.read_index(str(out / INDEX_FILE))
    one = faiss.clone_index(merged)
    one.reset()
    from stages.embedding import series_to_vectors

    matrix = series_to_vectors(vectors.collect()["embedding"])
    one.add(matrix)
    for index in (merged, one):
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", 4)
    assert [np.array_equal(x, y) for x, y in zip(merged.search(matrix[:200], 10), one.search(matrix[:200], 10))] == [
        True, True]


def test_graph_indexes_are_built_in_one_partition(vectors, tmp_path):
    assert not BuildIndex(index_type="HNSW16").partitionable()
    out, stats = build(vectors, tmp_path / "hnsw", LocalExecutor(partition_bytes=1), "HNSW16")
    assert stats["partitions"] == 1 and Index.load(out).ntotal == ROWS


@pytest.mark.parametrize("size", [1, 50_000])
def test_retrieve_rows_are_the_same_for_any_partitioning(vectors, tmp_path, size):
    index_dir, _ = build(vectors, tmp_path / "index", LocalExecutor(), "IVF16,Flat")
    whole, _ = retrieve(vectors, index_dir, tmp_path / "whole", LocalExecutor(partition_bytes=1 << 40))
    split, stats = retrieve(vectors, index_dir, tmp_path / "split", LocalExecutor(partition_bytes=size))
    assert stats["partitions"] > 2 and whole.height == 7 * ROWS
    assert whole.equals(split)


def test_index_partial_state_is_the_codes_of_its_rows_and_merges_only_in_row_order(tmp_path):
    """A partition's state is faiss's own encoding of its rows (plain uint8, no index to serialise);
    merging keeps row order, so a state merged out of order is refused rather than misnumbered."""
    from pipeline.partitioned import plan_partitions

    data = vector_files(tmp_path / "data")
    stage = BuildIndex(index_type="IVF16,PQ8x4", train_size=2_000)
    ctx = Context(step_id="index", seed=5, out_dir=tmp_path / "out")
    shared = stage.broadcast(ctx, {"data": data})
    first, second = plan_partitions(data, 1)[:2]
    a, b = stage.map(first, shared), stage.map(second, shared)
    assert set(a) == {"codes", "first", "rows", "exact"}
    assert all(c.dtype == np.uint8 and c.shape[1] == shared["index"].sa_code_size() for c in a["codes"])
    assert (a["first"], a["rows"], b["first"]) == (0, ROWS_PER_GROUP, ROWS_PER_GROUP)
    expected = shared["index"].sa_encode(np.concatenate(
        [np.stack(batch["embedding"].to_numpy()) for batch in first.iter_batches(columns=["embedding"])]))
    assert np.array_equal(np.concatenate(a["codes"]), expected)
    with pytest.raises(Exception, match="out of order"):
        stage.merge(b, a)
    merged = stage.merge(a, b)
    assert merged["rows"] == 2 * ROWS_PER_GROUP and len(merged["codes"]) == 2


def test_refined_index_built_in_parts_holds_what_one_faiss_add_holds(vectors, tmp_path):
    """Both halves of each row's codes land in row order: the bytes of IndexRefine.add over all rows at once."""
    out, stats = build(vectors, tmp_path / "split", LocalExecutor(partition_bytes=1), "IVF16,PQ8x4", "fp16")
    merged = faiss.read_index(str(out / INDEX_FILE))
    one = faiss.clone_index(merged)
    one.reset()
    from stages.embedding import series_to_vectors

    one.add(series_to_vectors(vectors.collect()["embedding"]))
    assert stats["partitions"] > 2 and stats["refine"] == "fp16"
    assert np.array_equal(faiss.serialize_index(merged), faiss.serialize_index(one))
