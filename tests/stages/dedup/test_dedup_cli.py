"""Dedup bad input through the CLI: one line naming step, parameter and file, exit 2, nothing overwritten."""

from __future__ import annotations

import json

import polars as pl
from conftest import run_cli, write_config

BASE = """
name: dd
seed: 0
steps:
  - id: docs
    stage: python_docs
    params: {granularity: topic}
"""
GOOD = BASE + """  - id: dedup
    stage: dedup_minhash
    inputs: docs
    params: {threshold: 0.8}
"""


def _run(tmp_path, text):
    cfg = write_config(tmp_path / "c.yaml", text)
    return run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"), "--quiet")


def _fails(tmp_path, text, *expected):
    proc = _run(tmp_path, text)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for piece in expected:
        assert piece in proc.stderr, proc.stderr


def test_bad_dedup_configs_fail_cleanly_and_touch_nothing(tmp_path):
    assert _run(tmp_path, GOOD).returncode == 0
    step = tmp_path / "runs" / "dd" / "dedup"
    manifest = (step / "_manifest.json").read_text()
    rows = json.loads(manifest)["output"]["rows"]
    _fails(tmp_path, GOOD.replace("{threshold: 0.8}", "{threshold: 1.5}"),
           "step 'dedup' (stage 'dedup_minhash')", "parameter 'threshold'", "(0, 1]", "c.yaml")
    _fails(tmp_path, GOOD.replace("{threshold: 0.8}", "{threshold: 0}"), "parameter 'threshold'")
    _fails(tmp_path, GOOD.replace("{threshold: 0.8}", "{bands: 10, rows: 10}"),
           "parameter 'bands'", "bands x rows must equal num_perm", "10 x 10 = 100", "128")
    _fails(tmp_path, GOOD.replace("{threshold: 0.8}", "{bands: 16}"), "parameter 'rows'", "set both bands and rows")
    _fails(tmp_path, GOOD.replace("dedup_minhash", "dedup_semantic").replace("0.8", "1.5"),
           "step 'dedup' (stage 'dedup_semantic')", "parameter 'threshold'", "(0, 1]")
    empty = BASE + """  - id: blank
    stage: sql
    inputs: docs
    params: {query: "SELECT id, CASE WHEN topic = 'assert' THEN '  ' ELSE text END AS text FROM data"}
  - id: dedup
    stage: dedup_minhash
    inputs: blank
"""
    _fails(tmp_path, empty, "step 'dedup' (stage 'dedup_minhash')", "parameter 'text_column'",
           "null or empty text", "'pydoc:assert'", "runs/dd/blank")
    renamed = BASE + """  - id: other
    stage: sql
    inputs: docs
    params: {query: "SELECT id, text AS body FROM data"}
  - id: dedup
    stage: dedup_minhash
    inputs: {data: docs, reference: other}
"""
    _fails(tmp_path, renamed, "step 'dedup'", "input 'reference' has no column 'text'", "parameter 'text_column'",
           "output of step 'other'", "body")  # sql declares its columns: refused at validation
    semantic = BASE + "  - id: dedup\n    stage: dedup_semantic\n    inputs: docs\n"
    _fails(tmp_path, semantic, "step 'dedup' (stage 'dedup_semantic')", "no column 'embedding'",
           "parameter 'embedding_column'", "output of step 'docs'")  # python_docs declares its columns
    assert (step / "_manifest.json").read_text() == manifest
    assert pl.read_parquet(step / "part-*.parquet").height == rows


def test_all_identical_corpus_keeps_one_row_under_minhash_too(tmp_path):
    from pipeline import load

    same = BASE + """  - id: same
    stage: sql
    inputs: docs
    params: {query: "SELECT id, 'one and the same text, word for word' AS text FROM data"}
  - id: dedup
    stage: dedup_minhash
    inputs: same
"""
    assert _run(tmp_path, same).returncode == 0
    step = tmp_path / "runs" / "dd" / "dedup"
    stats = json.loads((step / "_manifest.json").read_text())["stats"]
    assert load(step).collect().height == 1 and stats["rows_removed"] == stats["rows_in"] - 1
    # A star per bucket, not a clique: n - 1 candidate pairs, not n**2 / 2.
    assert stats["candidate_pairs"] == stats["rows_in"] - 1
    assert load(step / "removed").collect()["similarity"].to_list() == [1.0] * stats["rows_removed"]


def test_all_identical_corpus_runs_and_keeps_one_row(tmp_path):
    same = BASE + """  - id: same
    stage: sql
    inputs: docs
    params: {query: "SELECT id, 'one and the same text' AS text FROM data"}
  - id: dedup
    stage: dedup_exact
    inputs: same
"""
    assert _run(tmp_path, same).returncode == 0
    step = tmp_path / "runs" / "dd" / "dedup"
    assert pl.read_parquet(step / "part-*.parquet").height == 1
    stats = json.loads((step / "_manifest.json").read_text())["stats"]
    assert stats["rows_removed"] == stats["rows_in"] - 1
    assert pl.read_parquet(step.with_name("dedup@removed") / "part-*.parquet").height == stats["rows_removed"]
