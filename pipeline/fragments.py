"""Row-wise steps in fragments cut from the input alone, so every executor writes the same files.

A row-wise step (a `RowwiseStage` with one input) is split into fragments: contiguous row ranges of
one input file (or of an in-memory frame), in input order. How it is cut depends on the input only
(its rows and bytes, or the `fragment_rows` option, which both executors take), never on the
executor or the size of a cluster. The local executor writes the fragments one after another; the
Ray executor runs one task (or model-actor call) per fragment. Both write fragment i through
`write_fragment`, so with the same batches, the same row groups and the same name,
`part-<i>-<k>.parquet`: a step's files are byte for byte the same on every executor, and a step
written by one executor is a cache hit for the steps downstream of it run by the other.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PipelineError
from pipeline.io import PART_GLOB, Dataset, file_batches, read_ahead, with_arrow
from pipeline.progress import Progress
from pipeline.stage import Context, RowwiseStage, Stage
from pipeline.writing import unify_part_schemas, write_table

# An in-memory frame's fragments: fewer rows cost more in task overhead than they win in parallelism.
MIN_FRAGMENT_ROWS = 8_192
MAX_FRAGMENT_ROWS = 1_000_000
# Part names hold a fragment's (or partition's) number in 5 digits: past that, names sorted as text lose the order.
MAX_NUMBERED_PARTS = 99_999


def is_rowwise_step(stage: Stage, inputs: dict[str, Dataset]) -> bool:
    """A step run fragment by fragment: a row-wise stage over one non-empty input that works batch by batch
    (`process_batch`); a stage with its own `run` (say, one that records a figure once every batch is done)
    runs whole, as a table stage does."""
    return (stage.kind == "rowwise" and len(inputs) == 1 and getattr(type(stage), "run", None) is RowwiseStage.run
            and getattr(type(stage), "process_batch", None) not in (None, RowwiseStage.process_batch)
            and next(iter(inputs.values())).num_rows > 0)


def plan_fragments(data: Dataset, batch_rows: int, fragment_rows: int | None = None) -> list[tuple]:
    """The input cut into fragments in its order, each a tuple of pieces (file or frame, start row, stop row).

    With `fragment_rows`, runs of that many rows. Without, runs of whole row groups of about a
    partition's worth of bytes (the partitioned stages' default: a sixteenth of the input, 16 to
    64 MB; at most MAX_FRAGMENT_ROWS rows), so no row group is decoded by two fragments; a row group
    larger than that is a fragment of its own. Fragments span files, so many small files make few
    fragments (and few parts downstream). A frame is cut into runs of about that many bytes, in whole
    batches of the stage.
    """
    from pipeline.partitioned import default_partition_bytes

    if fragment_rows is not None and fragment_rows < 1:
        raise PipelineError(f"fragment_rows must be at least 1, got {fragment_rows}")
    if data.frame is not None:
        total = int(data.frame.estimated_size())
        if fragment_rows is None:
            rows = math.ceil(default_partition_bytes(total) / max(total / max(data.num_rows, 1), 1.0))
            fragment_rows = math.ceil(min(max(rows, MIN_FRAGMENT_ROWS), MAX_FRAGMENT_ROWS) / batch_rows) * batch_rows
        return _checked(_runs_of_rows([(data.frame, data.frame.height)], fragment_rows))
    metas = [(str(f), pq.read_metadata(f)) for f in data.files]
    if fragment_rows is not None:
        return _checked(_runs_of_rows([(f, meta.num_rows) for f, meta in metas], fragment_rows))
    groups = [[meta.row_group(g) for g in range(meta.num_row_groups)] for _, meta in metas]
    target = default_partition_bytes(sum(g.total_byte_size for file_groups in groups for g in file_groups))
    fragments: list[tuple] = []
    pieces: list[tuple] = []
    rows = nbytes = 0
    for (f, _), file_groups in zip(metas, groups):
        start = stop = 0
        for group in file_groups:
            stop += group.num_rows
            rows += group.num_rows
            nbytes += group.total_byte_size
            if nbytes >= target or rows >= MAX_FRAGMENT_ROWS:
                fragments.append((*pieces, (f, start, stop)))
                pieces, start, rows, nbytes = [], stop, 0, 0
        if stop > start:
            pieces.append((f, start, stop))
    if pieces:
        fragments.append(tuple(pieces))
    return _checked(fragments)


def _runs_of_rows(sources: list[tuple[Any, int]], size: int) -> list[tuple]:
    """Runs of `size` rows over the sources in order (the last one shorter), each a tuple of pieces."""
    fragments: list[tuple] = []
    pieces: list[tuple] = []
    need = size
    for source, n in sources:
        start = 0
        while start < n:
            take = min(need, n - start)
            pieces.append((source, start, start + take))
            start, need = start + take, need - take
            if not need:
                fragments.append(tuple(pieces))
                pieces, need = [], size
    if pieces:
        fragments.append(tuple(pieces))
    return fragments


def _checked(fragments: list[tuple]) -> list[tuple]:
    if len(fragments) > MAX_NUMBERED_PARTS:
        raise PipelineError(f"the input would be cut into {len(fragments):,} fragments, more than the "
                            f"{MAX_NUMBERED_PARTS:,} whose part names keep the rows in order",
                            hint="set a larger fragment_rows (--executor-option fragment_rows=N)")
    return fragments


def fragment_size(fragment: tuple) -> int:
    """Rows in a fragment."""
    return sum(stop - start for _, start, stop in fragment)


def fragment_batches(fragment: tuple, batch_rows: int) -> Iterator[tuple[pl.DataFrame, pa.RecordBatch | None]]:
    """The fragment's rows as (polars batch, Arrow batch or None) pairs, bounded in rows and bytes."""
    if isinstance(fragment[0][0], pl.DataFrame):
        for frame, start, stop in fragment:
            for offset in range(start, stop, batch_rows):
                yield frame.slice(offset, min(batch_rows, stop - offset)), None
        return
    yield from with_arrow(read_ahead(itertools.chain.from_iterable(
        file_batches(path, batch_rows, start, stop) for path, start, stop in fragment)))


def write_fragment(stage: Stage, ctx: Context, fragment: tuple, index: int, folder: Path, bar: Progress) -> int:
    """Map one fragment through `process_batch`; its parts become `part-<index>-<k>.parquet` in `folder`."""
    return write_numbered_parts(stage.process_stream(fragment_batches(fragment, stage.batch_rows), ctx, bar),
                                folder, index, "fragment")


def write_numbered_parts(result: Any, folder: Path, index: int, kind: str) -> int:
    """Write `result` (what `write_table` takes) as `part-<index>-<k>.parquet` in `folder`; the rows written.

    Written under a temporary folder `.<kind>-<index>-...` and renamed, so a retried task overwrites cleanly.
    """
    tmp = folder / f".{kind}-{index:05d}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_table(result, tmp)
        rows = 0
        for k, part in enumerate(sorted(tmp.glob(PART_GLOB))):
            rows += pq.read_metadata(part).num_rows
            os.replace(part, folder / f"part-{index:05d}-{k:03d}.parquet")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def run_fragments_locally(stage: Stage, ctx: Context, data: Dataset, out_dir: Path, fragment_rows: int | None) -> None:
    """The local executor's row-wise step: every fragment in order, in this process."""
    bar = ctx.progress(total=data.num_rows)
    try:
        for index, fragment in enumerate(plan_fragments(data, stage.batch_rows, fragment_rows)):
            write_fragment(stage, ctx, fragment, index, out_dir, bar)
    finally:
        bar.close()
        remove_leftovers(out_dir)
    unify_part_schemas(out_dir)


def remove_leftovers(folder: Path) -> None:
    """Temporary folders of fragments or partitions that did not finish."""
    for leftover in list(folder.glob(".fragment-*")) + list(folder.glob(".partition-*")):
        shutil.rmtree(leftover, ignore_errors=True)
