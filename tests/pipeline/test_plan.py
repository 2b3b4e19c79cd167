"""`pipeline run --dry-run`: the plan says which steps are cached and which will run, and why; then the run agrees."""

from __future__ import annotations

import json
from pydoc_data.topics import topics

import polars as pl
from conftest import run_cli, write_config

from pipeline.plan import plan_run
from pipeline.runner import run_pipeline

CONFIG = """
name: planned
seed: 3
steps:
  - id: docs
    stage: python_docs
    params: {granularity: paragraph, min_chars: 100}
  - id: prose
    stage: length_filter
    inputs: docs
    params: {min_words: 20}
  - id: split
    stage: split
    inputs: prose
    params: {fractions: {train: 0.8, test: 0.2}}
  - id: extra
    stage: select
    inputs: EXTRA
    params: {columns: [id, text]}
"""


def _check_plan_then_run(config, workdir, **kwargs):
    """Plan, run, and hold the plan to what happened; returns {step: (action, reason)}."""
    plan = plan_run(config, workdir=workdir, **kwargs)
    report = run_pipeline(config, workdir=workdir, **kwargs)
    planned = {s.id: s.action for s in plan}
    assert {k for k, a in planned.items() if a == "cached"} == set(report.cached)
    assert {k for k, a in planned.items() if a == "run"} <= set(report.ran)
    assert set(report.ran) <= {k for k, a in planned.items() if a in ("run", "after")}
    for step in plan:  # the plan's fingerprint is the one the run used
        if step.fingerprint:
            assert step.fingerprint == report.step(step.id).fingerprint
    # ... and the run records the plan's reason for each step it ran again (a first run: none); a step planned
    # to run after its upstream ran because that input changed.
    recorded = {s["id"]: s["recomputed_because"] for s in json.loads((report.run_dir / "_run.json").read_text())["steps"]}
    for step in plan:
        if step.id in report.ran:
            expected = None if step.reason == "never run" else step.reason
            if step.action == "after":
                assert recorded[step.id].startswith("input changed: ")
            else:
                assert report.step(step.id).recomputed_because == recorded[step.id] == expected
    return {s.id: (s.action, s.reason) for s in plan}


def test_plan_matches_what_runs(tmp_path):
    extra = tmp_path / "extra.parquet"
    names = sorted(topics)[:20]
    pl.DataFrame({"id": names, "text": [topics[n] for n in names]}).write_parquet(extra)
    config = write_config(tmp_path / "p.yaml", CONFIG.replace("EXTRA", str(extra)))
    work = tmp_path / "runs"

    first = _check_plan_then_run(config, work)
    assert first == {k: ("run", "never run") for k in ("docs", "prose", "split", "extra")}
    again = _check_plan_then_run(config, work)
    assert {a for a, _ in again.values()} == {"cached"}

    changed = _check_plan_then_run(config, work, overrides=["prose.min_words=60"])
    assert changed["docs"] == ("cached", "")
    assert changed["prose"] == ("run", "params changed: min_words 20 -> 60")
    assert changed["split"] == ("after", "upstream prose will run")
    assert changed["extra"] == ("cached", "")

    pl.DataFrame({"id": names[:5], "text": [topics[n] for n in names[:5]]}).write_parquet(extra)
    moved = _check_plan_then_run(config, work, overrides=["prose.min_words=60"])
    assert moved["extra"] == ("run", "input changed: data")
    assert {k for k, (a, _) in moved.items() if a == "cached"} == {"docs", "prose", "split"}

    forced = _check_plan_then_run(config, work, overrides=["prose.min_words=60"], force=True, until="prose")
    assert forced == {"docs": ("run", "forced (--force)"), "prose": ("run", "forced (--force)"),
                      "split": ("skipped", ""), "extra": ("skipped", "")}


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    config = write_config(tmp_path / "p.yaml", CONFIG.split("  - id: extra")[0])
    proc = run_cli("run", str(config), "--workdir", str(tmp_path / "runs"), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "docs   (python_docs) will run: never run" in proc.stdout
    assert "3 will run, 0 will run if their input changes, 0 cached" in proc.stdout
    assert not (tmp_path / "runs").exists()
    done = run_cli("run", str(config), "--workdir", str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr
    summary = done.stdout.split("summary of ")[1]
    assert "split (split, ran): " in summary and "rows_train" in summary
    assert f"{tmp_path / 'runs' / 'planned' / 'split@train'}/" in summary
    proc = run_cli("run", str(config), "--workdir", str(tmp_path / "runs"), "--dry-run", "--set", "prose.min_words=5")
    assert "prose  (length_filter) will run: params changed: min_words 20 -> 5" in proc.stdout
    assert "docs   (python_docs) cached, unchanged" in proc.stdout


def test_show_json_has_the_record_and_every_manifest(tmp_path):
    config = write_config(tmp_path / "p.yaml", CONFIG.split("  - id: extra")[0])
    assert run_cli("run", str(config), "--workdir", str(tmp_path / "runs"), "--quiet").returncode == 0
    proc = run_cli("show", "planned", "--workdir", str(tmp_path / "runs"), "--json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert [s["id"] for s in shown["steps"]] == ["docs", "prose", "split"]
    assert shown["manifests"]["split"]["stats"]["rows_train"] + shown["manifests"]["split"]["stats"]["rows_test"] \
        == shown["manifests"]["prose"]["output"]["rows"]
    missing = run_cli("show", "nothing-here", "--workdir", "relative/runs", cwd=tmp_path)
    assert missing.returncode == 2 and f"(resolved from {tmp_path})" in missing.stderr


def test_only_says_when_the_step_it_reads_predates_its_config(tmp_path, capsys):
    # `--only split --set prose.min_words=10` said "split cached, unchanged" and nothing of prose: split had read
    # prose's output made with min_words 40, and the --set changed nothing.
    config = {"name": "o", "seed": 0, "steps": [
        {"id": "docs", "stage": "python_docs", "params": {"granularity": "topic"}},
        {"id": "prose", "stage": "length_filter", "inputs": "docs", "params": {"min_words": 40}},
        {"id": "split", "stage": "split", "inputs": "prose"}]}
    run_pipeline(config, workdir=tmp_path)
    note = "its output predates the config (params changed: min_words 40 -> 10)"
    plan = {s.id: s for s in plan_run(config, workdir=tmp_path, only="split", overrides=["prose.min_words=10"])}
    assert plan["prose"].action == "skipped" and note in plan["prose"].reason and plan["docs"].reason == ""
    capsys.readouterr()
    run_pipeline(config, workdir=tmp_path, only="split", overrides=["prose.min_words=10"], quiet=False)
    assert f"prose (length_filter): not selected; {note}" in capsys.readouterr().out
    assert plan_run(config, workdir=tmp_path, only="split")[1].reason == ""  # unchanged: nothing to say


def test_a_damaged_manifest_is_named_as_such_not_as_a_stage_change(tmp_path):
    # A manifest without its stage read "stage changed (None vNone -> length_filter v1)".
    config = write_config(tmp_path / "p.yaml", CONFIG.split("  - id: extra")[0])
    work = tmp_path / "runs"
    run_pipeline(config, workdir=work, quiet=True)
    manifest = work / "planned" / "prose" / "_manifest.json"
    kept = {k: v for k, v in json.loads(manifest.read_text()).items() if k not in ("stage", "fingerprint")}
    manifest.write_text(json.dumps(kept))
    planned = {s.id: (s.action, s.reason) for s in plan_run(config, workdir=work)}
    assert planned["prose"] == ("run", "its manifest is incomplete or damaged")
    report = run_pipeline(config, workdir=work, quiet=True)
    assert report.step("prose").recomputed_because == "its manifest is incomplete or damaged"
