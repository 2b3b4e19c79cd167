"""The partitioned stage contract on the local executor: partitions by bytes, an ordered fold, refused
merges, resume from checkpointed partial states, the shuffle, and the leakage audit giving the same findings."""

from __future__ import annotations

import dataclasses
import pickle
import shutil
from pathlib import Path
from pydoc_data.topics import topics

import polars as pl
import pyarrow.parquet as pq
import pytest
from partition_stages import FirstRows, VocabularyCounts, first_rows

from pipeline.errors import PipelineError
from pipeline.executors import LocalExecutor, get_executor
from pipeline.io import Dataset
from pipeline.partial_states import merge_states
from pipeline.partitioned import (
    MIN_DEFAULT_PARTITION_BYTES,
    PartialState,
    default_partition_bytes,
    plan_partitions,
)
from pipeline.stage import Context

ROWS_PER_GROUP = 20


def corpus_files(folder: Path, rows: int = 150) -> Dataset:
    """Two Parquet files of pydoc paragraphs, in row groups of 20 rows."""
    names = sorted(topics)
    texts = [p for t in names for p in topics[t].split("\n\n") if len(p.split()) > 15][:rows]
    df = pl.DataFrame({"id": [f"d{i}" for i in range(len(texts))], "text": texts})
    folder.mkdir(parents=True, exist_ok=True)
    half = df.height // 2
    for k, part in enumerate((df[:half], df[half:])):
        pq.write_table(part.to_arrow(), folder / f"part-{k:05d}.parquet", row_group_size=ROWS_PER_GROUP)
    return Dataset.from_parquet(folder)


def run_step(stage, inputs: dict[str, Dataset], out: Path, executor=None, checkpoint: Path | None = None):
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(step_id="step", seed=0, out_dir=out, checkpoint_dir=checkpoint)
    (executor or LocalExecutor()).run_step(stage, ctx, inputs, out)
    sides = {name: pl.read_parquet(out / name / "*.parquet") for name in ctx.side_outputs}
    return pl.read_parquet(out / "*.parquet"), sides, ctx.stats


def test_partitions_are_whole_row_groups_in_order_sized_by_bytes(tmp_path):
    data = corpus_files(tmp_path / "corpus")
    one_group = plan_partitions(data, 1)
    groups = sum(pq.read_metadata(f).num_row_groups for f in data.files)
    assert len(one_group) == groups
    assert [p.base for p in one_group] == [sum(q.num_rows for q in one_group[:i]) for i in range(len(one_group))]
    assert sum(p.num_rows for p in one_group) == data.num_rows
    whole = plan_partitions(data, 1 << 40)
    assert len(whole) == 1 and whole[0].num_rows == data.num_rows
    rows = pl.concat(list(one_group[3].iter_batches(6)))
    assert rows.equals(data.collect().slice(one_group[3].base, one_group[3].num_rows))


def test_batches_with_arrow_pair_each_parquet_batch_with_the_batch_it_was_made_from(tmp_path):
    # A stage may read a column's buffers as read (the audit's tokenizer): the Arrow batch must be the polars
    # batch's rows; rows of an in-memory frame have none.
    data = corpus_files(tmp_path / "corpus")
    part = plan_partitions(data, 1)[3]
    pairs = list(part.iter_batches_with_arrow(6, columns=["text"]))
    assert len(pairs) > 1 and all(pl.from_arrow(arrow).equals(frame) for frame, arrow in pairs)
    assert pl.concat([f for f, _ in pairs]).equals(pl.concat(list(part.iter_batches(6, columns=["text"]))))
    in_memory = plan_partitions(Dataset.from_any(data.collect()), 1 << 40)[0]
    assert all(arrow is None for _, arrow in in_memory.iter_batches_with_arrow(50))


def test_the_default_size_is_a_sixteenth_of_the_input_within_16_and_64_mb(tmp_path, monkeypatch):
    assert default_partition_bytes(0) == 16 << 20
    assert default_partition_bytes(320 << 20) == 20 << 20
    assert default_partition_bytes(4 << 30) == 64 << 20
    # A small corpus is one partition; with the floor lowered to a tenth of it, it is cut in ~16 row-group runs.
    data = corpus_files(tmp_path / "corpus")
    assert len(plan_partitions(data)) == 1
    total = sum(pq.read_metadata(f).row_group(g).total_byte_size for f in data.files
                for g in range(pq.read_metadata(f).num_row_groups))
    monkeypatch.setattr("pipeline.partitioned.MIN_DEFAULT_PARTITION_BYTES", total // 10)
    cut = plan_partitions(data)
    assert 4 <= len(cut) <= 16 and cut == plan_partitions(data, total // 10)
    assert MIN_DEFAULT_PARTITION_BYTES == 16 << 20
    # A frame in memory follows the same rule.
    frame = Dataset.from_any(data.collect(), label="frame")
    assert len(plan_partitions(frame)) == len(plan_partitions(frame, max(frame.frame.estimated_size() // 16,
                                                                         total // 10)))


@pytest.mark.parametrize("partition_bytes", [1, 9_000, 40_000, 1 << 40])
def test_fold_gives_the_same_output_for_any_partition_size(tmp_path, partition_bytes):
    data = corpus_files(tmp_path / "corpus")
    vocab = Dataset.from_any(pl.DataFrame({"word": ["the", "a", "class", "function", "zzz"]}))
    stage = VocabularyCounts()
    expected = stage.apply(data=data.collect(), vocab=vocab.frame)
    table, _, stats = run_step(stage, {"data": data, "vocab": vocab}, tmp_path / "out",
                               LocalExecutor(partition_bytes=partition_bytes))
    assert table.equals(expected)
    assert stats["rows_seen"] == data.num_rows
    assert stats["partitions"] == len(plan_partitions(data, partition_bytes))


class ThreadedVocabularyCounts(VocabularyCounts):
    """The same stage declaring a thread-safe map: the local fold maps partitions on threads."""

    name = "test_partitioned_vocabulary_counts_threaded"
    map_in_threads = True


def test_maps_on_threads_still_merge_in_partition_order(tmp_path, monkeypatch):
    from pipeline import partition_fold

    monkeypatch.setattr(partition_fold.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    data = corpus_files(tmp_path / "corpus")
    vocab = Dataset.from_any(pl.DataFrame({"word": ["the", "a", "class", "function", "zzz"]}))
    stage = ThreadedVocabularyCounts()
    assert partition_fold.local_threads(stage, 8) == 3 and partition_fold.local_threads(VocabularyCounts(), 8) == 1
    expected = VocabularyCounts().apply(data=data.collect(), vocab=vocab.frame)
    # The merge asserts input order: any fold out of order would fail the step.
    table, _, stats = run_step(stage, {"data": data, "vocab": vocab}, tmp_path / "out", LocalExecutor(partition_bytes=1))
    assert table.equals(expected)
    assert stats["partitions"] == len(plan_partitions(data, 1))
    assert stats["rows_seen"] == data.num_rows


class BlasThreadsSeen(ThreadedVocabularyCounts):
    """Records the BLAS thread count each map runs with."""

    name = "test_partitioned_blas_threads_seen"
    seen: list[int] = []

    def map(self, partition, broadcast):
        from threadpoolctl import threadpool_info

        self.seen.append(max((i["num_threads"] for i in threadpool_info() if _pool_blas(i)), default=1))
        return super().map(partition, broadcast)


def _pool_blas(library: dict) -> bool:
    """A BLAS with its own thread pool (NumPy's OpenBLAS): one limit holds for every thread. (An OpenMP build's
    thread count is per calling thread, e.g. the OpenBLAS that faiss loads.)"""
    return library["user_api"] == "blas" and library.get("threading_layer") == "pthreads"


def test_maps_on_threads_run_blas_on_one_thread_each(tmp_path, monkeypatch):
    """Maps on every core, each with BLAS's own threads, would oversubscribe the cores; one map alone keeps them."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from pipeline import partition_fold

    monkeypatch.setattr(partition_fold.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    data = corpus_files(tmp_path / "corpus")
    vocab = Dataset.from_any(pl.DataFrame({"word": ["the", "a"]}))
    with threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine, whatever this one has
        if not any(_pool_blas(i) for i in threadpool_info()):
            pytest.skip("no BLAS with its own thread pool loaded")
        for partition_bytes, expected in ((1, {1}), (1 << 40, {2})):
            BlasThreadsSeen.seen = []
            run_step(BlasThreadsSeen(), {"data": data, "vocab": vocab}, tmp_path / str(partition_bytes),
                     LocalExecutor(partition_bytes=partition_bytes))
            assert set(BlasThreadsSeen.seen) == expected and len(BlasThreadsSeen.seen) == len(plan_partitions(data, partition_bytes))
        assert max(i["num_threads"] for i in threadpool_info() if _pool_blas(i)) == 2  # restored after


def test_merges_of_other_params_or_the_same_partition_twice_are_refused():
    stage = VocabularyCounts()
    a = PartialState("fp-1", frozenset([0]), {"counts": {}, "ranges": [(0, 1)]})
    with pytest.raises(PipelineError, match="different params or inputs"):
        merge_states(stage, a, PartialState("fp-2", frozenset([1]), {"counts": {}, "ranges": [(1, 1)]}))
    with pytest.raises(PipelineError, match=r"partition\(s\) \[0\] twice"):
        merge_states(stage, a, PartialState("fp-1", frozenset([0]), {"counts": {}, "ranges": [(1, 1)]}))


@pytest.mark.parametrize("partition_bytes", [1, 9_000, 1 << 40])
@pytest.mark.parametrize("buckets", [1, 4])
def test_shuffle_reduces_every_partitions_part_of_a_bucket_in_input_order(tmp_path, partition_bytes, buckets):
    data = corpus_files(tmp_path / "corpus")
    table, _, stats = run_step(FirstRows(buckets=buckets), {"data": data}, tmp_path / "out",
                               LocalExecutor(partition_bytes=partition_bytes))
    assert table.equals(first_rows(data.collect().get_column("text").to_list()))
    assert stats["rows_seen"] == data.num_rows and stats["shuffle_buckets"] == buckets
    assert stats["partition_profile"]["shuffle_bytes"] > 0


@pytest.mark.parametrize("partition_bytes", [1, 1 << 40])
def test_a_second_round_takes_every_first_round_result_in_bucket_order(tmp_path, partition_bytes):
    data = corpus_files(tmp_path / "corpus")
    table, _, stats = run_step(FirstRows(buckets=4, second=3), {"data": data}, tmp_path / "out",
                               LocalExecutor(partition_bytes=partition_bytes))
    assert table.equals(first_rows(data.collect().get_column("text").to_list()))
    assert stats["shuffle_buckets"] == 4 and stats["second_buckets"] == 3
    with pytest.raises(PipelineError, match="bucket 2 refused"):
        run_step(FirstRows(buckets=4, second=3, refuse_bucket=2), {"data": data}, tmp_path / "refused",
                 LocalExecutor(partition_bytes=partition_bytes))


def test_a_state_carrying_shuffle_parts_is_never_merged():
    stage = FirstRows()
    a = PartialState("fp", frozenset([0]), {"ranges": [(0, 1)]}, parts=[{}, {}, {}])
    with pytest.raises(PipelineError, match="still carry their shuffle parts"):
        merge_states(stage, a, PartialState("fp", frozenset([1]), {"ranges": [(1, 1)]}))


def test_a_killed_shuffling_run_resumes_with_its_checkpointed_parts(tmp_path):
    data = corpus_files(tmp_path / "corpus")
    checkpoint = tmp_path / "checkpoint"
    stage = FirstRows(fail_marker=str(tmp_path / "failed-once"), fail_at=5)
    with pytest.raises(RuntimeError, match="planted failure"):
        run_step(stage, {"data": data}, tmp_path / "first", LocalExecutor(partition_bytes=1), checkpoint)
    # A checkpoint without its shuffle parts (say, saved by an older version) is mapped again, not resumed.
    saved = sorted((checkpoint / "partitions").glob("*.pkl"))
    assert len(saved) == 5
    state = pickle.loads(saved[0].read_bytes())
    saved[0].write_bytes(pickle.dumps(dataclasses.replace(state, parts=None)))
    table, _, stats = run_step(stage, {"data": data}, tmp_path / "second", LocalExecutor(partition_bytes=1), checkpoint)
    assert stats["partition_profile"]["resumed"] == 4
    # The resumed partitions' words reach the reducers from their checkpoints: nothing is missing.
    assert table.equals(first_rows(data.collect().get_column("text").to_list()))


def test_a_killed_run_resumes_from_its_finished_partitions(tmp_path):
    data = corpus_files(tmp_path / "corpus")
    vocab = Dataset.from_any(pl.DataFrame({"word": ["the", "of"]}))
    checkpoint = tmp_path / "checkpoint"
    stage = VocabularyCounts(fail_marker=str(tmp_path / "failed-once"), fail_at=4)
    with pytest.raises(RuntimeError, match="planted failure"):
        run_step(stage, {"data": data, "vocab": vocab}, tmp_path / "first", LocalExecutor(partition_bytes=1), checkpoint)
    assert len(list((checkpoint / "partitions").glob("*.pkl"))) == 4
    table, _, stats = run_step(stage, {"data": data, "vocab": vocab}, tmp_path / "second",
                               LocalExecutor(partition_bytes=1), checkpoint)
    assert stats["partition_profile"]["resumed"] == 4
    assert table.equals(VocabularyCounts().apply(data=data.collect(), vocab=vocab.frame))
    # Other params never pick up these states: their fingerprint differs.
    other = VocabularyCounts(fail_at=5)
    _, _, stats = run_step(other, {"data": data, "vocab": vocab}, tmp_path / "third", LocalExecutor(partition_bytes=1),
                           checkpoint)
    assert stats["partition_profile"]["resumed"] == 0


def test_local_executor_refuses_unknown_options_and_bad_sizes():
    with pytest.raises(PipelineError, match="partition_bytes and fragment_rows"):
        get_executor("local", actors=3)
    with pytest.raises(PipelineError, match="partition_bytes must be at least 1"):
        get_executor("local", partition_bytes=0)
    with pytest.raises(PipelineError, match="fragment_rows must be at least 1"):
        get_executor("local", fragment_rows=0)
    for value in ("x", 1.5, True):  # as `--executor-option fragment_rows=...` parses them
        with pytest.raises(PipelineError, match="must be a whole number of at least 1"):
            get_executor("local", fragment_rows=value)


def leakage_inputs(folder: Path) -> dict[str, Dataset]:
    train = corpus_files(folder, rows=200)
    df = train.collect()
    leaked = [" ".join(t.split()[:40]).upper() for t in df["text"].to_list()[5:200:15]]
    clean = [" ".join(topics[t].split()[:40]) for t in sorted(topics)[-6:]]
    test = pl.DataFrame({"id": [f"t{i}" for i in range(len(leaked) + len(clean))], "text": leaked + clean})
    return {"train": train, "test": Dataset.from_any(test)}


def same_outputs(a, b) -> None:
    table_a, sides_a, stats_a = a
    table_b, sides_b, stats_b = b
    assert table_a.equals(table_b)
    assert sides_a.keys() == sides_b.keys()
    for name in sides_a:
        assert sides_a[name].equals(sides_b[name]), name
    varying = {"timings_s", "ngram_mb_per_s", "partitions", "partition_profile"}
    assert {k: v for k, v in stats_a.items() if k not in varying} == {k: v for k, v in stats_b.items() if k not in varying}


@pytest.mark.parametrize("partition_bytes", [1, 30_000])
def test_leakage_audit_finds_the_same_in_any_partitioning(tmp_path, partition_bytes):
    from stages.leakage import LeakageAudit

    inputs = leakage_inputs(tmp_path / "corpus")
    stage = LeakageAudit(chunk_overlap=False, semantic=False, n=8, max_doc_freq=3)
    whole = run_step(stage, inputs, tmp_path / "whole", LocalExecutor(partition_bytes=1 << 40))
    split = run_step(stage, inputs, tmp_path / "split", LocalExecutor(partition_bytes=partition_bytes))
    assert split[2]["partitions"] > 1
    same_outputs(whole, split)
    assert (whole[0]["verdict"] != "clean").sum() >= 10
    shutil.rmtree(tmp_path / "whole")


def test_leakage_audit_with_unmergeable_kinds_runs_one_partition(tmp_path, monkeypatch):
    from stages.leakage import LeakageAudit
    from stages.leakage.evidence import EVIDENCE_KINDS
    from stages.leakage.rescore import ParaphraseEvidence

    class Unmergeable(ParaphraseEvidence):  # a kind that does not declare its partial state
        kind = "test_unmergeable"
        partial_attributes = ()

    monkeypatch.setitem(EVIDENCE_KINDS, Unmergeable.kind, Unmergeable)
    stage = LeakageAudit(chunk_overlap=False, semantic=False, n=8, evidence=["test_unmergeable"])
    assert not stage.partitionable()
    assert LeakageAudit(chunk_overlap=False, semantic=False, n=8, evidence=["paraphrase"]).partitionable()
    assert LeakageAudit(chunk_overlap=False, semantic=False).partitionable()
    assert LeakageAudit(chunk_overlap=True, semantic=True).partitionable()  # top-k per test chunk merges


def test_pickled_size_counts_without_materialising_the_bytes():
    import pickle

    import numpy as np

    from pipeline.partial_states import pickled_size

    for value in (np.arange(200_000), {"codes": np.zeros((300, 7), np.uint8), "ids": ["a", "b"]}, "x" * 100_000, None):
        assert pickled_size(value) == len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
