"""`pipeline audit TRAIN TEST`: the default leakage audit of two corpora, no config needed.

Both arguments are read by `read_corpus`, so they may be in any supported format (Parquet, JSON
Lines, CSV, text; plain, .gz or .zst; a folder, a glob, or a saved DatasetDict as `folder:split`).
The run folder is `<workdir>/<name>`; an audit of other inputs already there is never replaced
silently: the command refuses unless given `--force` (or another `--name`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.errors import InputDataError, PipelineError
from pipeline.files import describe_path, find_files, is_glob
from stages._report.index import write_run_index
from stages.leakage.evidence import VERDICTS
from stages.sources import is_saved_hf_dataset, split_path


def _source_step(step_id: str, path: str, text_column: str, id_column: str | None,
                 split: str | None = None) -> dict:
    folder, split = split_path(path, split)
    if not Path(folder).exists() and not is_glob(folder):
        raise InputDataError(f"the {step_id.upper()} argument names a path that does not exist",
                             file=describe_path(path))
    if is_glob(folder):
        find_files(folder, param=step_id)
    params: dict[str, Any] = {"path": os.path.abspath(folder), "text_column": text_column}
    if split is not None and is_saved_hf_dataset(folder):
        params["split"] = split
    elif split is not None:
        raise InputDataError(f"--{step_id}-split '{split}' given, but {step_id.upper()} is not a saved "
                             f"Hugging Face dataset", file=describe_path(path))
    if id_column:
        params["id_column"] = id_column
    return {"id": step_id, "stage": "read_corpus", "params": params}


def audit_config(train: str, test: str, *, text_column: str = "text", id_column: str | None = None,
                 subset_column: str | None = None, name: str = "audit", train_split: str | None = None,
                 test_split: str | None = None, **audit_params: Any) -> dict:
    """The config `pipeline audit` runs: read both sides, audit with defaults (plus overrides)."""
    params = {"text_column": text_column, **audit_params}
    if subset_column:
        params["subset_column"] = subset_column
    return {
        "name": name,
        "seed": 0,
        "steps": [
            _source_step("train", train, text_column, id_column, train_split),
            _source_step("test", test, text_column, id_column, test_split),
            {"id": "audit", "stage": "leakage_audit", "inputs": {"train": "train", "test": "test"}, "params": params},
        ],
    }


def _inputs_of(run_dir: Path) -> dict[str, Any] | None:
    """Which corpora an earlier audit in `run_dir` read (None when there is none)."""
    from pipeline.runner import read_manifest

    found = {}
    for side in ("train", "test"):
        manifest = read_manifest(run_dir / side)
        if manifest is None:
            return None
        params = manifest.get("params", {})
        found[side] = (params.get("path"), params.get("split"))
    return found


def refuse_to_replace(config: dict, workdir: str, force: bool) -> None:
    """An audit of other inputs under the same name is kept unless the user says --force."""
    run_dir = Path(workdir) / config["name"]
    earlier = _inputs_of(run_dir)
    wanted = {s["id"]: (s["params"]["path"], s["params"].get("split")) for s in config["steps"][:2]}
    if earlier is None or earlier == wanted or force:
        return
    shown = " vs ".join(p + (f":{s}" if s else "") for p, s in earlier.values())
    raise PipelineError(
        f"{describe_path(run_dir)} already holds the audit of {shown}",
        hint="give this audit its own --name, or pass --force to replace that one",
    )


def _configure_audit(p: argparse.ArgumentParser) -> None:
    p.add_argument("train", help="training data: a file, folder or glob (Parquet, JSONL, CSV, text; .gz/.zst), "
                                 "or a saved HF dataset (folder:split)")
    p.add_argument("test", help="test data, same formats")
    p.add_argument("--workdir", default="data/runs", help="where the run is written (default: data/runs)")
    p.add_argument("--name", default="audit", help="pipeline name, i.e. the run folder (default: audit)")
    p.add_argument("--force", action="store_true", help="replace an earlier audit of other inputs under --name")
    p.add_argument("--train-split", default=None, help="split of a saved DatasetDict given as TRAIN")
    p.add_argument("--test-split", default=None, help="split of a saved DatasetDict given as TEST")
    p.add_argument("--text-column", default="text", help="text column in both files (default: text)")
    p.add_argument("--id-column", default=None, help="id column in both files (default: the reader's)")
    p.add_argument("--subset-column", default=None, help="test column to break totals down by (task, source)")
    p.add_argument("--n", type=int, default=13, help="words per n-gram (default 13)")
    p.add_argument("--backend", default="static", choices=["static", "sentence-transformers"],
                   help="embedding backend for the chunk and semantic passes (default: static)")
    p.add_argument("--no-semantic", action="store_true", help="n-gram evidence only (no embeddings)")
    p.add_argument("--quiet", action="store_true")


def _audit(args: argparse.Namespace) -> int:
    from pipeline.config import parse_config
    from pipeline.files import side_dir
    from pipeline.runner import run_pipeline

    extra: dict[str, Any] = {"n": args.n, "backend": args.backend}
    if args.no_semantic:
        extra.update(chunk_overlap=False, semantic=False)
    config = audit_config(args.train, args.test, text_column=args.text_column, id_column=args.id_column,
                          subset_column=args.subset_column, name=args.name, train_split=args.train_split,
                          test_split=args.test_split, **extra)
    # Parsed first, under the name the user typed: errors named the file '<dict>' (and a bad --name was looked up).
    parsed = parse_config(config, source="pipeline audit arguments")
    refuse_to_replace(config, args.workdir, args.force)
    report = run_pipeline(parsed, workdir=args.workdir, quiet=args.quiet)
    write_run_index(args.workdir)  # <workdir>/index.html: every report of every run there
    step_dir = Path(report.run_dir) / "audit"
    findings = pl.read_parquet(step_dir / "part-*.parquet")
    counts = {v: int((findings["verdict"] == v).sum()) for v in VERDICTS}
    print(f"{findings.height} test items: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS))
    print(f"report: {step_dir / 'report.html'} (and report.md); findings: {step_dir}; "
          f"clean/dirty splits: {side_dir(step_dir, 'clean')}, {side_dir(step_dir, 'dirty')}")
    return 0


def _register_cli() -> None:
    try:
        from pipeline.cli import register_command
    except ImportError:  # an engine without commands from stage families
        return
    register_command("audit", "audit a test set for leakage from a training set (no config needed)",
                     _configure_audit, _audit)


_register_cli()
