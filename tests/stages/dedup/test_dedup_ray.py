"""Dedup steps on a real two-node Ray cluster (loopback) give the local executor's clusters, row for row."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from ray_cluster import ray_cluster  # noqa: F401 - the fixture is used by name

from pipeline import load, run_pipeline

pytest.importorskip("ray", reason="the Ray executor's tests need ray (pip install 'corpusforge[ray]')")

STEPS = [
    {"id": "docs", "stage": "python_docs", "params": {"granularity": "paragraph", "min_chars": 80}},
    {"id": "split", "stage": "split", "inputs": "docs", "params": {"fractions": {"train": 0.8, "test": 0.2}}},
    {"id": "decontaminated", "stage": "dedup_minhash", "inputs": {"data": "split:train", "reference": "split:test"},
     "params": {"threshold": 0.7}},
    {"id": "exact", "stage": "dedup_exact", "inputs": "docs", "params": {"normalization": "full", "keep": "longest"}},
]


def _tables(run_dir: Path, step: str) -> dict[str, pl.DataFrame]:
    manifest = json.loads((run_dir / step / "_manifest.json").read_text())
    tables = {"": load(run_dir / step).collect()}
    for side in manifest["side_outputs"]:
        tables[side] = load(run_dir / step / side).collect()
    return tables


def test_dedup_on_two_nodes_equals_local(ray_cluster, tmp_path):  # noqa: F811
    config = {"name": "dd", "seed": 3, "steps": STEPS}
    run_pipeline(config, workdir=tmp_path / "local")
    report = run_pipeline(config, workdir=tmp_path / "ray", executor="ray",
                          executor_options={"address": ray_cluster.address})
    assert report.ran == [s["id"] for s in STEPS]
    for step in ("decontaminated", "exact"):
        local, remote = _tables(tmp_path / "local" / "dd", step), _tables(tmp_path / "ray" / "dd", step)
        assert sorted(local) == ["", "clusters", "removed"]
        for name in local:
            assert local[name].equals(remote[name]), (step, name)
        assert local["removed"].height > 0, step
