"""The duplicates section of the leakage report: what a dedup step upstream of the audit removed.

Duplicates and leakage are two views of one thing. A `dedup_*` step with the test set as its
`reference` removes training rows that near-duplicate test items (decontamination by dedup); a dedup
step within the test set finds near-duplicate items that make an audit look worse than it is. Give
the audit that step's `removed` side output as its optional input `duplicates`
(`inputs: {..., duplicates: "near:removed"}`); the audit reads it, the step's stats (manifest) and its
`clusters` side output beside it, and the report shows them next to its own findings: which test items
the dedup step had already matched, and whether the audit flags them too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.errors import InputDataError
from pipeline.io import Dataset

DEDUP_COLUMNS = ("cluster_id", "duplicate_of", "duplicate_of_input", "similarity", "reason")
STAT_KEYS = ("rows_in", "rows_kept", "rows_removed", "duplicate_rate", "clusters", "rows_in_clusters",
             "reference_rows", "removed_as_reference_duplicates", "cluster_size_histogram")
EXAMPLES = 10


def _side_dirs(removed: Dataset) -> tuple[Path | None, Path | None]:
    """(the dedup step's folder, its `clusters` side output's folder), when `removed` was read from a run.

    Side outputs are either sub-folders of the step (`<step>/removed`) or siblings (`<step>@removed`).
    """
    files = removed.files or []
    if not files:
        return None, None
    side = Path(files[0]).parent
    if "@" in side.name:
        step = side.parent / side.name.rsplit("@", 1)[0]
        return step, side.parent / f"{step.name}@clusters"
    return side.parent, side.parent / "clusters"


def _step_stats(step_dir: Path | None) -> tuple[str | None, dict]:
    if step_dir is None:
        return None, {}
    try:
        manifest = json.loads((step_dir / "_manifest.json").read_text())
    except (OSError, ValueError):
        return None, {}
    stats = manifest.get("stats") or {}
    return f"{manifest.get('step', step_dir.name)} ({manifest.get('stage', '?')})", {
        k: stats[k] for k in STAT_KEYS if k in stats}


def duplicates_summary(removed: Dataset, findings: pl.DataFrame, id_column: str) -> dict[str, Any]:
    """Figures for the report: the dedup step's stats, its clusters, and its matches of this audit's test items."""
    missing = [c for c in DEDUP_COLUMNS if c not in removed.columns]
    if missing:
        raise InputDataError(f"leakage_audit: input 'duplicates' lacks column '{missing[0]}': give it a dedup step's "
                             f"`removed` side output (e.g. duplicates: \"near:removed\")", file=removed.label)
    rows = removed.collect()
    step_dir, clusters_path = _side_dirs(removed)
    step, stats = _step_stats(step_dir)
    clusters = (pl.read_parquet(clusters_path / "*.parquet") if clusters_path is not None and clusters_path.is_dir()
                and any(clusters_path.glob("*.parquet")) else None)
    test_ids = findings.select(pl.col("test_id").cast(pl.String), flagged=pl.col("verdict") != "clean")
    # Test items the dedup step matched: a removed training row duplicates them (the test set was its reference).
    via_reference = rows.filter(pl.col("duplicate_of_input") == "reference").get_column("duplicate_of").cast(pl.String)
    matched = test_ids.filter(pl.col("test_id").is_in(via_reference.unique().implode()))
    shown = [c for c in (id_column, "duplicate_of", "duplicate_of_input", "similarity", "reason") if c in rows.columns]
    return {
        "step": step, "stats": stats, "removed_rows": rows.height,
        "reasons": {str(k): int(v) for k, v in rows.group_by("reason").len().sort("reason").iter_rows()},
        "clusters_listed": None if clusters is None else int(clusters["cluster_id"].n_unique()),
        "test_items_matched": matched.height, "test_items_matched_and_flagged": int(matched["flagged"].sum()),
        "examples": {"columns": shown, "rows": [[str(v) if not isinstance(v, float) else round(v, 4) for v in r]
                                                for r in rows.sort("similarity", descending=True).select(shown)
                                                .head(EXAMPLES).iter_rows()]},
    }
