"""What a finished run tells you: each step's headline figures and where its artefacts are.

Printed at the end of `pipeline run` from the manifests the run wrote, so it says the same for a
step that ran and for one that was cached. Reports come first: they are what a person opens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.files import side_dir
from pipeline.runner import RunReport, read_manifest

HEADLINE_FIGURES = 4
# Figures about how a step ran, not what it found: recorded first by every partitioned step
# (pipeline.partial_states.record_partitioning), they took the headline from the audit's verdicts and the
# dedup steps' removed rows. The manifest keeps them.
_HOW_IT_RAN = frozenset({"partitions", "shuffle_buckets", "second_buckets", "partition_profile", "seed"})
_REPORT_SUFFIXES = (".html", ".md", ".png", ".svg", ".pdf")


def _figure(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else None
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value if len(value) <= 40 else None
    if isinstance(value, dict) and 0 < len(value) <= 4:
        parts = [f"{k} {_figure(v)}" for k, v in value.items() if _figure(v) is not None and not isinstance(v, dict)]
        return "{" + ", ".join(parts) + "}" if len(parts) == len(value) else None
    return None


def headline(stats: dict[str, Any], limit: int = HEADLINE_FIGURES) -> list[str]:
    """The first few figures of a step's stats that read on one line (numbers, short strings, small dicts)."""
    out = []
    for key, value in stats.items():
        shown = None if key in _HOW_IT_RAN else _figure(value)
        if shown is not None:
            out.append(f"{key} {shown}")
        if len(out) == limit:
            break
    return out


def artefact_paths(step_dir: Path, manifest: dict) -> list[Path]:
    """The step's artefacts, reports first, then its side-output folders (`<step>@<side>/`)."""
    names = [a["name"] for a in manifest.get("artefacts", [])]
    # report.html before report.md before the figures it shows: a collapse report's page came after its 12 PNGs.
    reports = sorted((n for n in names if n.endswith(_REPORT_SUFFIXES)),
                     key=lambda n: next(i for i, suffix in enumerate(_REPORT_SUFFIXES) if n.endswith(suffix)))
    others = [n for n in names if n not in reports]
    return [step_dir / n for n in reports + others] + [side_dir(step_dir, side) for side in manifest.get("side_outputs", {})]


def format_summary(report: RunReport) -> str:
    lines = [f"summary of {report.run_dir}:"]
    for step in report.steps:
        if step.status == "skipped":
            continue
        step_dir = Path(report.run_dir) / step.id
        manifest = read_manifest(step_dir) or {}
        rows = manifest.get("output", {}).get("rows")
        figures = [f"{rows:,} rows" if rows is not None else "no output"] + headline(manifest.get("stats", {}))
        lines.append(f"  {step.id} ({step.stage}, {step.status}): " + "; ".join(figures))
        paths = artefact_paths(step_dir, manifest)
        if paths:
            lines.append("      " + ", ".join(str(p) + ("/" if p.is_dir() else "") for p in paths))
    return "\n".join(lines)
