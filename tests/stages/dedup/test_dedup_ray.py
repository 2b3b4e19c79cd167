"""Dedup steps on a real two-node Ray cluster (loopback) give the local executor's clusters, row for row,
for several partition sizes, with the LSH band shuffle run worker to worker (one reduce task per band)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from test_dedup_partitioned import _run, corpus  # noqa: F401 - the fixture is used by name

from pipeline import load, run_pipeline
from pipeline.executors import get_executor
from stages.dedup import DedupExact, DedupMinhash, DedupSemantic, minhash
from stages.dedup.outputs import DedupRows
from stages.dedup.signatures import SpilledSets

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


def test_dedup_on_two_nodes_equals_local(ray_cluster, tmp_path, monkeypatch):
    # Reducers run in this process only on the local executor: on Ray the workers reduce (they
    # import the stage afresh, so this patch does not reach them) and the driver never sees a key.
    # Likewise the kept and removed rows: written by the workers on Ray, never streamed by the driver.
    # And the candidate rows' texts that verification shingles again: on Ray the driver shingles only
    # reference rows (the test split here); the data's are shingled by gather tasks on the workers.
    reduced_here, rows_here, shingled_here = [], [], []
    reduce, rows, shingle = DedupMinhash.reduce, DedupRows.rows, minhash.shingle_sets
    monkeypatch.setattr(DedupMinhash, "reduce", lambda self, b, parts, bc: reduced_here.append(b) or reduce(self, b, parts, bc))
    monkeypatch.setattr(DedupRows, "rows", lambda self, p, payload, out: rows_here.append(out) or rows(self, p, payload, out))
    monkeypatch.setattr(minhash, "shingle_sets", lambda texts, *a: shingled_here.append(len(texts)) or shingle(texts, *a))
    config = {"name": "dd", "seed": 3, "steps": STEPS}
    run_pipeline(config, workdir=tmp_path / "local")
    bands = DedupMinhash(threshold=0.7).banding().bands
    buckets = bands + 1  # one reducer per band, one for the digests (exact copies)
    assert reduced_here == list(range(buckets)) and set(rows_here) == {"", "removed"}
    shingled_locally = sum(shingled_here)
    rows_here.clear()
    shingled_here.clear()
    report = run_pipeline(config, workdir=tmp_path / "ray", executor="ray",
                          executor_options={"address": ray_cluster.address})
    assert report.ran == [s["id"] for s in STEPS]
    assert reduced_here == list(range(buckets))  # no reducer ran on the driver
    assert rows_here == []  # nor did any row pass
    assert sum(shingled_here) < shingled_locally, (shingled_here, shingled_locally)
    stats = json.loads((tmp_path / "ray" / "dd" / "decontaminated" / "_manifest.json").read_text())["stats"]
    rows = load(tmp_path / "ray" / "dd" / "split" / "train").collect().height
    assert stats["shuffle_buckets"] == buckets
    # Every data row's band keys and digest went to the reducers (8 bytes each, plus array headers).
    assert rows * buckets * 8 <= stats["partition_profile"]["shuffle_bytes"] < rows * buckets * 8 + 1000 * buckets * stats["partitions"]
    for step in ("decontaminated", "exact"):
        local, remote = _tables(tmp_path / "local" / "dd", step), _tables(tmp_path / "ray" / "dd", step)
        assert sorted(local) == ["", "clusters", "removed"]
        for name in local:
            assert local[name].equals(remote[name]), (step, name)
            # The same files byte for byte: kept and removed rows are written per partition on both executors.
            folder = f"{step}@{name}" if name else step
            parts = [{p.name: p.read_bytes() for p in sorted((tmp_path / where / "dd" / folder).glob("part-*.parquet"))}
                     for where in ("local", "ray")]
            assert parts[0] == parts[1] and parts[0], (step, name)
        assert local["removed"].height > 0, step


@pytest.fixture(scope="module")
def ray_executor(ray_cluster):
    exe = get_executor("ray", address=ray_cluster.address)
    yield exe
    exe.close()


@pytest.mark.parametrize("partition_bytes", [1, 20_000])
@pytest.mark.parametrize("stage", [DedupMinhash(threshold=0.7), DedupMinhash(threshold=0.7, verify="signature"),
                                   DedupExact(normalization="full", keep="lowest_id"),
                                   DedupSemantic(embedding_column="vector", threshold=0.99, n_clusters=4)],
                         ids=["minhash", "minhash-signature", "exact", "semantic"])
def test_partitions_on_two_nodes_equal_local(ray_executor, corpus, tmp_path, stage, partition_bytes,  # noqa: F811
                                             monkeypatch):
    # Shingle sets or signatures that reach the driver (for Jaccard verification or the MinHash estimate). On Ray
    # the pairs of two data rows are compared on the workers (`Context.join_rows`), so with no reference the
    # driver holds none.
    spilled, append, signatures = [], SpilledSets.append, DedupMinhash._signatures
    monkeypatch.setattr(SpilledSets, "append", lambda self, h, o: spilled.append(len(o) - 1) or append(self, h, o))
    monkeypatch.setattr(DedupMinhash, "_signatures", lambda self, scan, rows: spilled.append(len(rows))
                        or signatures(self, scan, rows))
    data, reference = corpus
    for inputs in ({"data": data}, {"data": data, "reference": reference}):
        tag = str(len(inputs))
        spilled.clear()
        local = _run(stage, inputs, tmp_path / f"local{tag}", partition_bytes)
        spilled_locally = sum(spilled)
        spilled.clear()
        ray_executor.partition_bytes = partition_bytes
        on_ray = _run(stage, inputs, tmp_path / f"ray{tag}", partition_bytes, ray_executor)
        if isinstance(stage, DedupMinhash):
            assert sum(spilled) < spilled_locally
            assert sum(spilled) == 0 or len(inputs) == 2
        assert local[3] == on_ray[3] > 1
        assert local[0].equals(on_ray[0]) and local[2] == on_ray[2]
        assert local[1].keys() == on_ray[1].keys()
        for name in local[1]:
            assert local[1][name].equals(on_ray[1][name]), name


def test_key_range_reducers_on_two_nodes_equal_local(ray_executor, corpus, tmp_path, monkeypatch):  # noqa: F811
    """Band keys cut into key ranges (chosen on the driver, carried by the broadcast): the workers' reducers
    give the local clusters."""
    data, reference = corpus
    monkeypatch.setattr("stages.dedup.minhash.REDUCER_ROWS", 64)
    stage, inputs = DedupMinhash(threshold=0.7), {"data": data, "reference": reference}
    local = _run(stage, inputs, tmp_path / "local", 20_000)
    ray_executor.partition_bytes = 20_000
    on_ray = _run(stage, inputs, tmp_path / "ray", 20_000, ray_executor)
    assert local[2]["key_ranges"] == on_ray[2]["key_ranges"] >= 4
    assert local[0].equals(on_ray[0]) and local[2] == on_ray[2]
    for name in local[1]:
        assert local[1][name].equals(on_ray[1][name]), name
