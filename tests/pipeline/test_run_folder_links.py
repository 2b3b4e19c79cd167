"""A run folder with a planted symbolic link: the engine refuses in one line and touches nothing outside.

Each link points at a folder or file outside the run folder that the engine would otherwise move,
truncate or delete (issue #17); the test checks the target byte for byte afterwards.
"""

from __future__ import annotations

import os

import polars as pl
import pytest
from conftest import run_cli, write_config

from pipeline import run_pipeline
from pipeline.errors import PipelineError


def _pipeline(tmp_path):
    data = tmp_path / "in.parquet"
    pl.DataFrame({"id": ["a", "b"], "text": ["x y", "z"]}).write_parquet(data)
    return {"name": "links", "seed": 0, "steps": [
        {"id": "copy", "stage": "select", "inputs": str(data)},
        {"id": "ids", "stage": "select", "inputs": "copy", "params": {"columns": ["id"]}},
    ]}


def _outside(tmp_path):
    """A folder outside the run folder holding a file and a folder shaped like engine bookkeeping."""
    victim = tmp_path / "victim"
    (victim / "copy@0123456789ab").mkdir(parents=True)
    (victim / "copy@0123456789ab" / "keep.txt").write_text("mine")
    (victim / "ids@0123456789abcdef").mkdir()
    (victim / "notes.txt").write_text("precious")
    return victim


def _snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("name", [".trash", ".staging", ".checkpoints", "copy", ".cache", "links"])
def test_a_planted_folder_link_is_refused_and_its_target_untouched(tmp_path, name):
    config = _pipeline(tmp_path)
    workdir = tmp_path / "runs"
    run_pipeline(config, workdir=workdir)
    victim = _outside(tmp_path)
    before = _snapshot(victim)
    link_parent = workdir if name in (".cache", "links") else workdir / "links"  # "links": the run folder itself
    target = link_parent / name
    if target.is_dir() and not target.is_symlink():
        import shutil

        shutil.rmtree(target)
    os.symlink(victim, target)
    with pytest.raises(PipelineError, match="symbolic link"):
        run_pipeline(config, workdir=workdir, force=True)
    assert _snapshot(victim) == before
    assert os.path.islink(target)
    # The refusal released the lock: once the link is gone, the same run goes through.
    os.unlink(target)
    assert run_pipeline(config, workdir=workdir).steps


def test_a_lock_link_is_not_truncated(tmp_path):
    config = _pipeline(tmp_path)
    workdir = tmp_path / "runs"
    (workdir / "links").mkdir(parents=True)
    precious = tmp_path / "precious.txt"
    precious.write_text("do not truncate me")
    os.symlink(precious, workdir / "links" / ".lock")
    with pytest.raises(PipelineError, match="symbolic link"):
        run_pipeline(config, workdir=workdir)
    assert precious.read_text() == "do not truncate me"


def test_a_link_inside_trash_is_never_moved_into_place(tmp_path):
    config = _pipeline(tmp_path)
    workdir = tmp_path / "runs"
    run_pipeline(config, workdir=workdir)
    victim = _outside(tmp_path)
    before = _snapshot(victim)
    trash = workdir / "links" / ".trash"
    trash.mkdir(exist_ok=True)
    os.symlink(victim, trash / "newstep@0123456789ab")
    run_pipeline(config, workdir=workdir)
    assert not os.path.lexists(workdir / "links" / "newstep")
    assert _snapshot(victim) == before


def test_the_cli_says_it_in_one_line(tmp_path):
    config = _pipeline(tmp_path)
    data = config["steps"][0]["inputs"]
    cfg = write_config(tmp_path / "c.yaml", f"name: links\nseed: 0\nsteps:\n  - id: copy\n    stage: select\n"
                                            f"    inputs: {data}\n")
    (tmp_path / "runs" / "links").mkdir(parents=True)
    victim = _outside(tmp_path)
    os.symlink(victim, tmp_path / "runs" / "links" / ".checkpoints")
    proc = run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'.checkpoints' in the run folder is a symbolic link" in lines[0], lines


def test_a_finished_run_leaves_no_checkpoint_folder(tmp_path):
    workdir = tmp_path / "runs"
    run_pipeline(_pipeline(tmp_path), workdir=workdir)
    assert not (workdir / "links" / ".checkpoints").exists()


@pytest.mark.parametrize("force", [False, True])
def test_a_side_output_folder_replaced_by_a_link_is_refused_and_its_target_untouched(tmp_path, force):
    data = tmp_path / "in.parquet"
    pl.DataFrame({"id": [str(i) for i in range(20)], "text": ["x y"] * 20}).write_parquet(data)
    config = {"name": "sides", "seed": 0, "steps": [
        {"id": "split", "stage": "split", "inputs": str(data)},
        {"id": "ids", "stage": "select", "inputs": "split:train", "params": {"columns": ["id"]}}]}
    workdir = tmp_path / "runs"
    run_pipeline(config, workdir=workdir)
    victim = _outside(tmp_path)
    before = _snapshot(victim)
    side = workdir / "sides" / "split@train"
    import shutil

    shutil.rmtree(side)
    os.symlink(victim, side)
    with pytest.raises(PipelineError, match="'split@train' in the run folder is a symbolic link"):
        run_pipeline(config, workdir=workdir, force=force)  # read as an input, or replaced when the step re-runs
    assert _snapshot(victim) == before and os.path.islink(side)
