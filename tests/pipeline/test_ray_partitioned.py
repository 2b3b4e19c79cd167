"""Partitioned stages on a real two-node loopback Ray cluster give exactly the local executor's results."""

from __future__ import annotations

import pytest
from partition_stages import FirstRows, SplitRows, VocabularyCounts, first_rows, split_rows
from test_partitioned import corpus_files, leakage_inputs, run_step, same_outputs

from pipeline.errors import PipelineError
from pipeline.executors import LocalExecutor, get_executor
from pipeline.io import Dataset

ray = pytest.importorskip("ray", reason="the Ray executor's tests need ray (pip install 'corpusforge[ray]')")


@pytest.fixture(scope="module")
def ray_executor(ray_cluster):
    exe = get_executor("ray", address=ray_cluster.address)
    yield exe
    exe.close()


@pytest.mark.parametrize("partition_bytes", [1, 30_000, 1 << 40])
def test_leakage_audit_on_two_nodes_equals_local(ray_executor, tmp_path, partition_bytes):
    from stages.leakage import LeakageAudit

    inputs = leakage_inputs(tmp_path / "corpus")
    stage = LeakageAudit(chunk_overlap=False, semantic=False, n=8, max_doc_freq=3)
    local = run_step(stage, inputs, tmp_path / "local", LocalExecutor(partition_bytes=partition_bytes))
    ray_executor.partition_bytes = partition_bytes
    on_ray = run_step(stage, inputs, tmp_path / "ray", ray_executor)
    same_outputs(local, on_ray)
    assert local[2]["partitions"] == on_ray[2]["partitions"]


def test_counts_on_two_nodes_equal_local_and_resume_after_a_failure(ray_executor, tmp_path):
    import polars as pl

    data = corpus_files(tmp_path / "corpus")
    vocab = Dataset.from_any(pl.DataFrame({"word": ["the", "of", "class", "return"]}))
    inputs = {"data": data, "vocab": vocab}
    expected = VocabularyCounts().apply(data=data.collect(), vocab=vocab.frame)
    ray_executor.partition_bytes = 1  # one row group per partition: 8 tasks, a 3-level merge tree
    table, _, stats = run_step(VocabularyCounts(), inputs, tmp_path / "ray", ray_executor)
    assert table.equals(expected) and stats["rows_seen"] == data.num_rows
    # A partition that fails for good fails the step; a rerun maps only what was not finished.
    checkpoint = tmp_path / "checkpoint"
    failing = VocabularyCounts(fail_marker=str(tmp_path / "failed-once"), fail_at=5)
    with pytest.raises(RuntimeError, match="planted failure"):
        run_step(failing, inputs, tmp_path / "first", ray_executor, checkpoint)
    # Tasks already running when the step failed may still finish and checkpoint: at least these resume.
    finished = len(list((checkpoint / "partitions").glob("*.pkl")))
    table, _, stats = run_step(failing, inputs, tmp_path / "second", ray_executor, checkpoint)
    assert table.equals(expected)
    assert finished <= stats["partition_profile"]["resumed"] < stats["partitions"]


def test_shuffle_on_two_nodes_equals_local_reduces_on_workers_and_resumes(ray_executor, tmp_path, monkeypatch):
    data = corpus_files(tmp_path / "corpus")
    expected = first_rows(data.collect().get_column("text").to_list())
    # The workers import the stage afresh, so this patch only counts reducers run on the driver.
    reduced_here = []
    reduce = FirstRows.reduce
    monkeypatch.setattr(FirstRows, "reduce", lambda self, b, parts, bc: reduced_here.append(b) or reduce(self, b, parts, bc))
    for partition_bytes in (1, 30_000, 1 << 40):
        ray_executor.partition_bytes = partition_bytes
        table, _, stats = run_step(FirstRows(buckets=4), {"data": data}, tmp_path / f"ray{partition_bytes}",
                                   ray_executor)
        assert table.equals(expected) and stats["rows_seen"] == data.num_rows and stats["shuffle_buckets"] == 4
    assert reduced_here == []
    table, _, stats = run_step(FirstRows(buckets=4, second=3), {"data": data}, tmp_path / "second-round", ray_executor)
    assert table.equals(expected) and stats["second_buckets"] == 3
    # A first-round reducer that refuses: its error, not the second round's missing part, reaches the user.
    with pytest.raises(PipelineError, match="bucket 2 refused"):
        run_step(FirstRows(buckets=4, second=3, refuse_bucket=2), {"data": data}, tmp_path / "refused", ray_executor)
    ray_executor.partition_bytes = 1
    checkpoint = tmp_path / "checkpoint"
    failing = FirstRows(fail_marker=str(tmp_path / "failed-once"), fail_at=5)
    with pytest.raises(RuntimeError, match="planted failure"):
        run_step(failing, {"data": data}, tmp_path / "first", ray_executor, checkpoint)
    table, _, stats = run_step(failing, {"data": data}, tmp_path / "second", ray_executor, checkpoint)
    assert table.equals(expected) and stats["partition_profile"]["resumed"] >= 1


def test_a_row_pass_on_two_nodes_writes_each_partition_on_a_worker_in_input_order(ray_executor, tmp_path, monkeypatch):
    import polars as pl
    from partition_stages import _VocabularyRows

    data = corpus_files(tmp_path / "corpus")
    passes_here = []
    rows = _VocabularyRows.rows
    monkeypatch.setattr(_VocabularyRows, "rows", lambda self, p, payload, out: passes_here.append(p.index) or rows(self, p, payload, out))
    for words, partition_bytes in (({"class", "return"}, 1), ({"class", "return"}, 1 << 40), ({"zzzz"}, 1)):
        vocab = Dataset.from_any(pl.DataFrame({"word": sorted(words)}))
        ray_executor.partition_bytes = partition_bytes
        out = tmp_path / f"ray-{partition_bytes}-{len(words)}"
        table, sides, stats = run_step(SplitRows(), {"data": data, "vocab": vocab}, out, ray_executor)
        with_word, without = split_rows(data.collect(), words)
        assert table.equals(with_word) and sides["without"].equals(without), (words, partition_bytes)
        assert table.columns == ["id", "text", "row"]
        assert stats["vocabulary"] == sorted(words)
        # The local executor writes each partition's rows as a task does: the same files, byte for byte.
        local_out = tmp_path / f"local-{partition_bytes}-{len(words)}"
        on_ray = len(passes_here)
        run_step(SplitRows(), {"data": data, "vocab": vocab}, local_out, LocalExecutor(partition_bytes=partition_bytes))
        del passes_here[on_ray:]  # the local passes ran here, as they should
        for folder in ("", "without"):
            local_parts = {p.name: p.read_bytes() for p in sorted((local_out / folder).glob("part-*.parquet"))}
            assert local_parts == {p.name: p.read_bytes() for p in sorted((out / folder).glob("part-*.parquet"))}
        if partition_bytes == 1 and without.height == data.num_rows:
            # One part per partition that had rows, named by partition; an output with none gets one empty part.
            assert len(list((out / "without").glob("part-*-000.parquet"))) == stats["partitions"]
            assert [p.name for p in out.glob("part-*.parquet")] == ["part-00000.parquet"]
    assert passes_here == []  # every partition's rows were written on a worker


def test_gather_rows_on_two_nodes_equals_the_local_one(ray_executor, tmp_path):
    import numpy as np
    from partition_stages import texts_at

    from pipeline.executors.ray_partitioned import _ray_gather
    from pipeline.partitioned import plan_partitions
    from pipeline.row_pass import local_gather

    data = corpus_files(tmp_path / "corpus")
    partitions = plan_partitions(data, 1)
    rows = np.array([1, 2, 40, 41, 90, data.num_rows - 1])
    ray_executor._cwd = str(tmp_path)
    on_ray = _ray_gather(ray_executor, partitions, {"num_cpus": 1})(texts_at, rows, "text")
    assert on_ray == local_gather(partitions)(texts_at, rows, "text")
    assert [r for part in on_ray for r, _ in part] == rows.tolist()


def test_join_rows_on_two_nodes_computes_each_pair_on_the_workers(ray_executor, tmp_path):
    import numpy as np
    from partition_stages import logged_word_sets, shared_words, word_sets_at
    from test_row_pass import join_pairs

    from pipeline.executors.ray_join import ray_join
    from pipeline.partitioned import plan_partitions
    from pipeline.row_pass import join_group, plan_join, source_parts, source_values

    data = corpus_files(tmp_path / "corpus")
    partitions = plan_partitions(data, 1)
    pairs = join_pairs(data.num_rows)
    ray_executor._cwd = str(tmp_path)
    join = ray_join(ray_executor, partitions, {"num_cpus": 1})
    one = plan_join(partitions, pairs, 1)  # the same pairs in one group, in this process
    expected = np.empty(len(pairs), np.int64)
    expected[one.order] = join_group(shared_words, pairs[one.order],
                                     [source_parts(source_values(word_sets_at, s, "text"), s)[0] for s in one.sources], None)
    assert join(word_sets_at, pairs, shared_words, "text").tolist() == expected.tolist()
    # A second join with the same function reuses the rows the first made: no partition is read again.
    log = tmp_path / "reads.log"
    assert join(logged_word_sets, pairs[:40], shared_words, str(log)).tolist() == expected[:40].tolist()
    read_once = log.read_text()
    assert read_once and join(logged_word_sets, pairs[10:30], shared_words, str(log)).tolist() == expected[10:30].tolist()
    assert log.read_text() == read_once
    assert join(word_sets_at, np.empty((0, 2), np.int64), shared_words, "text").tolist() == []
    with pytest.raises(PipelineError, match="refusing partition 1"):
        join(word_sets_at, pairs, shared_words, "refuse")


def _adjacent_pairs_reference(leaves: list[str]) -> str:
    """The merge grouping the Ray executor has always used: adjacent pairs level by level, odd last carried."""
    while len(leaves) > 1:
        paired = [f"({leaves[i]}+{leaves[i + 1]})" for i in range(0, len(leaves) - 1, 2)]
        leaves = paired + ([leaves[-1]] if len(leaves) % 2 else [])
    return leaves[0]


@pytest.mark.parametrize("n", range(1, 10))
def test_merge_tree_groups_as_adjacent_pairs_whatever_order_the_leaves_arrive(n):
    import random

    from pipeline.executors.ray_partitioned import _MergeTree

    def merge(a: str, b: str) -> str:
        merges.append(f"({a}+{b})")
        return merges[-1]

    names = [f"p{i}" for i in range(n)]
    for seed in range(5):
        merges: list[str] = []
        tree = _MergeTree(n, merge)
        order = list(range(n))
        random.Random(seed).shuffle(order)  # resumed checkpoints first, then maps in input order, etc.
        for i in order:
            tree.put(i, names[i])
        assert tree.root == _adjacent_pairs_reference(names)
        assert len(merges) == n - 1
        # Once merged, a partial state is no longer referenced by the tree (so Ray can free it).
        assert [ref for level in tree.levels for ref in level if ref is not None] == [tree.root]


def test_nothing_is_left_running_after_a_partition_fails(ray_executor, tmp_path):
    """A failed step stops mapping without cancelling tasks (ray.cancel can end the driver process, see
    `run_bounded`): only the tasks in flight finish, and none is still writing once the error is raised."""
    import time

    import polars as pl

    data = corpus_files(tmp_path / "corpus")
    vocab = Dataset.from_any(pl.DataFrame({"word": ["the", "of"]}))
    ray_executor.partition_bytes = 1
    failing = VocabularyCounts(fail_marker=str(tmp_path / "failed-once"), fail_at=1)
    checkpoint = tmp_path / "checkpoint"
    with pytest.raises(RuntimeError, match="planted failure"):
        run_step(failing, {"data": data, "vocab": vocab}, tmp_path / "out", ray_executor, checkpoint)
    finished = sorted(p.name for p in (checkpoint / "partitions").glob("*.pkl"))
    time.sleep(3)
    assert sorted(p.name for p in (checkpoint / "partitions").glob("*.pkl")) == finished
    # 2 CPUs, so at most 4 maps were in flight when partition 1 failed: the later ones never ran.
    assert len(finished) < 8


def test_warm_up_is_one_import_task_per_cpu_and_the_profile_says_when_maps_started(ray_executor, tmp_path):
    """One warm-up task per cluster CPU (at most one per partition) imports the stage's module on a worker;
    the profile says when the first map started, which is what the workers' start-up cost the step."""
    import time

    import polars as pl

    from pipeline.executors.ray_partitioned import _warm_workers

    stage = VocabularyCounts()
    options = ray_executor._task_options(stage)
    refs = _warm_workers(ray_executor, stage, options, partitions=10)
    assert len(refs) == ray_executor.cluster_cpus() == 2
    assert all(isinstance(pid, int) and pid > 0 for pid in ray.get(refs))
    assert len(_warm_workers(ray_executor, stage, options, partitions=1)) == 1
    ray.get(_warm_workers(ray_executor, stage, options, partitions=1))

    data = corpus_files(tmp_path / "corpus")
    vocab = Dataset.from_any(pl.DataFrame({"word": ["the", "of"]}))
    ray_executor.partition_bytes = 1
    started = time.time()
    _, _, stats = run_step(stage, {"data": data, "vocab": vocab}, tmp_path / "out", ray_executor)
    profile = stats["partition_profile"]
    assert started <= profile["first_map_started_at"] <= time.time()
    assert profile["total_map_cpu_s"] >= profile["median_map_cpu_s"] > 0
