"""The run folder of one pipeline: a lock, crash recovery, and atomic publication of a step.

Layout (`<workdir>/<pipeline>/`):
    <step>/part-*.parquet          the step's table (zstd); `<step>/**/*.parquet` reads it once
    <step>/<artefact>              non-table outputs (an index, a report), listed in the manifest
    <step>/_manifest.json          what produced it, and a fingerprint of what it holds
    <step>@<side>/part-*.parquet   side tables, read as input `step:side`
    _run.json                      the last run: which steps ran or were cached, timings
    .staging/ .trash/ .checkpoints/ .lock   engine bookkeeping

A step is built in `.staging/<step>@<id>/` (`table/` and `sides/<name>/`) and published by
renames: the old side folders, then the old step folder, go into one `.trash/<step>@<id>/`
group; then the new side folders, and last the new step folder (the commit point), are renamed
into place. A kill at any moment is undone by `recover()` at the next lock: before the commit the
old step and its old sides come back, after it the old ones are dropped. So a reader sees the old
step with its old side outputs or the new with the new, never half of either.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline.errors import LockedError, PipelineError
from pipeline.files import GLOB_CHARS, RUN_RECORD, describe_path, side_dir, side_dirs
from pipeline.writing import fsync_tree

MANIFEST = "_manifest.json"


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_manifest(step_dir: Path) -> dict | None:
    try:
        manifest = json.loads((step_dir / MANIFEST).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def refuse_run_folder(path: str | Path, **where: Any) -> None:
    """Refuse a run folder (or a workdir of runs) named where one table is read: every Parquet file under it
    would be read as one input, so a run of steps with one schema (docs -> length_filter) came back as all
    their rows together, silently; other runs failed on the first side output's schema."""
    folder = Path(path).expanduser()  # as find_files reads it
    if not folder.is_dir():
        return
    if (folder / RUN_RECORD).is_file():
        steps = sorted(p.name for p in folder.iterdir() if (p / MANIFEST).is_file())
        raise PipelineError(f"'{describe_path(path)}' is a run folder, not a step: name one of its steps "
                            f"({', '.join(steps) or 'none finished'}), e.g. '{folder / (steps or ['STEP'])[0]}'",
                            **where)
    with os.scandir(folder) as entries:
        runs = sorted(e.name for e in entries if e.is_dir() and os.path.isfile(os.path.join(e.path, RUN_RECORD)))
    if runs:
        named = ", ".join(runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
        raise PipelineError(f"'{describe_path(path)}' is a workdir of runs ({named}), not a step: name a "
                            f"step folder inside a run, e.g. '{folder / runs[0] / 'STEP'}'", **where)


class StagedStep:
    """Where a running step writes: its table (and artefacts) in `table`, side outputs in `sides`."""

    def __init__(self, root: Path):
        self.root = root
        self.table = root / "table"
        self.sides = root / "sides"

    def side(self, name: str) -> Path:
        return self.sides / name

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def refuse_file_in_workdir(folder: Path) -> None:
    """PipelineError naming `--workdir` when `folder`, or the nearest of its parents that exists, is not a folder.

    The engine creates the run folder and its parents; a file in that path (`--workdir results.csv`) failed as
    NotADirectoryError, reported as a bug, when the lock was taken. Refused before anything is written.
    """
    for path in (folder, *folder.parents):
        if path.is_dir():
            return
        if path.exists() or path.is_symlink():
            raise PipelineError("is a file, not a folder; runs are written in folders under --workdir, so nothing "
                                "was written", param="--workdir", file=describe_path(path),
                                hint="give another --workdir, or move that file away")


class RunDir:
    """The run folder of one pipeline: lock, crash recovery, atomic publication of steps."""

    def __init__(self, workdir: Path, pipeline: str):
        refuse_file_in_workdir(workdir / pipeline)
        self.workdir = workdir
        self.path = workdir / pipeline
        self.staging = self.path / ".staging"
        self.trash = self.path / ".trash"
        self.checkpoints = self.path / ".checkpoints"
        self._lock_fh = None

    def refuse_link(self, path: Path) -> None:
        """Refuse to go through a symbolic link inside the run folder: the engine made none.

        A link planted as `.trash`, `.staging`, `.checkpoints`, a step or side-output folder would
        make the engine move, overwrite or delete whatever it points at, outside the run folder.
        """
        if os.path.islink(path):
            raise PipelineError(
                f"'{path.name}' in the run folder is a symbolic link (to '{os.readlink(path)}'); "
                "the engine never follows links it did not create, so nothing was changed",
                file=str(path), hint="remove the link, or use another --workdir",
            )

    def step_named_by(self, path: str, step_ids: set[str]) -> str | None:
        """The reference (`split`, `split:train`) of this run's step that an input path names inside this run
        folder, or None. Read by path, that output is no input of the DAG: it is read as it was before this run,
        the step may run after its reader, and a step named by its own folder read its own last output."""
        literal = Path(re.split(f"[{re.escape(GLOB_CHARS)}]", path, maxsplit=1)[0] or ".").expanduser()  # to a glob's start
        try:
            inside = literal.resolve().relative_to(self.path.resolve())
        except ValueError:
            return None
        step, _, side = inside.parts[0].partition("@") if inside.parts else ("", "", "")
        return (f"{step}:{side}" if side else step) if step in step_ids else None

    # -- lock -----------------------------------------------------------------------------------

    def lock(self, wait_s: float = 0.0) -> None:
        self.refuse_link(self.path)  # the run folder itself: the engine writes, replaces and deletes inside it
        self.path.mkdir(parents=True, exist_ok=True)
        self.refuse_link(self.workdir / ".cache")
        fh = self._open_lock_file()
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    fh.seek(0)
                    holder = fh.read().strip() or "unknown"
                    fh.close()
                    raise LockedError(
                        f"another run of this pipeline holds the lock (pid {holder}); nothing was changed",
                        file=str(self.path / ".lock"),
                        hint="wait for it to finish, pass --wait SECONDS, or use another --workdir",
                    ) from None
                time.sleep(0.2)
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh
        try:
            for bookkeeping in (self.trash, self.staging, self.checkpoints):
                self.refuse_link(bookkeeping)
            self.recover()
        except BaseException:
            self.unlock()
            raise

    def _open_lock_file(self):
        """Open `.lock` without following a link (O_NOFOLLOW) and only if it is a regular file."""
        lock_path = self.path / ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self.refuse_link(lock_path)
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise PipelineError("'.lock' in the run folder is not a regular file; nothing was changed",
                                file=str(lock_path), hint="remove it, or use another --workdir")
        return os.fdopen(fd, "r+")

    def unlock(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    # -- recovery -------------------------------------------------------------------------------

    def recover(self) -> None:
        """Undo what a killed run left: finish or roll back a publication, drop half-built steps."""
        if self.trash.is_dir():
            for group in self.trash.iterdir():
                if group.is_symlink():
                    # Only the engine's own folders go into .trash; never move a link into place.
                    group.unlink()
                    continue
                self._recover_group(group, group.name.rsplit("@", 1)[0])
            with contextlib.suppress(OSError):
                self.trash.rmdir()
        shutil.rmtree(self.staging, ignore_errors=True)

    def _recover_group(self, group: Path, step: str) -> None:
        target = self.path / step
        if (group / MANIFEST).exists():
            # A trash entry of the layout before side folders: the whole old step folder.
            if not os.path.lexists(target):
                os.rename(group, target)
            shutil.rmtree(group, ignore_errors=True)
            return
        old_main, old_sides = group / "table", group / "sides"
        committed = os.path.lexists(target) and (old_main.exists() or not old_sides.exists())
        if not committed:
            # The new step folder never arrived: any side folder in place is the new run's.
            for placed in side_dirs(target):
                if not placed.is_symlink() and old_main.exists():
                    shutil.rmtree(placed, ignore_errors=True)
            if old_sides.is_dir():
                for old in old_sides.iterdir():
                    if not os.path.lexists(side_dir(target, old.name)):
                        os.rename(old, side_dir(target, old.name))
            if old_main.exists() and not os.path.lexists(target):
                os.rename(old_main, target)
        shutil.rmtree(group, ignore_errors=True)

    def drop_checkpoints(self, step_id: str) -> None:
        """A finished step's checkpoints, and those of earlier params that will never resume, go;
        `.checkpoints/` itself goes when nothing else is in it, so a finished run leaves nothing there."""
        self.refuse_link(self.checkpoints)
        for stale in self.checkpoints.glob(f"{step_id}@*"):
            if stale.is_symlink():
                stale.unlink()
            else:
                shutil.rmtree(stale, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.checkpoints.rmdir()  # fails, as it should, while another step's checkpoint is there

    # -- publication ----------------------------------------------------------------------------

    def new_staging(self, step_id: str) -> StagedStep:
        staged = StagedStep(self.staging / f"{step_id}@{uuid.uuid4().hex[:12]}")
        staged.table.mkdir(parents=True)
        staged.sides.mkdir()
        return staged

    def publish(self, staged: StagedStep, step_id: str) -> Path:
        """Swap a finished step and its side folders into place (see the module docstring for the order)."""
        fsync_tree(staged.root)
        target = self.path / step_id
        self.refuse_link(target)
        old_sides = side_dirs(target)
        for folder in old_sides:
            self.refuse_link(folder)
        group = None
        if old_sides or target.exists():
            self.trash.mkdir(exist_ok=True)
            group = self.trash / f"{step_id}@{uuid.uuid4().hex[:12]}"
            group.mkdir()
            if old_sides:
                (group / "sides").mkdir()
                for folder in old_sides:
                    os.rename(folder, group / "sides" / folder.name[len(step_id) + 1:])
            if target.exists():
                os.rename(target, group / "table")
        for new in sorted(staged.sides.iterdir()):
            os.rename(new, side_dir(target, new.name))
        os.rename(staged.table, target)  # the commit point
        staged.discard()
        if group is not None:
            shutil.rmtree(group, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.trash.rmdir()  # only when empty
        return target
