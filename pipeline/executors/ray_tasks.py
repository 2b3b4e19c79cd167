"""What runs on the Ray cluster for the Ray executor (pipeline/executors/ray.py): one task per table
stage, one task (or actor call) per fragment of a row-wise stage, and the small protocol that brings
stats and errors back to the driver exactly as the local executor would have produced them."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from pipeline.errors import PipelineError
from pipeline.io import COMPRESSION, COMPRESSION_LEVEL, Dataset, write_table
from pipeline.stage import Context, Stage

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


def _pack_error(exc: BaseException) -> tuple[type, str, dict] | None:
    """PipelineErrors come back as values: their subclasses' constructors do not survive pickling."""
    if isinstance(exc, PipelineError):
        return type(exc), exc.message, dict(exc.__dict__)
    return None


def _unpack_error(packed: tuple[type, str, dict]) -> PipelineError:
    cls, message, state = packed
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
    except PipelineError as exc:
        return ("error", _pack_error(exc))
    return ("ok", ctx.stats, ctx.side_outputs)


def _fragment_batches(fragment: tuple, batch_rows: int):
    """The fragment's rows as polars batches of at most `batch_rows`, in file order."""
    source, start, stop = fragment
    if isinstance(source, pl.DataFrame):
        for offset in range(start, stop, batch_rows):
            yield source.slice(offset, min(batch_rows, stop - offset))
        return
    pf = pq.ParquetFile(source)
    meta = pf.metadata
    groups, first_row, row = [], None, 0
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        if row < stop and row + n > start:
            groups.append(g)
            first_row = row if first_row is None else first_row
        row += n
    if not groups:
        return
    # Skip the rows before `start` in the first row group, stop at `stop`.
    position = first_row
    for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups):
        lo, hi = max(start - position, 0), min(stop - position, batch.num_rows)
        position += batch.num_rows
        if hi > lo:
            yield pl.from_arrow(batch.slice(lo, hi - lo))
        if position >= stop:
            break


def _run_fragment(stage: Stage, ctx: Context, fragment: tuple, index: int, out_dir: str, cwd: str) -> tuple:
    """Map one fragment through `process_batch`; write its parts under names that keep input order."""
    _enter(cwd)
    if isinstance(fragment[0], ray.ObjectRef):
        fragment = (ray.get(fragment[0]), fragment[1], fragment[2])
    folder = Path(out_dir)
    stats = StatsLog()
    task_ctx = replace(ctx, stats=stats, side_outputs=[], quiet=True)
    tmp = folder / f".fragment-{index:05d}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        try:
            outputs = (stage.process_batch(b, task_ctx) for b in _fragment_batches(fragment, stage.batch_rows))
            write_table(outputs, tmp)
        except PipelineError as exc:
            return ("error", _pack_error(exc))
        rows = 0
        for k, part in enumerate(sorted(tmp.glob("part-*.parquet"))):
            rows += pq.read_metadata(part).num_rows
            os.replace(part, folder / f"part-{index:05d}-{k:03d}.parquet")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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


def _unify_part_schemas(out_dir: Path) -> None:
    """Give every part one schema: fragments are written independently, and readers refuse mixed ones.

    A column whose type depends on the data (all nulls in one fragment, text in another) is
    promoted to the common type, which is what the local writer gives when its first batch has
    the wider type; a real conflict (text vs numbers) is an error naming both schemas.
    """
    parts = sorted(out_dir.glob("part-*.parquet"))
    schemas = [pq.read_schema(p) for p in parts]
    if all(s.equals(schemas[0]) for s in schemas[1:]):
        return
    try:
        unified = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise PipelineError(f"fragments of this step produced incompatible schemas: {exc}") from None
    for part, schema in zip(parts, schemas):
        if schema.equals(unified):
            continue
        try:
            table = pq.read_table(part).select(unified.names).cast(unified)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError, ValueError) as exc:
            raise PipelineError(
                f"the stage produced batches with different schemas ({schema} vs {unified}): {exc}"
            ) from None
        tmp = part.with_name(f".{part.name}.tmp")
        pq.write_table(table, tmp, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL)
        os.replace(tmp, part)


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


