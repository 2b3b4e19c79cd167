"""nested_subsets picks the same rows on a real two-node Ray cluster as locally."""

import polars as pl
import pytest

from pipeline import load, run_pipeline

pytest.importorskip("ray", reason="the Ray executor's tests need ray (pip install 'corpusforge[ray]')")


def test_same_subsets_locally_and_on_ray(ray_cluster, tmp_path):
    config = {"name": "nested", "seed": 5, "steps": [
        {"id": "docs", "stage": "python_docs", "params": {"granularity": "paragraph", "min_chars": 80}},
        {"id": "subsets", "stage": "nested_subsets", "inputs": "docs",
         "params": {"min_size": 50, "max_size": 800, "num_sizes": 4, "strata": "topic", "side_outputs": True}},
    ]}
    run_pipeline(config, workdir=tmp_path / "local")
    run_pipeline(config, workdir=tmp_path / "ray", executor="ray",
                 executor_options={"address": ray_cluster.address})
    local = load(tmp_path / "local" / "nested" / "subsets").collect()
    remote = load(tmp_path / "ray" / "nested" / "subsets").collect()
    assert local.height == 800 and local.equals(remote)
    for side in ("sizes", "size_50", "size_800"):
        a = load(tmp_path / "local" / "nested" / "subsets" / side).collect()
        b = load(tmp_path / "ray" / "nested" / "subsets" / side).collect()
        assert a.equals(b), side
    assert pl.Series(local.filter(pl.col("subset_index") == 0)["id"]).len() == 50
