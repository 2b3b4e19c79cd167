"""The run index: one page in a workdir linking every report of every run in it.

Each stage writes its report beside its output (`<workdir>/<run>/<step>/report.html`); after a few
runs nobody remembers which folder holds what. `write_run_index(workdir)` lists them all, newest
first, with the step's stage and headline stats from its manifest. It knows nothing about any
particular stage: a report is any .html or .md artefact of a step folder.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pipeline.summary import headline
from stages._report import render

INDEX_NAME = "index.html"
REPORT_SUFFIXES = (".html", ".md")


def _headline(stats: dict) -> str:
    # The figures `pipeline run` ends with: an audit's verdicts (a small dict), which a scalars-only rule left out.
    return "; ".join(headline(stats))


def _manifest(step_dir: Path) -> dict:
    try:
        return json.loads((step_dir / "_manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def find_reports(workdir: Path) -> list[dict]:
    """Every report of every step of every run under `workdir` (hidden folders and links skipped), newest first."""
    rows = []
    for run in sorted(p for p in workdir.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")):
        for step in sorted(p for p in run.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")):
            reports = sorted(f for f in step.iterdir() if f.suffix in REPORT_SUFFIXES and f.is_file() and not f.is_symlink())
            if not reports:
                continue
            manifest = _manifest(step)
            mtime = max(f.stat().st_mtime for f in reports)
            rows.append({"run": run.name, "step": step.name, "stage": manifest.get("stage", "?"),
                         "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime)), "mtime": mtime,
                         "headline": _headline(manifest.get("stats") or {}),
                         "links": [(f.name, os.path.relpath(f, workdir)) for f in reports]})
    return sorted(rows, key=lambda r: (-r["mtime"], r["run"], r["step"]))


def write_run_index(workdir: str | Path) -> Path | None:
    """Write `<workdir>/index.html` linking every report in it; None when the workdir has no report."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        return None
    rows = find_reports(workdir)
    if not rows:
        return None
    path = workdir / INDEX_NAME
    tmp = path.with_name(f".{INDEX_NAME}.{os.getpid()}.tmp")
    html = render("index.html.j2", title="Reports in this workdir", rows=rows, runs=len({r["run"] for r in rows}))
    try:
        tmp.unlink(missing_ok=True)
        with open(tmp, "x", encoding="utf-8") as f:  # "x": never through a link planted at that name
            f.write(html)
        os.replace(tmp, path)  # never a half-written index; replaces a link at index.html, never its target
    except OSError:  # the index is a convenience: a read-only or odd workdir must not fail the run
        tmp.unlink(missing_ok=True)
        return None
    return path
