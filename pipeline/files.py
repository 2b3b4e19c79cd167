"""Finding the files a path names: one rule for every reader (sources, step inputs, `pipeline audit`).

A path is a file, a folder (the files under it that match a pattern), or a glob. Names starting
with '.' or '_' are bookkeeping (manifests, staging folders, checkpoints) and never data, at any
depth under the folder. Relative paths are resolved from the current directory, and errors say
which directory that was, since a user reading "does not exist" needs to know where it looked.
"""

from __future__ import annotations

import contextlib
import glob as globlib
import os
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path

from pipeline.errors import InputDataError, ParamError, PipelineError

GLOB_CHARS = "*?["
RUN_RECORD = "_run.json"  # marks a run folder (pipeline/rundir.py)


def is_glob(path: str | Path) -> bool:
    return any(ch in str(path) for ch in GLOB_CHARS)


def describe_path(path: str | Path) -> str:
    """The path as the user wrote it, plus the directory a relative path was resolved from."""
    text = str(path)
    if Path(text).is_absolute():
        return text
    return f"{text} (resolved from {Path.cwd()})"


def _is_data(path: Path, root: Path | None) -> bool:
    if not path.is_file():
        return False
    parts = path.relative_to(root).parts if root is not None else (path.name,)
    return not any(part.startswith((".", "_")) for part in parts)


def find_files(
    path: str | Path,
    patterns: Sequence[str] = ("**/*",),
    *,
    param: str | None = None,
    what: str = "files",
) -> list[Path]:
    """The data files `path` names, sorted: the file itself, a glob's matches, or a folder's files.

    For a folder, `patterns` are tried in order and the first that matches anything wins (so a
    step folder's own `part-*.parquet` come before anything nested in it). `param` names the
    parameter in the error (a ParamError); without it the error is an InputDataError.
    """
    text = os.path.expanduser(str(path))  # `path: ~/corpus.jsonl`, as polars and the shell read it
    if is_glob(text):
        files = [f for f in map(Path, globlib.glob(text, recursive=True)) if _is_data(f, None)]
    elif Path(text).is_dir():
        root = Path(text)
        files = []
        for pattern in patterns:
            files = [f for f in root.glob(pattern) if _is_data(f, root)]
            if files:
                break
        run = _run_folder_under(files, root)
        if run is not None:  # `path: data` over data/raw/ and data/runs/ read every step's Parquet as data too
            raise _error(f"holds the run folder '{run}', whose step outputs would be read as data too; name the "
                         "folder of the data itself", text, param)
    elif Path(text).exists():
        files = [Path(text)]
    else:
        raise _error("does not exist", text, param)
    if not files:
        hint = f" matching {' or '.join(patterns)}" if Path(text).is_dir() else ""
        raise _error(f"holds no {what}{hint}", text, param)
    return sorted(files)


def _run_folder_under(files: list[Path], root: Path) -> Path | None:
    """A run folder (one holding _run.json) below `root` and above one of `files`, or None."""
    checked: set[Path] = set()
    for f in files:
        for parent in f.parents:
            if parent == root or parent in checked:
                break
            checked.add(parent)
            if (parent / RUN_RECORD).is_file():
                return parent
    return None


def _error(message: str, path: str, param: str | None) -> PipelineError:
    label = describe_path(path)
    if param is not None:
        return ParamError(param, message, file=label)
    return InputDataError(message, file=label)


# -- where a step's tables live in a run folder --------------------------------------------------
#
# A step's own table is `<run>/<step>/part-*.parquet` (with its manifest and artefacts beside it);
# each side output is a sibling folder `<run>/<step>@<side>/part-*.parquet`. Side outputs live
# outside the step folder so that the obvious glob, `<step>/**/*.parquet`, reads the step's rows
# once (with side outputs inside, it read them twice). Step ids cannot contain '@'.
SIDE_SEPARATOR = "@"


def side_dir(step_dir: str | Path, side: str) -> Path:
    """The folder holding side output `side` (input `step:side`) of the step whose folder is `step_dir`."""
    step_dir = Path(step_dir)
    return step_dir.with_name(f"{step_dir.name}{SIDE_SEPARATOR}{side}")


def side_dirs(step_dir: str | Path) -> list[Path]:
    """Every side-output folder next to `step_dir` (whatever a manifest says), sorted."""
    step_dir = Path(step_dir)
    if not step_dir.parent.is_dir():
        return []
    prefix = step_dir.name + SIDE_SEPARATOR
    return sorted(p for p in step_dir.parent.iterdir() if p.name.startswith(prefix))


# The run folder of the run now fingerprinting its inputs (see `fingerprint_path`).
_FINGERPRINT_FROM: ContextVar[Path | None] = ContextVar("fingerprint_from", default=None)


@contextlib.contextmanager
def fingerprint_paths_from(run_folder: Path) -> Iterator[None]:
    """While a run (or its plan) fingerprints its inputs, file paths are named relative to its run folder."""
    token = _FINGERPRINT_FROM.set(run_folder.resolve())
    try:
        yield
    finally:
        _FINGERPRINT_FROM.reset(token)


def fingerprint_path(path: Path) -> str:
    """A file as an input fingerprint names it, beside its size and mtime: in a run, relative to the run folder
    (`../../data/docs.csv`), where the manifests compared with it lie; outside a run (the shared Arrow cache),
    absolute. From one run folder no two files share a relative path, so a change is seen as before; moving a
    folder holding both the data and the runs (the project) changes no relative path, where the absolute paths
    it changed re-ran every source step. Only a run folder moved apart from its data, onto other files at the
    same relative paths with the same sizes and nanosecond mtimes (copies), would take them as its own."""
    resolved = Path(path).resolve()
    run_folder = _FINGERPRINT_FROM.get()
    return str(resolved) if run_folder is None else os.path.relpath(resolved, run_folder)
