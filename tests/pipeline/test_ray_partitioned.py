"""Partitioned stages on a real two-node loopback Ray cluster give exactly the local executor's results."""

from __future__ import annotations

import pytest
from partition_stages import VocabularyCounts
from ray_cluster import ray_cluster  # noqa: F401 - the fixture is used by name
from test_partitioned import corpus_files, leakage_inputs, run_step, same_outputs

from pipeline.executors import LocalExecutor, get_executor
from pipeline.io import Dataset

ray = pytest.importorskip("ray", reason="the Ray executor's tests need ray (pip install 'corpusforge[ray]')")


@pytest.fixture(scope="module")
def ray_executor(ray_cluster):  # noqa: F811
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
