"""`index` and `retrieve` on a real two-node loopback Ray cluster give the local executor's index and rows."""

from __future__ import annotations

import pytest
from test_retrieval_partitioned import build, retrieve, same_index, vector_files

from pipeline.executors import LocalExecutor, get_executor
from pipeline.io import Dataset

pytest.importorskip("ray", reason="the Ray executor's tests need ray (pip install 'corpusforge[ray]')")


@pytest.fixture(scope="module")
def vectors(tmp_path_factory) -> Dataset:
    return vector_files(tmp_path_factory.mktemp("vectors"))



@pytest.fixture(scope="module")
def ray_executor(ray_cluster):
    exe = get_executor("ray", address=ray_cluster.address)
    yield exe
    exe.close()


@pytest.mark.parametrize(("size", "refine"), [(1, None), (50_000, "sq8")])
def test_index_and_retrieve_on_two_nodes_equal_local(vectors, ray_executor, tmp_path, size, refine):
    local = build(vectors, tmp_path / "local", LocalExecutor(partition_bytes=size), "IVF16,PQ8x4", refine)
    ray_executor.partition_bytes = size
    on_ray = build(vectors, tmp_path / "ray", ray_executor, "IVF16,PQ8x4", refine)
    same_index(local, on_ray)
    rows_local, _ = retrieve(vectors, local[0], tmp_path / "nn-local", LocalExecutor(partition_bytes=size))
    rows_ray, stats = retrieve(vectors, local[0], tmp_path / "nn-ray", ray_executor)
    assert stats["partitions"] > 2
    assert rows_local.equals(rows_ray)
