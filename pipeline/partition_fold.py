"""The local executor of a partitioned stage: a streaming fold over the partitions, in input order.

Each partition is mapped (or its checkpoint taken) and merged into the running state, then the
stage's shuffle reducers run in turn and `finish` gets the result (`pipeline.partitioned`). A stage
whose map is thread-safe has several partitions mapped at once on threads; states are still merged
strictly in partition order, so the result is the one the Ray executor's tree of merges gives.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pipeline.io import BATCH_BYTES, Dataset
from pipeline.partial_states import (
    checkpoint_path,
    finish_value,
    load_checkpoint,
    map_partition,
    merge_states,
    record_partitioning,
    save_checkpoint,
    state_fingerprint,
    without_parts,
)
from pipeline.partitioned import PartialState, Partition, PartitionedStage, plan_partitions
from pipeline.row_pass import RowPass, local_gather, local_row_pass, write_row_pass_locally
from pipeline.stage import Context
from pipeline.writing import write_table

MAX_LOCAL_THREADS = 4


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



def run_partitioned_step(stage: PartitionedStage, ctx: Context, inputs: dict[str, Dataset], out_dir: Path,
                         partition_bytes: int | None) -> None:
    result, partitions = fold_and_finish(stage, ctx, inputs, partition_bytes)
    if isinstance(result, RowPass):
        write_row_pass_locally(result, ctx, partitions, out_dir)
    else:
        write_table(result, out_dir)
