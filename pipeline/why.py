"""Why a step runs again: the first difference between its last manifest and what would run now.

Shared by the plan (`pipeline run --dry-run`) and the run itself, so the reason a run prints and records in
`_run.json` (`recomputed_because`) is the one the plan promised.
"""

from __future__ import annotations

from typing import Any


def own_change(manifest: dict, stage: Any, seed: int) -> str | None:
    """What changed in the step itself (not its inputs) since its last manifest, if anything."""
    if not all(key in manifest for key in ("stage", "stage_version", "fingerprint")):
        return "its manifest is incomplete or damaged"  # not "stage changed (None vNone -> ...)"
    if manifest.get("stage") != stage.name or manifest.get("stage_version") != stage.version:
        return f"stage changed ({manifest.get('stage')} v{manifest.get('stage_version')} -> {stage.name} v{stage.version})"
    old, new = manifest.get("params", {}), stage.get_params()
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        return "params changed: " + ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
    if manifest.get("seed") != seed:
        return f"seed changed ({manifest.get('seed')} -> {seed})"
    return None


def why_changed(manifest: dict, stage: Any, described: dict[str, dict], seed: int) -> str:
    """The first difference between a step's last manifest and what would run now (its fingerprint differs)."""
    own = own_change(manifest, stage, seed)
    if own:
        return own
    before = {k: v.get("fingerprint") for k, v in manifest.get("inputs", {}).items()}
    moved = sorted(k for k in before.keys() | described.keys()
                   if before.get(k) != described.get(k, {}).get("fingerprint"))
    if moved:
        return "input changed: " + ", ".join(moved)
    return "code or data behind the stage changed (library version, files it reads)"


def left_out(manifest: dict | None, stage: Any, seed: int) -> str:
    """For a step left out of a run (--only) that a selected step reads: how its output on disk differs from what
    its config asks now (a --set or an edit there changes nothing in this run), or ''."""
    own = own_change(manifest, stage, seed) if manifest is not None else None
    return (f"its output predates the config ({own}); the selected step reads that older output (--until, not "
            "--only, remakes it)") if own else ""
