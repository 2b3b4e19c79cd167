"""Chunk-overlap, semantic and paraphrase evidence on a real two-node loopback Ray cluster: the local executor's
findings (one module, so the tests share one cluster's start)."""

from __future__ import annotations

import pytest
from test_chunks_partitioned import audit_inputs, run_audit, same_findings

from pipeline.executors import LocalExecutor, get_executor

pytest.importorskip("ray", reason="the Ray executor's tests need ray (pip install 'corpusforge[ray]')")


@pytest.mark.parametrize("size", [1, 15_000])
def test_chunk_and_semantic_evidence_on_two_nodes_equal_local(ray_cluster, tmp_path, size):
    inputs = audit_inputs(tmp_path / "corpus")
    local = run_audit(inputs, tmp_path / "local", LocalExecutor(partition_bytes=size))
    exe = get_executor("ray", address=ray_cluster.address, partition_bytes=size)
    try:
        on_ray = run_audit(inputs, tmp_path / "ray", exe)
    finally:
        exe.close()
    assert on_ray[2]["partitions"] == local[2]["partitions"] > 2
    same_findings(local, on_ray)


def test_paraphrase_evidence_on_two_nodes_equals_local(ray_cluster, tmp_path):
    """The paraphrase kind's candidates merge across partitions (BM25 weights from one sample of the corpus)."""
    inputs = audit_inputs(tmp_path / "corpus")
    params = {"evidence": ["paraphrase"], "candidates": 4, "report_items": 3}
    local = run_audit(inputs, tmp_path / "local", LocalExecutor(partition_bytes=1 << 40), **params)
    exe = get_executor("ray", address=ray_cluster.address, partition_bytes=15_000)
    try:
        on_ray = run_audit(inputs, tmp_path / "ray", exe, **params)
    finally:
        exe.close()
    assert on_ray[2]["partitions"] > 2 and local[2]["partitions"] == 1
    same_findings(local, on_ray)
