"""Run-folder layout (issue #11, item 7): the obvious glob over a step folder reads the step once.

Side outputs are sibling folders `<step>@<side>/`, so DuckDB's `<step>/**/*.parquet` and
`pipeline.load(step)` count the same rows; side outputs still load (as `step:side` in a config,
and through `pipeline.load`), a tampered side output is still caught, a step written in the old
layout is re-run with a one-line reason, and a publication killed half-way is rolled back.
"""

from __future__ import annotations

import json
import os

import duckdb
import polars as pl
import pytest

import pipeline
from pipeline import run_pipeline
from pipeline.errors import InputDataError
from pipeline.rundir import RunDir

ROWS = 555


def _config(tmp_path, fractions=None):
    data = tmp_path / "in.parquet"
    if not data.exists():
        pl.DataFrame({"id": [f"r{i:04d}" for i in range(ROWS)],
                      "text": [f"row {i} text {i * 13 % 97}" for i in range(ROWS)]}).write_parquet(data)
    return {"name": "layout", "seed": 0, "steps": [
        {"id": "split", "stage": "split", "inputs": str(data),
         "params": {"fractions": fractions or {"train": 0.8, "test": 0.2}}},
        {"id": "test_copy", "stage": "select", "inputs": "split:test"},
    ]}


def _count(glob: str) -> int:
    return duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall()[0][0]


def test_recursive_glob_over_a_step_counts_its_rows_once(tmp_path):
    run_pipeline(_config(tmp_path), workdir=tmp_path / "runs")
    run = tmp_path / "runs" / "layout"
    loaded = pipeline.load(run / "split").collect().height
    assert loaded == ROWS
    assert _count(f"{run}/split/**/*.parquet") == loaded  # was 1,110 with side outputs inside
    assert pl.scan_parquet(f"{run}/split/**/*.parquet").collect().height == loaded
    assert not [p for p in (run / "split").iterdir() if p.is_dir()]
    train = _count(f"{run}/split@train/**/*.parquet")
    test = _count(f"{run}/split@test/*.parquet")
    assert train + test == ROWS and test > 0
    # One side output, four ways to name it.
    for name in ("split@test", "split:test", "split/test"):
        assert pipeline.load(run / name).collect().height == test, name
    assert pipeline.load(run / "test_copy").collect().height == test
    manifest = json.loads((run / "split" / "_manifest.json").read_text())
    assert manifest["format"] == 2 and sorted(manifest["side_outputs"]) == ["test", "train"]


def test_a_tampered_side_output_is_recomputed(tmp_path):
    workdir = tmp_path / "runs"
    run_pipeline(_config(tmp_path), workdir=workdir)
    part = next((workdir / "layout" / "split@test").glob("part-*.parquet"))
    pl.read_parquet(part).with_columns(pl.col("text").str.to_uppercase()).write_parquet(part)
    report = run_pipeline(_config(tmp_path), workdir=workdir)
    assert report.step("split").status == "ran"
    assert "test/part-" in report.step("split").recomputed_because
    assert pipeline.load(workdir / "layout" / "test_copy").collect()["text"].str.contains("row").all()


def test_a_missing_side_folder_is_named_and_refused_under_only(tmp_path):
    workdir = tmp_path / "runs"
    run_pipeline(_config(tmp_path), workdir=workdir)
    import shutil

    shutil.rmtree(workdir / "layout" / "split@test")
    with pytest.raises(InputDataError, match="split@test/ is missing"):
        run_pipeline(_config(tmp_path), workdir=workdir, only="test_copy")


def test_a_step_in_the_old_layout_is_rerun_with_a_reason(tmp_path):
    """A run folder from before side folders moved out: the step is re-run and its old nested
    side folders go with the old step folder."""
    workdir = tmp_path / "runs"
    run_pipeline(_config(tmp_path), workdir=workdir)
    run = workdir / "layout"
    for side in ("train", "test"):  # rebuild the old layout by hand
        os.rename(run / f"split@{side}", run / "split" / side)
    manifest_path = run / "split" / "_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format"] = 1
    manifest_path.write_text(json.dumps(manifest))
    report = run_pipeline(_config(tmp_path), workdir=workdir)
    assert report.step("split").status == "ran"
    assert "older corpusforge" in report.step("split").recomputed_because
    assert _count(f"{run}/split/**/*.parquet") == ROWS
    assert (run / "split@test").is_dir() and not (run / "split" / "test").exists()


@pytest.mark.parametrize("killed_before", range(6))
def test_a_publication_killed_before_its_commit_is_rolled_back(tmp_path, monkeypatch, killed_before):
    """Kill the swap before each of its six renames (old sides out x2, old step out, new sides in
    x2, new step in = the commit): the next run's recovery puts back the old step with its old
    side outputs, never a mix."""
    workdir = tmp_path / "runs"
    run_pipeline(_config(tmp_path), workdir=workdir)
    run = workdir / "layout"
    before = {name: pipeline.load(run / name).collect() for name in ("split", "split@train", "split@test")}
    real_rename = os.rename
    renames = []

    def dies(src, dst):
        if ".staging" in str(src) or ".trash" in str(dst):
            if len(renames) == killed_before:
                raise KeyboardInterrupt("killed mid-publication")
            renames.append(dst)
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", dies)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(_config(tmp_path, {"train": 0.5, "test": 0.5}), workdir=workdir, only="split")
    monkeypatch.setattr(os, "rename", real_rename)
    holder = RunDir(workdir, "layout")
    holder.lock()
    holder.unlock()
    assert not (run / ".trash").exists()
    for name, frame in before.items():
        assert pipeline.load(run / name).collect().equals(frame), name
    assert run_pipeline(_config(tmp_path), workdir=workdir).cached == ["split", "test_copy"]


def test_a_publication_killed_after_its_commit_keeps_the_new_step(tmp_path, monkeypatch):
    workdir = tmp_path / "runs"
    run_pipeline(_config(tmp_path), workdir=workdir)
    import shutil

    real_rmtree = shutil.rmtree

    def dies(path, *args, **kwargs):
        if ".trash" in str(path):
            raise KeyboardInterrupt("killed after the commit")
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", dies)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(_config(tmp_path, {"train": 0.5, "test": 0.5}), workdir=workdir, only="split")
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    report = run_pipeline(_config(tmp_path, {"train": 0.5, "test": 0.5}), workdir=workdir, only="split")
    assert report.cached == ["split"]
    assert not (workdir / "layout" / ".trash").exists()
