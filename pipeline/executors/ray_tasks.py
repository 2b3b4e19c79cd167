"""What runs on the Ray cluster for the Ray executor (pipeline/executors/ray.py): one task per table
stage, one task (or actor call) per fragment of a row-wise stage, and the small protocol that brings
stats and errors back to the driver exactly as the local executor would have produced them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray

from pipeline.errors import PipelineError
from pipeline.fragments import unify_part_schemas as _unify_part_schemas  # noqa: F401 - the Ray executor's name
from pipeline.fragments import write_fragment
from pipeline.io import Dataset
from pipeline.stage import Context, Stage
from pipeline.writing import write_table

# ------------------------------------------------------------------------------ stats recording


class StatsLog(dict):
    """A stats dict that logs how each key was changed, so stats from many tasks merge exactly.

    Row-wise stages update `ctx.stats` per batch, either as a counter
    (`stats[k] = stats.get(k, 0) + n`, a read then a write) or as a plain value
    (`ctx.record(k, v)`, a write with no read). Each task logs ("add", key, delta) or
    ("set", key, value); the driver replays the logs in fragment order, which gives the same
    dict as one process running every batch in order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, str, Any]] = []
        self._read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self._read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self._read.add(key)
        return super().__getitem__(key)

    def __setitem__(self, key: str, value: Any) -> None:
        old = super().get(key, 0)
        if key in self._read and _is_number(value) and _is_number(old):
            self.ops.append(("add", key, value - old))
        else:
            self.ops.append(("set", key, value))
        self._read.discard(key)
        super().__setitem__(key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def replay_stats(stats: dict, ops: list[tuple[str, str, Any]]) -> None:
    for op, key, value in ops:
        if op == "add":
            stats[key] = stats.get(key, 0) + value
        else:
            stats[key] = value


# ------------------------------------------------------------------------------ errors across tasks


# What a task hands back as a value, for the driver to raise as the local executor would have: a PipelineError
# (its subclasses' constructors do not survive pickling), and a stage's `sys.exit`, which raised on a worker ends
# the worker's process: Ray took that for a crash, retried the task, then failed with WorkerCrashedError, where
# the local executor exits with the stage's code.
RETURNED_ERRORS = (PipelineError, SystemExit)


def _pack_error(exc: BaseException) -> tuple[type, Any, dict] | None:
    if isinstance(exc, SystemExit):
        return SystemExit, exc.code, {}
    if isinstance(exc, PipelineError):
        return type(exc), exc.message, dict(exc.__dict__)
    return None


def _unpack_error(packed: tuple[type, Any, dict]) -> PipelineError | SystemExit:
    cls, message, state = packed
    if cls is SystemExit:
        return SystemExit(message)
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


# ------------------------------------------------------------------------------ work on the cluster


def _clear_folder(folder: Path) -> None:
    """Empty the staging folder before a (re)try, so a retried table task starts from nothing."""
    for p in folder.iterdir():
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _enter(cwd: str) -> None:
    """Work in the driver's directory, so relative paths in params mean what they mean locally."""
    if os.getcwd() != cwd and os.path.isdir(cwd):
        os.chdir(cwd)


def _run_table_stage(stage: Stage, ctx: Context, inputs: dict[str, Dataset], out_dir: str, cwd: str) -> tuple:
    """One task: the whole stage, writing straight into the shared staging folder."""
    _enter(cwd)
    folder = Path(out_dir)
    _clear_folder(folder)
    if ctx.side_root is not None:
        _clear_folder(Path(ctx.side_root))
    ctx = replace(ctx, stats={}, side_outputs=[], quiet=True)
    try:
        write_table(stage.run(ctx, **inputs), folder)
    except RETURNED_ERRORS as exc:
        return ("error", _pack_error(exc))
    return ("ok", ctx.stats, ctx.side_outputs)


def _run_fragment(stage: Stage, ctx: Context, fragment: tuple, index: int, out_dir: str, cwd: str) -> tuple:
    """Map one fragment as the local executor does (`pipeline.fragments.write_fragment`): the same parts."""
    _enter(cwd)
    # An in-memory input comes through the object store once (see RayExecutor._run_rowwise).
    fragment = tuple((ray.get(src) if isinstance(src, ray.ObjectRef) else src, start, stop) for src, start, stop in fragment)
    stats = StatsLog()
    task_ctx = replace(ctx, stats=stats, side_outputs=[], quiet=True)
    try:
        rows = write_fragment(stage, task_ctx, fragment, index, Path(out_dir), task_ctx.progress())
    except RETURNED_ERRORS as exc:
        return ("error", _pack_error(exc))
    return ("ok", rows, stats.ops)


class _FragmentWorker:
    """An actor that maps fragments of model steps, one step after another.

    It keeps one copy of the current step's stage (the first one its calls bring) for every fragment
    of that step, and the process keeps what stages cache per process (the loaded model) from one step
    to the next: consecutive model steps load their model once per actor. A restarted actor takes the
    stage again from its next call.
    """

    def __init__(self) -> None:
        self.step: str | None = None
        self.stage: Stage | None = None
        self.ctx: Context | None = None

    def run(self, step: str, stage: Stage, ctx: Context, fragment: tuple, index: int, out_dir: str, cwd: str) -> tuple:
        if step != self.step:
            self.step, self.stage, self.ctx = step, stage, ctx
        return _run_fragment(self.stage, self.ctx, fragment, index, out_dir, cwd)

    def pid(self) -> int:
        return os.getpid()


# ------------------------------------------------------------------------------ submitting tasks

IN_FLIGHT_PER_CPU = 2  # tasks submitted per cluster CPU: each CPU has one running and one queued


def run_bounded(submit: Callable[[int], Any], count: int, window: int, on_done: Callable[[int, Any], bool]) -> None:
    """Submit tasks 0..count-1 in order with at most `window` in flight; `on_done(i, result)` -> go on?

    When `on_done` says stop (a task returned an error) or a task fails for good, nothing more is
    submitted and the tasks in flight are waited for; none is cancelled. Ray's `ray.cancel` races
    the task's own reply: in Ray 2.60 a cancel that lands as a task is being pushed to a worker fails
    a check in the driver's task manager ("Tried to complete task that was not pending"), and Ray
    ends the driver process with status 1, pytest or the user's training script with it. A bounded
    window makes waiting cheap: at most `window` tasks finish after the failure, and nothing is left
    running that could still write into a step's staging folder once the step has failed.
    """
    pending: dict[Any, int] = {}
    submitted, stopped = 0, False
    try:
        while True:
            while not stopped and submitted < count and len(pending) < window:
                pending[submit(submitted)] = submitted
                submitted += 1
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ready[0])
            if not on_done(index, _get(ready[0])):
                stopped = True
    except Exception:
        if pending:  # let the tasks in flight end (their results are not needed) before raising
            ray.wait(list(pending), num_returns=len(pending), fetch_local=False)
        raise


def _get(ref: Any) -> Any:
    """ray.get, re-raising a task's own exception rather than Ray's wrapper around it."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from exc
        raise


