"""Dedup stages on the partitioned contract: any partition size gives the same kept rows, side outputs and stats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.executors import LocalExecutor
from pipeline.io import Dataset
from pipeline.partial_states import pickled_size
from pipeline.partitioned import plan_partitions
from pipeline.stage import Context
from stages.dedup import DedupExact, DedupMinhash, DedupSemantic, base
from stages.dedup.planted import planted_corpus

SIZES = [1, 20_000, 1 << 40]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Planted near-duplicates in Parquet row groups of 40 rows, and 15 originals as a reference."""
    frame = planted_corpus(n_sources=40, n_controls=40, seed=5, levels=(0.01, 0.05))
    # Vectors of one source's rows are near each other (semantic duplicates), other sources' far.
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(frame["source"].n_unique(), 8))
    source = frame["source"].rank("dense").cast(pl.Int64).to_numpy() - 1
    vectors = centres[source] + 0.01 * rng.normal(size=(frame.height, 8))
    frame = frame.select("id", "text").with_columns(pl.Series("vector", vectors.astype(np.float32).tolist()))
    folder = tmp_path_factory.mktemp("planted")
    pq.write_table(frame.to_arrow(), folder / "part-00000.parquet", row_group_size=40)
    reference = frame.slice(3, 15).select("id", "text", "vector")
    return Dataset.from_parquet(folder), Dataset.from_any(reference, label="reference")


def _run(stage, inputs: dict[str, Dataset], out: Path, partition_bytes: int, executor=None):
    out.mkdir(parents=True)
    ctx = Context(step_id="dedup", seed=0, out_dir=out, executor=getattr(executor, "name", "local"))
    (executor or LocalExecutor(partition_bytes=partition_bytes)).run_step(stage, ctx, inputs, out)
    sides = {name: pl.read_parquet(out / name / "*.parquet") for name in ctx.side_outputs}
    stats = {k: v for k, v in ctx.stats.items() if k not in ("partitions", "partition_profile")}
    return pl.read_parquet(out / "*.parquet"), sides, stats, ctx.stats["partitions"]


@pytest.mark.parametrize("stage", [DedupMinhash(threshold=0.7), DedupMinhash(verify="signature", keep="longest"),
                                   DedupExact(normalization="full", keep="lowest_id"),
                                   DedupSemantic(embedding_column="vector", threshold=0.99, n_clusters=4)],
                         ids=["minhash", "minhash-signature", "exact", "semantic"])
@pytest.mark.parametrize("with_reference", [False, True], ids=["within", "reference"])
def test_every_partition_size_gives_the_same_outputs(corpus, tmp_path, stage, with_reference):
    data, reference = corpus
    inputs = {"data": data, "reference": reference} if with_reference else {"data": data}
    runs = [_run(stage, inputs, tmp_path / str(size), size) for size in SIZES]
    assert [r[3] for r in runs] == [len(plan_partitions(data, size)) for size in SIZES]
    assert runs[0][3] > 2 and runs[-1][3] == 1
    table, sides, stats, _ = runs[-1]
    assert sides["removed"].height > 0 and table.height + sides["removed"].height == data.num_rows
    for other_table, other_sides, other_stats, _ in runs[:-1]:
        assert other_table.equals(table)
        assert other_sides.keys() == sides.keys()
        for name in sides:
            assert other_sides[name].equals(sides[name]), name
        assert other_stats == stats


def test_semantic_k_means_on_a_sample_gives_the_same_outputs_for_every_partition_size(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr("stages.dedup.semantic.MAX_POINTS_PER_CENTROID", 16)  # 64 of the 240 rows train k-means
    data, reference = corpus
    stage = DedupSemantic(embedding_column="vector", threshold=0.99, n_clusters=4, keep="lowest_id")
    runs = [_run(stage, {"data": data, "reference": reference}, tmp_path / str(size), size) for size in SIZES]
    assert runs[0][2]["kmeans_sample_rows"] == 64 and runs[0][1]["removed"].height > 0
    for other in runs[1:]:
        assert other[0].equals(runs[0][0]) and other[2] == runs[0][2]
        assert all(other[1][name].equals(runs[0][1][name]) for name in runs[0][1])


@pytest.mark.parametrize("stage", [DedupMinhash(threshold=0.7), DedupExact(normalization="full", keep="longest"),
                                   DedupSemantic(embedding_column="vector", threshold=0.99, n_clusters=4,
                                                 keep="lowest_id")],
                         ids=["minhash", "exact", "semantic"])
def test_a_partition_state_holds_no_row_and_only_clustered_rows_are_read_again(corpus, tmp_path, monkeypatch, stage):
    data, _ = corpus
    # What a map hands to the merge (and on Ray, to the driver) once its keys went to the shuffle:
    # a row count, whatever the partition's size.
    ctx = Context(step_id="dedup", seed=0, out_dir=tmp_path)
    broadcast = stage.broadcast(ctx, {"data": data})
    partition = plan_partitions(data, 1 << 40)[0]
    state, parts = stage.split(stage.map(partition, broadcast), broadcast)
    assert sum(state.counts) == data.num_rows
    assert state.ids == [] and state.features == [] and state.lengths == [] and pickled_size(state) < 2_000
    if isinstance(stage, DedupMinhash):  # every row's key in every band (and its digest)
        assert sum(len(p) for p in parts) == data.num_rows * stage.shuffle_buckets(broadcast)
    else:  # each row's hash (or vector) in the one bucket of its top bits (or k-means cluster), with its number
        rows = np.sort(np.concatenate([p[0] for p in parts]))
        assert rows.tolist() == list(range(data.num_rows)) and len(parts) == stage.shuffle_buckets(broadcast) > 1
    # Ids (and lengths for keep='longest') are read again for the rows in a cluster only.
    asked = []
    real = base.partition_row_facts
    monkeypatch.setattr(base, "partition_row_facts", lambda p, rows, s: asked.append(len(rows)) or real(p, rows, s))
    table, sides, stats, partitions = _run(stage, {"data": data}, tmp_path / "run", 20_000)
    assert partitions > 2 and len(asked) > 1
    assert sum(asked) == sides["clusters"].height == stats["rows_in_clusters"] < data.num_rows


@pytest.mark.parametrize("verify", ["jaccard", "signature"])
@pytest.mark.parametrize("with_reference", [False, True], ids=["within", "reference"])
def test_band_keys_cut_into_key_ranges_give_the_same_outputs(corpus, tmp_path, monkeypatch, verify, with_reference):
    """Past `REDUCER_ROWS`, each band's keys (and the digests) go to several reducers by key range: every
    reducer holds a share of the band, and the clusters are those of one reducer per band."""
    data, reference = corpus
    inputs = {"data": data, "reference": reference} if with_reference else {"data": data}
    stage = DedupMinhash(threshold=0.7, verify=verify)
    table, sides, stats, _ = _run(stage, inputs, tmp_path / "whole", 20_000)
    reduced: list[int] = []
    reduce = DedupMinhash.reduce
    monkeypatch.setattr(DedupMinhash, "reduce", lambda self, b, parts, bc: reduced.append(len(band_pairs_rows(parts)))
                        or reduce(self, b, parts, bc))
    monkeypatch.setattr("stages.dedup.minhash.REDUCER_ROWS", 64)
    rows = data.num_rows + (reference.num_rows if with_reference else 0)
    ranges = stage.key_ranges(rows)
    assert ranges >= 4 and ranges & (ranges - 1) == 0
    for size in (1, 20_000):
        r_table, r_sides, r_stats, _ = _run(stage, inputs, tmp_path / f"ranges-{size}", size)
        assert r_stats.pop("key_ranges") == ranges and stats["key_ranges"] == 1
        assert r_stats.pop("shuffle_buckets") == ranges * stats["shuffle_buckets"]
        assert r_stats.pop("second_buckets") == ranges and stats["second_buckets"] == 1  # pairs made distinct per range
        assert r_table.equals(table) and r_sides.keys() == sides.keys()
        for name in sides:
            assert r_sides[name].equals(sides[name]), name
        assert r_stats == {k: v for k, v in stats.items() if k not in ("key_ranges", "shuffle_buckets", "second_buckets")}
    columns = stage.banding().bands + (verify == "jaccard")
    # Each reducer got about 1/ranges of its column's data rows (the maps' parts), never the whole column.
    assert len(reduced) == 2 * columns * ranges and sum(reduced) == 2 * columns * data.num_rows
    assert max(reduced) < data.num_rows / 2
    assert sides["removed"].height > 0


def test_the_driver_receives_each_candidate_pair_once(corpus, tmp_path, monkeypatch):
    """The band reducers' pairs (a pair once per band that finds it) are made distinct in a second round."""
    data, _ = corpus
    first, second = [], []
    reduce, reduce_second = DedupMinhash.reduce, DedupMinhash.reduce_second
    monkeypatch.setattr(DedupMinhash, "reduce", lambda self, b, parts, bc: first.append(reduce(self, b, parts, bc))
                        or first[-1])
    monkeypatch.setattr(DedupMinhash, "reduce_second", lambda self, b, parts, bc: second.append(
        reduce_second(self, b, parts, bc)) or second[-1])
    _, _, stats, _ = _run(DedupMinhash(threshold=0.7, verify="signature"), {"data": data}, tmp_path / "out", 20_000)
    assert len(second) == stats["second_buckets"] == 1
    assert sum(len(pairs) for pairs in first) == stats["band_pairs"] > 2 * stats["candidate_pairs"]  # several bands
    assert len(second[0][0]) == stats["candidate_pairs"]


def band_pairs_rows(parts: list) -> np.ndarray:
    """The rows a reducer's parts name (key-range parts carry them)."""
    return np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
