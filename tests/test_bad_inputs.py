"""Bad input gets one clear line naming step, key and file, exit code 2, no traceback, nothing lost."""

from __future__ import annotations

import json

import polars as pl
import pytest
from conftest import run_cli, write_config

BASE = """
name: bad
seed: 0
steps:
  - id: docs
    stage: python_docs
    params: {granularity: topic}
"""


def _fails(tmp_path, text, *expected, code=2, extra=()):
    cfg = write_config(tmp_path / "c.yaml", text)
    proc = run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"), *extra)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    for piece in expected:
        assert piece in proc.stderr, proc.stderr
    return proc


def test_unknown_stage_suggests_the_right_one(tmp_path):
    _fails(tmp_path, BASE + "  - id: s\n    stage: splt\n    inputs: docs\n",
           "step 's'", "unknown stage 'splt'", "did you mean 'split'", "c.yaml")


def test_unknown_param(tmp_path):
    _fails(tmp_path, BASE + "  - id: s\n    stage: sample\n    inputs: docs\n    params: {count: 3}\n",
           "step 's' (stage 'sample')", "parameter 'count'", "unknown parameter", "takes: n, fraction")


def test_wrong_type(tmp_path):
    _fails(tmp_path, BASE + "  - id: s\n    stage: sample\n    inputs: docs\n    params: {n: lots}\n",
           "parameter 'n'", "expects int | null, got 'lots'")


def test_invalid_value(tmp_path):
    _fails(tmp_path, BASE + "  - id: s\n    stage: sample\n    inputs: docs\n    params: {fraction: 1.5}\n",
           "parameter 'fraction'", "must be in [0, 1]")


def test_missing_column(tmp_path):
    _fails(tmp_path, BASE + "  - id: f\n    stage: length_filter\n    inputs: docs\n    params: {text_column: body}\n",
           "step 'f' (stage 'length_filter')", "no column 'body'", "parameter 'text_column'", "columns are")


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
    _fails(tmp_path, text, "step 's' (stage 'sample')", "input 'data' has no rows", "runs/bad/none")


def test_cycle_and_duplicate_ids(tmp_path):
    cyc = BASE + "  - id: a\n    stage: select\n    inputs: b\n  - id: b\n    stage: select\n    inputs: a\n"
    _fails(tmp_path, cyc, "cycle", "a -> b -> a")
    dup = BASE + "  - id: docs\n    stage: python_docs\n"
    _fails(tmp_path, dup, "duplicate step id 'docs'", "c.yaml")


def test_step_id_cannot_escape_the_workdir(tmp_path):
    _fails(tmp_path, BASE + "  - id: ../../evil\n    stage: select\n    inputs: docs\n", "'id' must be", "run folder")
    assert not (tmp_path / "evil").exists()


def test_yaml_cannot_run_code(tmp_path):
    text = BASE + "  - id: s\n    stage: !!python/object/apply:os.system ['touch pwned']\n"
    _fails(tmp_path, text, "not valid YAML", "c.yaml")
    assert not (tmp_path / "pwned").exists()


def test_corrupt_parquet_input(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not really parquet")
    text = f"name: bad\nseed: 0\nsteps:\n  - id: s\n    stage: select\n    inputs: {broken}\n"
    _fails(tmp_path, text, "step 's' (stage 'select')", "not a readable Parquet file", str(broken))


def test_non_utf8_text(tmp_path):
    d = tmp_path / "texts"
    d.mkdir()
    (d / "good.txt").write_text("plain words")
    (d / "latin1.txt").write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    text = f"name: bad\nseed: 0\nsteps:\n  - id: t\n    stage: read_text\n    params: {{path: '{d}'}}\n"
    _fails(tmp_path, text, "step 't' (stage 'read_text')", "parameter 'encoding'", "latin1.txt", "not valid utf-8 at byte 3")


def test_bad_set_override_and_missing_config(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", BASE)
    proc = run_cli("run", str(cfg), "--set", "docs.granularity=chapter", "--workdir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "parameter 'granularity'" in proc.stderr and "'topic' | 'paragraph'" in proc.stderr
    proc = run_cli("run", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "config file not found" in proc.stderr


def test_failing_config_change_leaves_outputs_untouched(tmp_path):
    good = BASE + "  - id: s\n    stage: sample\n    inputs: docs\n    params: {n: 5}\n"
    cfg = write_config(tmp_path / "c.yaml", good)
    assert run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"), "--quiet").returncode == 0
    manifest = (tmp_path / "runs" / "bad" / "s" / "_manifest.json").read_text()
    bad = good.replace("{n: 5}", "{n: 5, id_column: nope}")
    _fails(tmp_path, bad, "no column 'nope'")
    assert (tmp_path / "runs" / "bad" / "s" / "_manifest.json").read_text() == manifest
    assert pl.read_parquet(tmp_path / "runs" / "bad" / "s" / "part-*.parquet").height == 5
    assert json.loads(manifest)["output"]["rows"] == 5


def test_debug_shows_traceback(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", BASE + "  - id: s\n    stage: splt\n")
    proc = run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"), "--debug")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "unknown stage 'splt'" in proc.stderr.splitlines()[-1]


@pytest.mark.parametrize("source,content,param", [
    ("read_jsonl", b'{"text": "ok"}\n{"text": \n', "path"),
    ("read_csv", b"id,body\n1,hello\n", "text_column"),
])
def test_source_errors_name_file_and_param(tmp_path, source, content, param):
    f = tmp_path / ("in.jsonl" if source == "read_jsonl" else "in.csv")
    f.write_bytes(content)
    text = f"name: bad\nseed: 0\nsteps:\n  - id: src\n    stage: {source}\n    params: {{path: '{f}'}}\n"
    _fails(tmp_path, text, "step 'src'", f"parameter '{param}'", str(f))
