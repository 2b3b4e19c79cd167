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
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import pickle
import resource
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from pipeline.errors import PipelineError
from pipeline.fragments import MAX_NUMBERED_PARTS
from pipeline.io import BATCH_BYTES, DEFAULT_BATCH_ROWS, Dataset, batch_frame, write_table
from pipeline.row_pass import RowPass, local_gather, local_row_pass, write_row_pass_locally
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
MAX_LOCAL_THREADS = 4


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
                # and maps in flight on threads each keep their own (see `local_threads`).
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
    # then map several partitions at once on threads (see `local_threads`).
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
        return run_locally(self, ctx, inputs, None)


def state_fingerprint(stage: Stage, inputs: dict[str, Dataset]) -> str:
    """Params and inputs of a step: partial states with different fingerprints never merge."""
    h = xxhash.xxh3_128()
    h.update(json.dumps([stage.name, stage.version, stage.get_params(), repr(stage.fingerprint_extra())],
                        sort_keys=True, default=str).encode())
    for name in sorted(inputs):
        ds = inputs[name]
        h.update(name.encode())
        if ds.frame is not None:
            h.update(str(ds.frame.schema).encode())
            h.update(ds.frame.hash_rows(seed=0).to_numpy().tobytes())
        else:
            h.update(ds.stat_fingerprint().encode())
    return h.hexdigest()


def map_partition(stage: PartitionedStage, partition: Partition, broadcast: Any, fingerprint: str) -> tuple:
    """Run one map; return its PartialState with a profile (seconds, peak RSS of this process)."""
    started, t0, cpu0 = time.time(), time.perf_counter(), time.process_time()
    try:
        value, parts = stage.map(partition, broadcast), None
    except PipelineError as exc:  # bad data met while mapping: say which file, if the stage did not
        exc.add_context(file=partition.source_file())
        raise
    buckets = stage.shuffle_buckets(broadcast)
    if buckets:
        value, parts = stage.split(value, broadcast)
        if len(parts) != buckets:
            raise PipelineError(f"split() gave {len(parts)} shuffle parts for {buckets} buckets", stage=stage.name)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # cpu_s is the process's CPU time: the map's own when it has the process to itself (a Ray task,
    # or the local fold on one thread); it does not depend on how loaded the machine is.
    profile = {"s": seconds, "cpu_s": cpu, "peak_rss_mb": peak_mb, "bytes": partition.nbytes, "started": started}
    if parts is not None:
        profile["shuffle_bytes"] = pickled_size(parts)
    return PartialState(fingerprint, frozenset([partition.index]), value, parts), profile


def merge_states(stage: PartitionedStage, a: PartialState, b: PartialState) -> PartialState:
    """Merge two adjacent partial states, refusing states of other params/inputs or overlapping partitions."""
    if a.fingerprint != b.fingerprint:
        raise PipelineError(
            f"refusing to merge partial states of different params or inputs ({a.fingerprint[:12]} vs "
            f"{b.fingerprint[:12]})", stage=stage.name,
            hint="remove stale checkpoints, or rerun the step from the start",
        )
    twice = a.partitions & b.partitions
    if twice:
        raise PipelineError(f"refusing to merge partition(s) {sorted(twice)} twice", stage=stage.name)
    if a.parts is not None or b.parts is not None:
        raise PipelineError("refusing to merge states that still carry their shuffle parts", stage=stage.name)
    return PartialState(a.fingerprint, a.partitions | b.partitions, stage.merge(a.value, b.value))


def without_parts(state: PartialState) -> tuple[PartialState, list | None]:
    """A map's state ready to merge, and the shuffle parts it carried (None when the stage does not shuffle)."""
    if state.parts is None:
        return state, None
    return dataclasses.replace(state, parts=None), state.parts


def finish_value(stage: PartitionedStage, state: PartialState | None, broadcast: Any,
                 reduce_buckets: Any) -> Any:
    """The value `finish` gets: the merged state's, or, for a shuffling stage, that with the reducers' results.

    `reduce_buckets()` runs the reducers (locally in turn, or as Ray tasks) and returns their results
    in bucket order (the second round's, when the stage has one); it is only called when the stage shuffles.
    """
    value = state.value if state is not None else None
    if not stage.shuffle_buckets(broadcast):
        return value
    return stage.shuffled(value, reduce_buckets())


# ------------------------------------------------------------------------------ checkpoints


def checkpoint_path(ctx: Context, fingerprint: str, partition: Partition) -> Path | None:
    if ctx.checkpoint_dir is None:
        return None
    return Path(ctx.checkpoint_dir) / "partitions" / f"{fingerprint[:16]}-{partition.key()}.pkl"


def load_checkpoint(path: Path | None, fingerprint: str, partition: Partition, buckets: int = 0) -> PartialState | None:
    """A finished partition's state from an earlier, killed run of this very step, if there is one (with its
    part of each of the `buckets` shuffle buckets when the stage shuffles)."""
    if path is None or not path.is_file():
        return None
    try:
        state = pickle.loads(path.read_bytes())
    except Exception:  # noqa: BLE001 - a torn or foreign file is simply recomputed
        return None
    if not isinstance(state, PartialState) or state.fingerprint != fingerprint or state.partitions != {partition.index}:
        return None
    if len(state.parts or []) != buckets:  # saved without (or with other) shuffle parts: map it again
        return None
    return state


def save_checkpoint(path: Path | None, state: PartialState) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:  # streamed: no whole-state bytes copy (a 1.5 GB index state would double)
        pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ local executor


def local_threads(stage: PartitionedStage, partitions: int) -> int:
    """How many maps the local executor runs at once: one, unless the stage says its map is thread-safe.

    Then one per core this process may use (its CPU affinity; at most MAX_LOCAL_THREADS): NumPy and
    polars release the GIL, so two maps on two cores take about half the wall time.
    """
    if not stage.map_in_threads or partitions < 2:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_LOCAL_THREADS, partitions))


def local_partitions(stage: PartitionedStage, data: Dataset, partition_bytes: int | None) -> list[Partition]:
    """Partitions for the local fold: the same cut as on any executor (`partitions` is a deterministic stat);
    with several maps in flight, each reads smaller batches so together they hold about one batch."""
    partitions = plan_partitions(data, partition_bytes if stage.partitionable() else 1 << 62)
    threads = local_threads(stage, len(partitions))
    if threads > 1:  # maps in flight share one batch's worth of memory
        partitions = [dataclasses.replace(p, batch_bytes=max(1, BATCH_BYTES // threads)) for p in partitions]
    return partitions


def run_locally(stage: PartitionedStage, ctx: Context, inputs: dict[str, Dataset], partition_bytes: int | None) -> Any:
    """Library use: the step's outputs as `finish` gives them, a row pass streamed over the partitions."""
    result, partitions = fold_and_finish(stage, ctx, inputs, partition_bytes)
    if isinstance(result, RowPass):  # the outputs are a second pass over the same partitions
        return local_row_pass(result, ctx, partitions)
    return result


def fold_and_finish(stage: PartitionedStage, ctx: Context, inputs: dict[str, Dataset],
                    partition_bytes: int | None) -> tuple[Any, list[Partition]]:
    """A streaming fold: map each partition in order (or take its checkpoint), merge into the running state.

    With `local_threads` > 1 the next partitions are mapped on threads while the fold waits for the
    earliest one; states are still merged strictly in partition order, so the result is the same.
    """
    data = inputs[stage.partition_input]
    partitions = local_partitions(stage, data, partition_bytes)
    fingerprint = state_fingerprint(stage, inputs)
    ctx.gather_rows = local_gather(partitions)  # a stage may read a sample for its broadcast
    try:
        broadcast = stage.broadcast(ctx, inputs)
    finally:
        ctx.gather_rows = None
    state: PartialState | None = None
    profiles, resumed = [], 0
    # The shuffle's parts, bucket by bucket, in partition order (each reducer's input).
    bucket_parts: list[list] = [[] for _ in range(stage.shuffle_buckets(broadcast))]
    bar = ctx.progress(total=data.num_rows)

    def partial_of(part: Partition) -> tuple[PartialState, dict | None]:
        path = checkpoint_path(ctx, fingerprint, part)
        partial = load_checkpoint(path, fingerprint, part, len(bucket_parts))
        if partial is not None:
            return partial, None
        partial, profile = map_partition(stage, part, broadcast, fingerprint)
        save_checkpoint(path, partial)
        return partial, profile

    threads = local_threads(stage, len(partitions))
    if threads == 1:
        for part in partitions:
            state, resumed = _fold(stage, state, (part, _Done(partial_of(part))), profiles, resumed, bar,
                                   bucket_parts)
    else:
        # Each map's matrix products on one BLAS thread: maps on every core, each with BLAS's own threads,
        # oversubscribe the cores (the full default audit of 126 MB on 2 cores: 30-31 CPU s and 18-19 s
        # wall with the limit, 34-37 and 19-21 without; the same findings). BLAS builds with their own thread pool
        # (NumPy's); an OpenMP build's thread count is per calling thread and stays as it is.
        from threadpoolctl import threadpool_limits

        with ThreadPoolExecutor(max_workers=threads) as pool, threadpool_limits(limits=1, user_api="blas"):
            pending: collections.deque = collections.deque()
            for part in partitions:
                pending.append((part, pool.submit(partial_of, part)))
                if len(pending) >= threads:  # all workers busy: fold the earliest while they run
                    state, resumed = _fold(stage, state, pending.popleft(), profiles, resumed, bar, bucket_parts)
            while pending:
                state, resumed = _fold(stage, state, pending.popleft(), profiles, resumed, bar, bucket_parts)
    bar.close()
    second = stage.second_buckets(broadcast) if bucket_parts else 0
    record_partitioning(ctx, partitions, profiles, resumed, state, len(bucket_parts), second)

    def reduce_buckets() -> list:
        results: list = []
        second_parts: list[list] = [[] for _ in range(second)]
        for bucket, parts in enumerate(bucket_parts):
            result = stage.reduce(bucket, parts, broadcast)
            bucket_parts[bucket] = []  # a bucket's parts are freed once reduced
            if not second:
                results.append(result)
                continue
            for target, piece in enumerate(stage.split_reduced(bucket, result, broadcast)):
                second_parts[target].append(piece)
            del result
        for bucket in range(second):
            results.append(stage.reduce_second(bucket, second_parts[bucket], broadcast))
            second_parts[bucket] = []
        return results

    ctx.gather_rows = local_gather(partitions)
    try:
        result = stage.finish(ctx, finish_value(stage, state, broadcast, reduce_buckets), broadcast, inputs)
    finally:
        ctx.gather_rows = None
    return result, partitions


class _Done:
    """A result already computed, with the `result()` of a future."""

    def __init__(self, value: Any):
        self.value = value

    def result(self) -> Any:
        return self.value


def _fold(stage: PartitionedStage, state: PartialState | None, item: tuple, profiles: list, resumed: int,
          bar: Any, bucket_parts: list[list]) -> tuple[PartialState, int]:
    part, future = item
    partial, profile = future.result()
    partial, parts = without_parts(partial)
    for bucket, piece in enumerate(parts or []):
        bucket_parts[bucket].append(piece)
    if profile is None:
        resumed += 1
    else:
        profiles.append(profile)
    bar.update(part.num_rows)
    return (partial if state is None else merge_states(stage, state, partial)), resumed


class _ByteCounter:
    """A write-only file that only counts: the C pickler hands it large buffers without copying them."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        self.n += size
        return size


def pickled_size(value: Any) -> int:
    """Bytes `value` pickles to, without materialising them (a merged index state is ~1.5 GB)."""
    counter = _ByteCounter()
    pickle.Pickler(counter, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return counter.n


def record_partitioning(ctx: Context, partitions: list[Partition], profiles: list[dict], resumed: int,
                        state: PartialState | None, buckets: int = 0, second: int = 0) -> None:
    """`partitions` in stats; timings and memory (which vary by executor and machine) under `partition_profile`."""
    ctx.record("partitions", len(partitions))
    if buckets:
        ctx.record("shuffle_buckets", buckets)
    if second:
        ctx.record("second_buckets", second)
    if not profiles and not resumed:
        return
    seconds = sorted(p["s"] for p in profiles) or [0.0]
    ctx.record("partition_profile", {
        "resumed": resumed,
        "median_map_s": round(seconds[len(seconds) // 2], 4),
        "max_map_s": round(seconds[-1], 4),
        "median_map_cpu_s": round(sorted(p.get("cpu_s", 0.0) for p in profiles)[len(profiles) // 2], 4)
        if profiles else 0.0,
        "median_partition_mb": round(sorted(p.nbytes for p in partitions)[len(partitions) // 2] / 1e6, 3),
        "max_task_peak_rss_mb": round(max((p["peak_rss_mb"] for p in profiles), default=0.0), 1),
        # All the maps' CPU, and when the first one started (epoch seconds): on Ray, what the workers'
        # start-up costs a step is that start minus the step's.
        "total_map_cpu_s": round(sum(p.get("cpu_s", 0.0) for p in profiles), 4),
        "first_map_started_at": min((p["started"] for p in profiles if "started" in p), default=None),
        "merged_state_bytes": pickled_size(state.value) if state else 0,
        # What the maps sent to the reducers (of the partitions mapped in this run).
        **({"shuffle_bytes": sum(p.get("shuffle_bytes", 0) for p in profiles)} if buckets else {}),
    })


def run_partitioned_step(stage: PartitionedStage, ctx: Context, inputs: dict[str, Dataset], out_dir: Path,
                         partition_bytes: int | None) -> None:
    result, partitions = fold_and_finish(stage, ctx, inputs, partition_bytes)
    if isinstance(result, RowPass):
        write_row_pass_locally(result, ctx, partitions, out_dir)
    else:
        write_table(result, out_dir)
