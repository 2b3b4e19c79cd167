"""`pipeline audit TRAIN TEST`: a leakage audit without writing a config."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.errors import InputDataError
from stages.leakage.evidence import VERDICTS


def _source_step(step_id: str, path: str, text_column: str, id_column: str | None) -> dict:
    p = Path(path)
    params: dict[str, Any] = {"path": path, "text_column": text_column}
    if id_column:
        params["id_column"] = id_column
    if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "state.json").exists()
                       or (p / "dataset_dict.json").exists()):
        stage = "read_hf_dataset"
    elif p.suffix in (".jsonl", ".json", ".ndjson") or (p.is_dir() and any(p.glob("*.jsonl"))):
        stage = "read_jsonl"
    elif p.suffix == ".csv":
        stage = "read_csv"
    else:
        stage = "read_parquet"
    if not p.exists() and not any(ch in path for ch in "*?["):
        raise InputDataError(f"the {step_id.upper()} argument names a path that does not exist", file=path)
    return {"id": step_id, "stage": stage, "params": params}


def audit_config(train: str, test: str, *, text_column: str = "text", id_column: str | None = None,
                 subset_column: str | None = None, name: str = "audit", **audit_params: Any) -> dict:
    """The config `pipeline audit` runs: read both sides, audit with defaults (plus overrides)."""
    params = {"text_column": text_column, **audit_params}
    if subset_column:
        params["subset_column"] = subset_column
    return {
        "name": name,
        "seed": 0,
        "steps": [
            _source_step("train", train, text_column, id_column),
            _source_step("test", test, text_column, id_column),
            {"id": "audit", "stage": "leakage_audit", "inputs": {"train": "train", "test": "test"}, "params": params},
        ],
    }


def _configure_audit(p: argparse.ArgumentParser) -> None:
    p.add_argument("train", help="training data: Parquet file/folder, JSONL, or a saved HF dataset")
    p.add_argument("test", help="test data, same formats")
    p.add_argument("--workdir", default="data/runs", help="where the run is written (default: data/runs)")
    p.add_argument("--name", default="audit", help="pipeline name, i.e. the run folder (default: audit)")
    p.add_argument("--text-column", default="text", help="text column in both files (default: text)")
    p.add_argument("--id-column", default=None, help="id column in both files (default: the reader's)")
    p.add_argument("--subset-column", default=None, help="test column to break totals down by (task, source)")
    p.add_argument("--n", type=int, default=13, help="words per n-gram (default 13)")
    p.add_argument("--backend", default="static", choices=["static", "sentence-transformers"],
                   help="embedding backend for the chunk and semantic passes (default: static)")
    p.add_argument("--no-semantic", action="store_true", help="n-gram evidence only (no embeddings)")
    p.add_argument("--quiet", action="store_true")


def _audit(args: argparse.Namespace) -> int:
    from pipeline.runner import run_pipeline

    extra: dict[str, Any] = {"n": args.n, "backend": args.backend}
    if args.no_semantic:
        extra.update(chunk_overlap=False, semantic=False)
    config = audit_config(args.train, args.test, text_column=args.text_column, id_column=args.id_column,
                          subset_column=args.subset_column, name=args.name, **extra)
    report = run_pipeline(config, workdir=args.workdir, quiet=args.quiet)
    step_dir = Path(report.run_dir) / "audit"
    findings = pl.read_parquet(step_dir / "part-*.parquet")
    counts = {v: int((findings["verdict"] == v).sum()) for v in VERDICTS}
    print(f"{findings.height} test items: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS))
    print(f"report: {step_dir / 'report.html'} (and report.md); findings: {step_dir}; "
          f"clean/dirty splits: {step_dir / 'clean'}, {step_dir / 'dirty'}")
    return 0


def register_cli() -> None:
    try:
        from pipeline.cli import register_command
    except ImportError:  # an engine without commands from stage families
        return
    register_command("audit", "audit a test set for leakage from a training set (no config needed)",
                     _configure_audit, _audit)


