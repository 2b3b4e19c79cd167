"""Is a finished step still what its manifest says? Checked before a cache hit is trusted.

A run folder is plain files: a user, a sync tool or a disk can change them after the engine wrote
them. A cache hit therefore requires, for the main table and every side table (the sibling folders
`<step>@<side>/`, pipeline/rundir.py), the exact set of `part-*.parquet` files the manifest lists, each a regular file of the recorded size, and every
listed artefact (`index.faiss`, `report.html`...) present with its recorded size. Then, by mode:

- `fast` (default): a file whose modification time is still the one recorded is taken as written;
  one whose time changed (edited, copied without -p, touched) is re-hashed and must match its
  recorded xxh3-128 digest. Costs a few `lstat` calls per step unless something was touched.
- `full`: every file is re-hashed (catches an edit whose author also restored the mtime).
- `off`: only the files listed exist with their recorded sizes (the check before verification).

Any difference is a reason, in words, to recompute the step.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from pipeline.digests import combine_digests, describe_file, fingerprint_files, hash_file
from pipeline.errors import ParamError
from pipeline.files import side_dir
from pipeline.io import PART_GLOB

MODES = ("fast", "full", "off")
DEFAULT_MODE = "fast"


def check_mode(mode: object) -> str:
    if mode not in MODES:
        raise ParamError("verify", f"must be one of {', '.join(MODES)}, got {mode!r}")
    return mode  # type: ignore[return-value]


def describe_artefacts(step_dir: Path) -> list[dict]:
    """Everything a stage left beside its Parquet (an index, a report), with size and digest."""
    files = [p for p in sorted(step_dir.iterdir())
             if p.is_file() and not p.is_symlink() and not p.name.startswith(("part-", "_", "."))]
    return [describe_file(p, hash_file(p)) for p in files]


def _listed_files(step_dir: Path, manifest: dict, sides_at: Callable[[str], Path]) -> dict[str, Path]:
    """Every file a manifest lists, keyed as the manifest's `mtimes` keys them (`side/part-...`)."""
    files = {f["name"]: step_dir / f["name"] for f in manifest["output"]["files"]}
    for side, info in (manifest.get("side_outputs") or {}).items():
        files.update({f"{side}/{f['name']}": sides_at(side) / f["name"] for f in info["files"]})
    files.update({a["name"]: step_dir / a["name"] for a in manifest.get("artefacts") or []})
    return files


def written_mtimes(step_dir: Path, manifest: dict, sides_at: Callable[[str], Path] | None = None) -> dict[str, int]:
    """The modification time of every listed file as written (kept apart from `output`, which
    describes content and is the same for the same bytes on any disk). `sides_at(name)` is where
    side output `name` is while the step is staged; by default, its published folder."""
    sides_at = sides_at or (lambda side: side_dir(step_dir, side))
    return {key: os.lstat(path).st_mtime_ns for key, path in _listed_files(step_dir, manifest, sides_at).items()}


def _check_file(path: Path, recorded: dict, mode: str, shown: str, mtime_ns: int | None = None) -> str | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return f"{shown} is missing"
    if not stat.S_ISREG(st.st_mode):
        return f"{shown} is not a regular file"
    if st.st_size != recorded["bytes"]:
        return f"{shown} has {st.st_size:,} bytes, the manifest recorded {recorded['bytes']:,}"
    if mode == "off" or "xxh3" not in recorded:
        return None
    if mode == "fast" and mtime_ns == st.st_mtime_ns:
        return None
    if hash_file(path) != recorded["xxh3"]:
        return f"{shown}: content differs from what was written"
    return None


def _check_table(table_dir: Path, info: dict, mode: str, prefix: str, mtimes: dict) -> str | None:
    if os.path.islink(table_dir) or not table_dir.is_dir():
        return f"{table_dir.name + '/' if prefix else 'the table folder'} is missing"
    listed = {f["name"]: f for f in info["files"]}
    if mode != "off":
        present = {p.name for p in table_dir.glob(PART_GLOB)}
        stray = sorted(present - set(listed))
        if stray:
            return f"{prefix}{stray[0]} is not in the manifest"
    # In full mode every part is hashed below, in one pass; here only what stat can tell.
    per_file_mode = "off" if mode == "full" else mode
    for name, recorded in listed.items():
        reason = _check_file(table_dir / name, recorded, per_file_mode, prefix + name, mtimes.get(prefix + name))
        if reason:
            return reason
    if mode == "full":
        names = sorted(listed)
        if all("xxh3" in listed[name] for name in names):
            digests = [hash_file(table_dir / name) for name in names]
            for name, digest in zip(names, digests):
                if listed[name]["xxh3"] != digest:
                    return f"{prefix}{name}: content differs from what was written"
            combined = combine_digests(names, digests)
        else:  # a manifest from before per-part digests: its fingerprint hashed the bytes directly
            combined = fingerprint_files([table_dir / name for name in names])
        if info.get("fingerprint") and combined != info["fingerprint"]:
            return f"{prefix or 'the table'}: content differs from its fingerprint"
    return None


def verify_step(step_dir: Path, manifest: dict, mode: str = DEFAULT_MODE) -> str | None:
    """None when the step's files match its manifest; otherwise the first difference, in words."""
    output = manifest.get("output")
    if not isinstance(output, dict):
        return "its manifest has no 'output' record"
    try:
        sides = manifest.get("side_outputs") or {}
        if sides and manifest.get("format", 1) < 2:
            return ("it was written by an older corpusforge, with side outputs inside the step folder; "
                    "re-running it writes them as <step>@<side>/")
        tables = [(step_dir, output, "")] + [
            (side_dir(step_dir, name), info, f"{name}/") for name, info in sides.items()
        ]
        mtimes = manifest.get("mtimes") or {}
        for table_dir, info, prefix in tables:
            reason = _check_table(table_dir, info, mode, prefix, mtimes)
            if reason:
                return reason
        for recorded in manifest.get("artefacts") or []:
            reason = _check_file(step_dir / recorded["name"], recorded, mode, recorded["name"],
                                 mtimes.get(recorded["name"]))
            if reason:
                return reason
    except (KeyError, TypeError, AttributeError):
        return "its manifest is malformed"
    return None
