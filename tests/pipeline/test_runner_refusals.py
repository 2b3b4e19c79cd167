"""Bad input data met while running (pipeline/runner.py): one clear line, exit 2, nothing lost; --debug shows the traceback."""

from __future__ import annotations

import json

import polars as pl
from cli_failures import BASE, fails_cleanly
from conftest import run_cli, write_config


def test_empty_input(tmp_path):
    text = BASE + """  - id: none
    stage: sql
    inputs: docs
    params: {query: "SELECT * FROM data WHERE false"}
  - id: s
    stage: sample
    inputs: none
    params: {n: 2}
"""
    fails_cleanly(tmp_path, text, "step 's' (stage 'sample')", "input 'data' has no rows", "runs/bad/none")


def test_corrupt_parquet_input(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not really parquet")
    text = f"name: bad\nseed: 0\nsteps:\n  - id: s\n    stage: select\n    inputs: {broken}\n"
    fails_cleanly(tmp_path, text, "step 's' (stage 'select')", "not a readable Parquet file", str(broken))


def test_failing_config_change_leaves_outputs_untouched(tmp_path):
    good = BASE + "  - id: s\n    stage: sample\n    inputs: docs\n    params: {n: 5}\n"
    cfg = write_config(tmp_path / "c.yaml", good)
    assert run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"), "--quiet").returncode == 0
    manifest = (tmp_path / "runs" / "bad" / "s" / "_manifest.json").read_text()
    bad = good.replace("{n: 5}", "{n: 5, id_column: nope}")
    fails_cleanly(tmp_path, bad, "no column 'nope'")
    assert (tmp_path / "runs" / "bad" / "s" / "_manifest.json").read_text() == manifest
    assert pl.read_parquet(tmp_path / "runs" / "bad" / "s" / "part-*.parquet").height == 5
    assert json.loads(manifest)["output"]["rows"] == 5


def test_debug_shows_traceback(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", BASE + "  - id: s\n    stage: splt\n")
    proc = run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"), "--debug", in_process=False)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "unknown stage 'splt'" in proc.stderr.splitlines()[-1]


def test_a_step_of_this_run_read_by_path_is_refused_naming_the_step(tmp_path):
    # Read by path, a step's folder is no DAG input: `g` read `f` as the last run left it (before `f` re-ran),
    # and a step reading its own folder re-ran on its own last output at every run.
    run = tmp_path / "runs" / "bad"
    text = BASE + "  - id: f\n    stage: length_filter\n    inputs: docs\n    params: {min_words: 3}\n"
    assert run_cli("run", str(write_config(tmp_path / "c.yaml", text)), "--workdir", str(run.parent)).returncode == 0
    manifest = (run / "f" / "_manifest.json").read_text()
    fails_cleanly(tmp_path, text + f"  - id: g\n    stage: select\n    inputs: '{run / 'f'}/*.parquet'\n",
                  "step 'g'", "is the output of step 'f' of this run", 'name the step instead (data: "f")')
    fails_cleanly(tmp_path, text.replace("inputs: docs", f"inputs: {run / 'f'}"),
                  "step 'f'", "is this step's own output")
    assert (run / "f" / "_manifest.json").read_text() == manifest
