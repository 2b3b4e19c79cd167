"""The partitioned stage contract: map over partitions of one input, merge partial states, finish once.

A table stage that streams one big input past a small one (an audit over a training corpus, counts
over a corpus) can say so and become splittable by any executor:

    class MyStage(PartitionedStage):
        partition_input = "train"                       # the big input, split into partitions
        def broadcast(self, ctx, inputs) -> B           # built once from the other inputs (the test set), or
                                                        # from a sample of the partitioned one (ctx.gather_rows)
        def map(self, partition, broadcast) -> S        # a partial state from one partition
        def merge(self, a, b) -> S                      # associative; `a` covers the partitions before `b`
        def finish(self, ctx, state, broadcast, inputs) # the step's outputs, from the merged state
                                                        # (or a `RowPass`: a second pass over the partitions,
                                                        # see `pipeline.row_pass`)

A stage that must group rows by a key across partitions (LSH buckets: rows of any partitions that
share a band key) adds a shuffle: `shuffle_buckets(broadcast)` reducers, `split(value, broadcast)`
on the map side (what merges, and one part per bucket), `reduce(bucket, parts, broadcast)` over
every partition's part of one bucket in input order, and `shuffled(state, results)` to hand the
reducers' results to `finish`. On Ray the parts go from the map's worker to the reducer's through
the object store (a map task has one return per bucket); the driver only ever holds references.
A second round may follow (`second_buckets`): each reducer's result is cut again (`split_reduced`, by
another key: pairs that several LSH bands found, by pair) and `reduce_second` takes one part of every
first-round result, so what several reducers found reaches one worker, not the driver; `shuffled` then
gets the second round's results.

A partition is a run of whole Parquet row groups (or a row range of an in-memory frame) sized by
bytes (`partition_bytes`); it knows `base`, the corpus-wide row number of its first row, so states
of different partitions number rows the same way one pass would. The engine only ever merges
adjacent runs of partitions in input order (a left fold locally, a tree of adjacent pairs on Ray),
so an associative merge gives the same state on every executor and for every partition size.

Each partial state travels inside a `PartialState` that carries the fingerprint of the stage's
params and inputs and the set of partitions it covers: a merge of states from different params or
inputs, or one that would count a partition twice, is refused. Finished partitions' states are
checkpointed under `ctx.checkpoint_dir`, so a killed driver resumes the step from them.

What every executor does with partial states (map, merge, checkpoint, measure) is in
`pipeline.partial_states`; the local executor's fold over the partitions in `pipeline.partition_fold`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from pipeline.errors import PipelineError
from pipeline.fragments import MAX_NUMBERED_PARTS
from pipeline.io import BATCH_BYTES, DEFAULT_BATCH_ROWS, Dataset, batch_frame
from pipeline.stage import Context, Stage

# Without a size of the user's, an input is cut into about TARGET_PARTITIONS partitions of at least
# MIN_DEFAULT_PARTITION_BYTES and at most DEFAULT_PARTITION_BYTES: big enough that per-task overhead
# (scheduling, broadcast fetch, state pickling, a map's own set-up) is noise, small enough that a
# corpus of a few hundred megabytes still gives a cluster more tasks than workers (320 MB was five
# 64 MB partitions: 3 + 2 on two workers). The size depends on the input only, so every executor and
# machine cuts it the same way.
DEFAULT_PARTITION_BYTES = 64 << 20
MIN_DEFAULT_PARTITION_BYTES = 16 << 20
TARGET_PARTITIONS = 16
# A row group larger than the partition size is cut into row ranges, each at least the smallest default
# partition: files written by pyarrow or pandas (a million rows a group), polars (~250 K) or this engine
# (64 MB groups) often hold a corpus in a few large groups, which would otherwise be a few maps however many
# cores or workers there are. A range is read by polars in slices of up to 64 MB (it skips the pages before a
# slice), so such a map holds up to 64 MB of its rows, not one batch. Groups under twice this stay whole (a
# 1-byte partition size means "one row group per partition", not one row).
MIN_SPLIT_BYTES = MIN_DEFAULT_PARTITION_BYTES
FRAME_PIECE = "<frame>"  # the path of an in-memory frame's one piece


@dataclass(frozen=True)
class Partition:
    """One unit of map work: whole row groups of the partitioned input's files, rows `group_rows` of one large
    row group, or a frame's row range."""

    index: int
    base: int  # corpus-wide row number of the partition's first row
    num_rows: int
    nbytes: int  # uncompressed bytes, as Parquet metadata states them (estimated for frames)
    pieces: tuple[tuple[str, tuple[int, ...]], ...]  # (file, row groups); ("<frame>", (start, stop)) in memory
    frame: pl.DataFrame | None = field(default=None, compare=False, repr=False)
    batch_bytes: int = field(default=BATCH_BYTES, compare=False)  # bound of one batch (see local_partitions)
    group_rows: tuple[int, int] | None = None  # [start, stop) within the one row group of `pieces`; None: whole

    def source_file(self) -> str | None:
        """The file the partition's first rows come from (None for a frame's rows), for error messages."""
        path = self.pieces[0][0] if self.pieces else FRAME_PIECE
        return None if path == FRAME_PIECE else path

    def key(self) -> str:
        """Identity of the partition's rows (not of a frame's content: that is in the state fingerprint)."""
        rows = [self.group_rows] if self.group_rows is not None else []
        return xxhash.xxh3_64_hexdigest(json.dumps([self.base, self.num_rows, self.pieces, *rows]).encode())

    def iter_batches(self, rows: int = DEFAULT_BATCH_ROWS, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """The partition's rows in order, batches bounded by rows and bytes, as `Dataset.iter_batches`."""
        for frame, _ in self.iter_batches_with_arrow(rows, columns):
            yield frame

    def iter_batches_with_arrow(self, rows: int = DEFAULT_BATCH_ROWS,
                                columns: list[str] | None = None) -> Iterator[tuple[pl.DataFrame, pa.RecordBatch | None]]:
        """`iter_batches`, each batch paired with the Arrow batch read from Parquet (None for rows of a frame or of a
        large row group's range), for a stage that reads a column's buffers as they are (the leakage audit's
        tokenizer: polars' conversion back to Arrow copies every string)."""
        if self.frame is not None:
            (_, (start, stop)), = self.pieces
            frame = self.frame if columns is None else self.frame.select(columns)
            # Bounded by bytes as a Parquet input's batches are (a whole in-memory corpus in one batch
            # would hold the stage's working memory for all of it at once).
            rows = self._batch_rows(rows, frame.estimated_size() / max(frame.height, 1))
            for offset in range(start, stop, rows):
                yield frame.slice(offset, min(rows, stop - offset)), None
            return
        if self.group_rows is not None:
            for frame in self._group_range_batches(rows, columns):
                yield frame, None
            return
        for batch in self._arrow_batches(rows, columns):  # no read-ahead: a map's memory is one batch
            yield batch_frame(batch), batch

    def _batch_rows(self, rows: int, per_row: float) -> int:
        """Rows per batch: at most `rows`, and at most `batch_bytes` at `per_row` bytes a row (at least one)."""
        return max(1, min(rows, int(self.batch_bytes / max(per_row, 1.0))))

    def _arrow_batches(self, rows: int, columns: list[str] | None) -> Iterator:
        for path, groups in self.pieces:
            pf = pq.ParquetFile(path)
            for g in groups:
                group = pf.metadata.row_group(g)
                size = self._batch_rows(rows, group.total_byte_size / max(group.num_rows, 1))
                # Decoded on this thread (not Arrow's pool) and its pages handed back after each batch:
                # else the allocator keeps every row group's decoding pages per thread, ~65 MB a map,
                # and maps in flight on threads each keep their own (see `partition_fold.local_threads`).
                for batch in pf.iter_batches(batch_size=size, row_groups=[g], columns=columns, use_threads=False):
                    yield batch
                    del batch
                    pa.default_memory_pool().release_unused()

    def _group_range_batches(self, rows: int, columns: list[str] | None) -> Iterator[pl.DataFrame]:
        """Rows `group_rows` of one row group, read by polars (which skips the group's pages before a slice, so
        the maps of one large group do not each decode all of it) in slices of at most DEFAULT_PARTITION_BYTES
        (each call re-reads the column chunk: one per batch was 5x slower; one per range would hold a range of
        a 1 GB partition whole), handed out in batches bounded as above."""
        (path, (g,)), = self.pieces
        start, stop = self.group_rows
        meta = pq.read_metadata(path)
        first = sum(meta.row_group(i).num_rows for i in range(g))  # the group's first row in the file
        group = meta.row_group(g)
        per_row = group.total_byte_size / max(group.num_rows, 1)
        size = self._batch_rows(rows, per_row)
        slice_rows = max(size, int(DEFAULT_PARTITION_BYTES / max(per_row, 1.0)) // size * size)
        scan = pl.scan_parquet(path, hive_partitioning=False)
        if columns is not None:
            scan = scan.select(columns)
        # The dtypes the whole-group path gives (Arrow -> polars), so every partition of an input has one schema.
        arrow_schema = pl.from_arrow(pq.read_schema(path).empty_table()).schema
        for lo in range(start, stop, slice_rows):
            frame = scan.slice(first + lo, min(slice_rows, stop - lo)).collect()
            frame = frame.cast({c: arrow_schema[c] for c in frame.columns if frame.schema[c] != arrow_schema[c]})
            for offset in range(0, frame.height, size):
                yield frame.slice(offset, size)
            del frame


def default_partition_bytes(total_bytes: int) -> int:
    """The partition size for an input of `total_bytes` when none is given (see TARGET_PARTITIONS)."""
    return int(min(DEFAULT_PARTITION_BYTES, max(MIN_DEFAULT_PARTITION_BYTES, total_bytes // TARGET_PARTITIONS)))


def plan_partitions(data: Dataset, partition_bytes: int | None = None) -> list[Partition]:
    """Cut the input into runs of whole row groups of about `partition_bytes` each, in input order
    (None: `default_partition_bytes` of the input's size); a row group larger than that is cut into row
    ranges of about that size, each at least MIN_SPLIT_BYTES. The cut depends on the input's metadata only."""
    if partition_bytes is not None and partition_bytes < 1:
        raise PipelineError(f"partition_bytes must be at least 1, got {partition_bytes}")
    if data.frame is not None:
        frame = data.frame
        total = max(int(frame.estimated_size()), 1)
        partition_bytes = partition_bytes or default_partition_bytes(total)
        step = max(1, math.ceil(frame.height * partition_bytes / total)) if frame.height else 1
        return [Partition(i, start, min(step, frame.height - start),
                          int(total * min(step, frame.height - start) / max(frame.height, 1)),
                          ((FRAME_PIECE, (start, min(start + step, frame.height))),), frame)
                for i, start in enumerate(range(0, frame.height, step))]
    out: list[Partition] = []
    pieces: dict[str, list[int]] = {}
    base = rows = nbytes = 0

    def close() -> None:
        nonlocal pieces, base, rows, nbytes
        if rows:
            out.append(Partition(len(out), base, rows, nbytes, tuple((f, tuple(g)) for f, g in pieces.items())))
        base, pieces, rows, nbytes = base + rows, {}, 0, 0

    groups = [(str(f), g, group.num_rows, group.total_byte_size) for f in data.files
              for meta in (pq.read_metadata(f),) for g in range(meta.num_row_groups)
              for group in (meta.row_group(g),) if group.num_rows]
    partition_bytes = partition_bytes or default_partition_bytes(sum(g[3] for g in groups))
    for f, g, group_rows, group_bytes in groups:
        cuts = min(-(-group_bytes // partition_bytes), group_bytes // MIN_SPLIT_BYTES, group_rows)
        if cuts >= 2:  # a large row group: row ranges of it, each a partition of its own
            close()
            bounds = [group_rows * k // cuts for k in range(cuts + 1)]
            for lo, hi in zip(bounds, bounds[1:]):
                out.append(Partition(len(out), base, hi - lo, group_bytes * (hi - lo) // group_rows, ((f, (g,)),),
                                     group_rows=(lo, hi)))
                base += hi - lo
            continue
        pieces.setdefault(f, []).append(g)
        rows += group_rows
        nbytes += group_bytes
        if nbytes >= partition_bytes:
            close()
    close()
    if len(out) > MAX_NUMBERED_PARTS:  # a row pass names its parts by partition
        raise PipelineError(f"the input would be cut into {len(out):,} partitions, more than the "
                            f"{MAX_NUMBERED_PARTS:,} whose part names keep the rows in order",
                            hint="set a larger partition_bytes (--executor-option partition_bytes=N)")
    return out


@dataclass
class PartialState:
    """A stage's partial state with what it covers: the fingerprint of params + inputs, and its partitions."""

    fingerprint: str
    partitions: frozenset[int]
    value: Any
    # One partition's share of each shuffle bucket (`PartitionedStage.split`); never merged, so
    # only a single map's state (and its checkpoint) carries them.
    parts: list | None = None


class PartitionedStage(Stage):
    """A table stage whose work is a map over partitions of one input, a merge, and a finish.

    Subclasses set `partition_input` and implement `broadcast`, `map`, `merge` and `finish` (see the
    module docstring). `partitionable()` may say no for some params (then the executor runs the
    whole input as one partition, which is the same computation).
    """

    partition_input: ClassVar[str] = "data"
    # True when map() only reads the stage, its partition and the broadcast: the local executor may
    # then map several partitions at once on threads (see `partition_fold.local_threads`).
    map_in_threads: ClassVar[bool] = False

    def partitionable(self) -> bool:
        return True

    def broadcast(self, ctx: Context, inputs: dict[str, Dataset]) -> Any:
        """What every map needs besides its partition (built once; put in the object store once on Ray)."""
        return None

    def map(self, partition: Partition, broadcast: Any) -> Any:
        raise NotImplementedError(f"stage '{self.name}' does not implement map()")

    def merge(self, a: Any, b: Any) -> Any:
        raise NotImplementedError(f"stage '{self.name}' does not implement merge()")

    def finish(self, ctx: Context, state: Any, broadcast: Any, inputs: dict[str, Dataset]) -> Any:
        raise NotImplementedError(f"stage '{self.name}' does not implement finish()")

    # -- the optional shuffle (see the module docstring) -----------------------------------------

    def shuffle_buckets(self, broadcast: Any) -> int:
        """How many reducers run after the maps; 0 (the default) means the stage does not shuffle."""
        return 0

    def split(self, value: Any, broadcast: Any) -> tuple[Any, list]:
        """Map side of the shuffle: (the partial state that merges, one part per bucket)."""
        raise NotImplementedError(f"stage '{self.name}' does not implement split()")

    def reduce(self, bucket: int, parts: list, broadcast: Any) -> Any:
        """One bucket: its part of every partition, in input order, to the bucket's result."""
        raise NotImplementedError(f"stage '{self.name}' does not implement reduce()")

    def shuffled(self, state: Any, results: list) -> Any:
        """What `finish` gets: the merged state (None without partitions) with the results in bucket order
        (the second round's, when there is one)."""
        raise NotImplementedError(f"stage '{self.name}' does not implement shuffled()")

    def second_buckets(self, broadcast: Any) -> int:
        """Reducers of a second round fed by the first round's results; 0 (the default): no second round."""
        return 0

    def split_reduced(self, bucket: int, result: Any, broadcast: Any) -> list:
        """A first-round reducer's result cut into one part per second-round bucket."""
        raise NotImplementedError(f"stage '{self.name}' does not implement split_reduced()")

    def reduce_second(self, bucket: int, parts: list, broadcast: Any) -> Any:
        """One second-round bucket: its part of every first-round result, in first-round bucket order."""
        raise NotImplementedError(f"stage '{self.name}' does not implement reduce_second()")

    def run(self, ctx: Context, **inputs: Dataset) -> Any:
        """Library use and the local executor: a streaming fold over the partitions, in order."""
        from pipeline.partition_fold import run_locally

        return run_locally(self, ctx, inputs, None)
