"""Kill -9 right after a checkpoint, resume: the step's files are byte-identical to an uninterrupted run.

Property test over every stage that checkpoints: any stage whose run writes under
`ctx.checkpoint_dir` must be listed in CHECKPOINTING (the test below checks the list against the
stage sources), with a config and a list of kill points covering every checkpoint boundary.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from unittest import mock

import polars as pl
import pytest
from conftest import run_cli, write_config

from pipeline.registry import STAGES, load_plugins

CALLBACK = "trust_callbacks:kill_once"
# stage name -> (params, kill points as (schedule, generation))
CHECKPOINTING = {
    "generations": (
        {"generations": 3, "schedules": ["replace", "accumulate"], "corpus_size": 30, "max_tokens": 20,
         "callback": CALLBACK},
        [("replace", 1), ("replace", 2), ("replace", 3), ("accumulate", 1), ("accumulate", 3)],
    ),
}


def test_every_checkpointing_stage_is_covered():
    load_plugins()
    users = {name for name, cls in STAGES.items()
             if "checkpoint_dir" in inspect.getsource(inspect.getmodule(cls)) and _uses_checkpoints(cls)}
    assert users == set(CHECKPOINTING)


def _uses_checkpoints(cls) -> bool:
    return any("checkpoint_dir" in inspect.getsource(member)
               for _, member in inspect.getmembers(cls, inspect.isfunction)
               if member.__module__ == cls.__module__)


def _corpus(path):
    words = "the a model data corpus real synthetic token word study collapse tail".split()
    texts = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(12 + i % 9)) for i in range(60)]
    pl.DataFrame({"id": [f"d{i}" for i in range(60)], "text": texts}).write_parquet(path)


def _tree_digest(step_dir):
    """Every file of a finished step but the manifest (which records timings), by relative path."""
    return {str(p.relative_to(step_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(step_dir.rglob("*")) if p.is_file() and p.name != "_manifest.json"}


def _run(tmp_path, cfg, workdir, env):
    with mock.patch.dict(os.environ, env):  # the subprocess inherits it
        return run_cli("run", str(cfg), "--workdir", str(workdir), "--quiet", timeout=300, in_process=False)  # killed


@pytest.mark.parametrize("stage", sorted(CHECKPOINTING))
def test_kill_after_a_checkpoint_then_resume_gives_identical_files(stage, tmp_path):
    params, kill_points = CHECKPOINTING[stage]
    data = tmp_path / "corpus.parquet"
    _corpus(data)
    params_yaml = repr(params).replace("'", '"').replace("True", "true").replace("None", "null")
    cfg = write_config(tmp_path / "c.yaml", f"name: resume\nseed: 3\nsteps:\n  - id: s\n    stage: {stage}\n"
                                             f"    inputs: {data}\n    params: {params_yaml}\n")
    never = tmp_path / "never-kill"
    never.touch()
    reference = _run(tmp_path, cfg, tmp_path / "reference",
                     {"TRUST_KILL_MARKER": str(never), "TRUST_KILL_AT": "0", "TRUST_KILL_SCHEDULE": "-"})
    assert reference.returncode == 0, reference.stderr
    expected = _tree_digest(tmp_path / "reference" / "resume" / "s")
    for schedule, generation in kill_points:
        workdir = tmp_path / f"killed-{schedule}-{generation}"
        env = {"TRUST_KILL_MARKER": str(workdir) + ".killed", "TRUST_KILL_AT": str(generation),
               "TRUST_KILL_SCHEDULE": schedule}
        killed = _run(tmp_path, cfg, workdir, env)
        assert killed.returncode == -9, (schedule, generation, killed.stderr)
        checkpoints = workdir / "resume" / ".checkpoints"
        assert any(checkpoints.rglob("*.parquet")) or generation == 1 and schedule == "replace"
        resumed = _run(tmp_path, cfg, workdir, env)
        assert resumed.returncode == 0, resumed.stderr
        assert _tree_digest(workdir / "resume" / "s") == expected, (schedule, generation)
        assert not checkpoints.exists(), list(checkpoints.rglob("*"))
        assert not any((workdir / "resume" / ".staging").iterdir())


def test_validating_a_config_imports_no_callback(tmp_path):
    marker = tmp_path / "imported"
    data = tmp_path / "corpus.parquet"
    _corpus(data)
    cfg = write_config(tmp_path / "c.yaml", f"name: v\nseed: 0\nsteps:\n  - id: s\n    stage: generations\n"
                                             f"    inputs: {data}\n    params: {{callback: '{CALLBACK}'}}\n")
    os.environ["TRUST_IMPORT_MARKER"] = str(marker)
    try:
        proc = run_cli("validate", str(cfg), in_process=False)  # a fresh interpreter: what validate imports
    finally:
        os.environ.pop("TRUST_IMPORT_MARKER")
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    bad = write_config(tmp_path / "b.yaml", cfg.read_text().replace(CALLBACK, "no_such_module_xyz:train"))
    proc = run_cli("validate", str(bad))
    assert proc.returncode == 2 and "parameter 'callback'" in proc.stderr and "no module named" in proc.stderr


def test_a_step_rebuilt_entirely_from_checkpoints_writes_the_same_bytes(tmp_path):
    # A kill after the last checkpoint (while the Parquet is written): everything comes from checkpoints.
    from pipeline.io import Dataset
    from pipeline.registry import stage_class
    from pipeline.stage import Context
    from pipeline.writing import write_table

    _corpus(tmp_path / "corpus.parquet")
    data = Dataset.from_parquet(tmp_path / "corpus.parquet")
    for name, (params, _) in CHECKPOINTING.items():
        stage = stage_class(name).from_params({k: v for k, v in params.items() if k != "callback"})
        digests, stats = [], []
        for attempt in ("first", "from-checkpoints"):
            out = tmp_path / name / attempt
            out.mkdir(parents=True)
            ctx = Context(step_id="s", seed=3, out_dir=out, checkpoint_dir=tmp_path / name / "ckpt")
            write_table(stage.run(ctx, data), out)
            digests.append(_tree_digest(out))
            stats.append(ctx.stats)
        assert digests[0] == digests[1], name
        assert stats[1].get("resumed_generations", 1) > 0
