"""corpus_metrics on a real two-node loopback Ray cluster: main's figures and the local executor's bytes."""

from __future__ import annotations

import pytest
from test_corpus_metrics_partitioned import MAIN_FINGERPRINTS, parquet_inputs, run_files

from pipeline.executors import LocalExecutor, get_executor

ray = pytest.importorskip("ray", reason="the Ray executor's tests need ray (pip install 'corpusforge[ray]')")


@pytest.fixture(scope="module")
def ray_executor(ray_cluster):
    exe = get_executor("ray", address=ray_cluster.address)
    yield exe
    exe.close()


@pytest.mark.parametrize("partition_bytes", [1, 20_000])  # one row group (of 15) per task; a few per task
@pytest.mark.parametrize("name", ["default_no_embeddings", "reference_input_lowercase", "one_group"])
def test_two_nodes_give_main_s_figures_and_the_local_bytes(ray_executor, tmp_path, name, partition_bytes):
    stage, inputs = parquet_inputs(name, tmp_path / "in")
    local = run_files(stage, inputs, tmp_path / "local", LocalExecutor(partition_bytes=partition_bytes))
    ray_executor.partition_bytes = partition_bytes
    on_ray = run_files(stage, inputs, tmp_path / "ray", ray_executor)
    assert on_ray[0] == local[0] == MAIN_FINGERPRINTS[name]
    assert on_ray[1] == local[1]
