"""Partitioned stages on Ray: one task per partition, a tree of merges, `finish` once on the driver.

The broadcast (e.g. the test set's n-gram table) is built once on the driver and put in the object
store once; every map task gets a reference, which Ray resolves on the worker (zero-copy for NumPy
arrays on the same node). Merge tasks take their two inputs as object references too, so partial
states go from worker to worker through the object store and only the final state reaches the
driver. Merges pair adjacent runs of partitions, in input order, so the merged state is the one
the local executor's left fold gives (see `pipeline.partitioned`).

A map task that dies with its worker is retried by Ray (`max_retries`); its state is merged once
because every state carries the partitions it covers and a merge refuses an overlap. Finished
partitions' states are checkpointed on the shared filesystem by the task itself, so a killed
driver's rerun submits only the partitions that were not finished.

A `finish` that returns a `RowPass` (`pipeline.row_pass`: its outputs are a second pass over the
same partitions) gets one task per partition, each writing its partition's rows on a worker; while
`broadcast` or `finish` runs, `ctx.gather_rows` reads chosen rows in tasks on the workers too (a sample
to train on, the rows in some pair), and while `finish` runs `ctx.join_rows`
computes a function of row pairs there (`pipeline.executors.ray_join`).

A shuffling stage's map task has one more return per bucket (its part of that bucket); once every
map has finished, one reduce task per bucket takes those returns of all maps as arguments, so the
parts go from worker to worker and the driver gets only the reducers' results. With a second round,
a reduce task has one more return per second-round bucket, and one task per second-round bucket takes
those returns of every reducer: the driver gets the first round's statuses and the second round's results.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from pipeline.executors.ray_join import ray_join
from pipeline.executors.ray_tasks import RETURNED_ERRORS
from pipeline.fragments import remove_leftovers
from pipeline.io import Dataset
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
from pipeline.partitioned import PartitionedStage, plan_partitions
from pipeline.row_pass import RowPass, end_row_pass, output_folders, split_rows, write_partition_rows
from pipeline.stage import Context
from pipeline.writing import write_table


def _warm_task(module: str) -> int:
    """Import the stage's module on a worker while the driver builds the broadcast (see `_warm_workers`)."""
    importlib.import_module(module)
    return os.getpid()


def _warm_workers(executor: Any, stage: PartitionedStage, options: dict, partitions: int) -> list:
    """One no-op task per cluster CPU (at most one per partition), submitted before the driver's own work for the step.

    A worker's first task pays for starting the worker and importing the stage library (about 1 s
    of CPU per worker: polars, numpy and every stage module). Started first, that overlaps with
    building the broadcast (seconds for a test set that is embedded) and putting it in the object
    store, instead of following it; the maps then find warm workers. Nothing is cancelled: the
    caller waits for these refs (they are quick) before the step returns or raises.
    """
    warm = ray.remote(_warm_task).options(scheduling_strategy="SPREAD", max_retries=0,
                                          num_cpus=options.get("num_cpus", 1))
    slots = max(1, int(executor.cluster_cpus() // max(options.get("num_cpus", 1), 1e-9)))
    return [warm.remote(type(stage).__module__) for _ in range(min(slots, partitions))]


def _map_task(stage: PartitionedStage, partition, broadcast: Any, fingerprint: str, checkpoint: str | None,
              cwd: str, buckets: int) -> tuple:
    from pipeline.executors.ray import _enter, _pack_error

    _enter(cwd)
    try:
        state, profile = map_partition(stage, partition, broadcast, fingerprint)
    except RETURNED_ERRORS as exc:
        return ("error", _pack_error(exc)), ("error", _pack_error(exc)), *([None] * buckets)
    save_checkpoint(Path(checkpoint) if checkpoint else None, state)  # with its shuffle parts
    state, parts = without_parts(state)
    # The small profile comes back to the driver, the state stays for the merges, each shuffle part
    # for its bucket's reducer.
    return ("ok", profile), ("ok", state), *(parts or [])


def _reduce_task(stage: PartitionedStage, bucket: int, broadcast: Any, second: int, *parts: Any) -> tuple:
    """("ok", the bucket's result), or with a second round ("ok", None) and the result's part for each of its
    buckets (they go worker to worker like the maps' parts); ("error", ...) and no parts when the stage refused."""
    from pipeline.executors.ray import _pack_error

    try:
        result = stage.reduce(bucket, list(parts), broadcast)
        if not second:
            return ("ok", result)
        pieces = stage.split_reduced(bucket, result, broadcast)
        del result
        return ("ok", None), *pieces
    except RETURNED_ERRORS as exc:
        error = ("error", _pack_error(exc))
        return error if not second else (error, *([None] * second))


def _reduce_second_task(stage: PartitionedStage, bucket: int, broadcast: Any, *parts: Any) -> tuple:
    from pipeline.executors.ray import _pack_error

    if any(part is None for part in parts):  # a first-round reducer refused: its status says why
        return ("skipped", None)
    try:
        return ("ok", stage.reduce_second(bucket, list(parts), broadcast))
    except RETURNED_ERRORS as exc:
        return ("error", _pack_error(exc))


def _merge_task(stage: PartitionedStage, a: tuple, b: tuple) -> tuple:
    from pipeline.executors.ray import _pack_error

    for side in (a, b):
        if side[0] == "error":
            return side
    try:
        return ("ok", merge_states(stage, a[1], b[1]))
    except RETURNED_ERRORS as exc:
        return ("error", _pack_error(exc))


class _MergeTree:
    """The merge tree over partitions in input order: adjacent pairs, level by level, an odd last one
    carried up, the grouping the local executor's fold is checked against (`pipeline.partitioned`).

    Leaves arrive in order as their map tasks are submitted; a merge is submitted as soon as both of
    its inputs exist (Ray runs it once they are computed), and the tree drops its references to a
    merge's inputs then, so Ray frees a partial state once merged.
    """

    def __init__(self, leaves: int, merge: Callable[[Any, Any], Any]):
        self.merge = merge
        self.levels: list[list[Any]] = [[None] * leaves]
        while len(self.levels[-1]) > 1:
            self.levels.append([None] * ((len(self.levels[-1]) + 1) // 2))

    def put(self, index: int, ref: Any, level: int = 0) -> None:
        row = self.levels[level]
        row[index] = ref
        if level + 1 == len(self.levels):
            return
        left, right = index - index % 2, index - index % 2 + 1
        if right == len(row):  # the odd last one goes up unmerged
            row[left] = None
            self.put(left // 2, ref, level + 1)
        elif row[left] is not None and row[right] is not None:
            merged = self.merge(row[left], row[right])
            row[left] = row[right] = None
            self.put(left // 2, merged, level + 1)

    @property
    def root(self) -> Any:
        return self.levels[-1][0]


def run_partitioned_on_ray(executor: Any, stage: PartitionedStage, ctx: Context, inputs: dict[str, Dataset],
                           out_dir: Path, remote_ctx: Context) -> None:
    data = inputs[stage.partition_input]
    partitions = plan_partitions(data, executor.partition_bytes if stage.partitionable() else 1 << 62)
    options = executor._task_options(stage)
    warming = _warm_workers(executor, stage, options, len(partitions)) if partitions else []
    try:
        _map_and_finish(executor, stage, ctx, inputs, out_dir, remote_ctx, partitions, options)
    finally:
        if warming:  # quick (imports); waited for so that nothing of this step outlives it
            ray.wait(warming, num_returns=len(warming), fetch_local=False)


def _map_and_finish(executor: Any, stage: PartitionedStage, ctx: Context, inputs: dict[str, Dataset],
                    out_dir: Path, remote_ctx: Context, partitions: list, options: dict) -> None:
    from pipeline.executors.ray import IN_FLIGHT_PER_CPU, _get, _unpack_error, run_bounded

    fingerprint = state_fingerprint(stage, inputs)
    ctx.gather_rows = _ray_gather(executor, partitions, options)  # a stage may read a sample for its broadcast
    try:
        broadcast = stage.broadcast(ctx, inputs)
    finally:
        ctx.gather_rows = None
    buckets = stage.shuffle_buckets(broadcast)
    second = stage.second_buckets(broadcast) if buckets else 0
    map_task = ray.remote(_map_task).options(scheduling_strategy="SPREAD", num_returns=2 + buckets, **options)
    merge_task = ray.remote(_merge_task).options(num_cpus=options.get("num_cpus", 1),
                                                  max_retries=executor.max_retries)
    stage_ref, broadcast_ref = ray.put(stage), ray.put(broadcast)
    tree = _MergeTree(len(partitions), lambda a, b: merge_task.remote(stage_ref, a, b))
    paths = [checkpoint_path(remote_ctx, fingerprint, part) for part in partitions]
    part_refs: list[list] = [[] for _ in partitions]  # each partition's shuffle parts, one ref per bucket
    to_map: list[int] = []
    for i, part in enumerate(partitions):
        done = load_checkpoint(paths[i], fingerprint, part, buckets)
        if done is None:
            to_map.append(i)
        else:
            done, parts = without_parts(done)
            tree.put(i, ray.put(("ok", done)))
            part_refs[i] = [ray.put(piece) for piece in parts or []]
    resumed = len(partitions) - len(to_map)

    def submit(k: int):
        i = to_map[k]
        refs = map_task.remote(stage_ref, partitions[i], broadcast_ref, fingerprint,
                               str(paths[i]) if paths[i] else None, executor._cwd, buckets)
        profile_ref, state_ref, part_refs[i] = refs[0], refs[1], list(refs[2:])
        tree.put(i, state_ref)  # merges are submitted as soon as both their inputs have been
        return profile_ref

    profiles: list = []
    failures: list = []

    def finished(_k: int, result: tuple) -> bool:
        if result[0] == "error":
            failures.append(result[1])
            return False  # a partition failed for good: map no more (those in flight still finish)
        profiles.append(result[1])
        bar.update(1)
        return True

    bar = ctx.progress(total=len(partitions), unit="partitions")
    try:
        bar.update(resumed)
        run_bounded(submit, len(to_map), IN_FLIGHT_PER_CPU * executor.cluster_cpus(), finished)
        if failures:
            raise _unpack_error(failures[0])
        # Every map has finished: the reducers can start while the last merges run.
        reduced = _submit_reducers(executor, stage, stage_ref, broadcast_ref, part_refs, buckets, options, second)
        part_refs.clear()  # the reduce tasks hold the parts now; Ray frees each once its reducer is done
        try:
            final = _get(tree.root) if partitions else ("ok", None)
        except BaseException:
            _settle(reduced)
            raise
    finally:
        bar.close()
    if final[0] == "error":
        _settle(reduced)
        raise _unpack_error(final[1])
    state = final[1]
    record_partitioning(ctx, partitions, profiles, resumed, state, buckets, second)
    # With a second round the first `buckets` refs are the first round's statuses (checked, then dropped).
    value = finish_value(stage, state, broadcast, lambda: _reduced(reduced)[buckets if second else 0:])
    ctx.gather_rows = _ray_gather(executor, partitions, options)
    ctx.join_rows = ray_join(executor, partitions, options)
    try:
        result = stage.finish(ctx, value, broadcast, inputs)
    finally:
        ctx.gather_rows = ctx.join_rows = None
    if isinstance(result, RowPass):
        _run_row_pass(executor, result, ctx, remote_ctx, partitions, out_dir, options)
    else:
        write_table(result, out_dir)


def _gather_task(fn: Callable, partition, rows: Any, extra: Any, cwd: str) -> tuple:
    from pipeline.executors.ray import _enter, _pack_error

    _enter(cwd)
    try:
        return ("ok", fn(partition, rows, extra))
    except RETURNED_ERRORS as exc:
        return ("error", _pack_error(exc))


def _ray_gather(executor: Any, partitions: list, options: dict) -> Callable:
    """`Context.gather_rows` on Ray: one task per partition holding some of the rows; results in input order."""
    from pipeline.executors.ray import IN_FLIGHT_PER_CPU, _unpack_error, run_bounded

    task = ray.remote(_gather_task).options(scheduling_strategy="SPREAD", **options)

    def gather_rows(fn: Callable, rows: Any, extra: Any = None) -> list:
        pieces = split_rows(partitions, rows)
        fn_ref, extra_ref = ray.put(fn), ray.put(extra)
        results: list = [None] * len(pieces)
        failures: list = []

        def finished(k: int, result: tuple) -> bool:
            if result[0] == "error":
                failures.append(result[1])
                return False
            results[k] = result[1]
            return True

        run_bounded(lambda k: task.remote(fn_ref, pieces[k][0], pieces[k][1], extra_ref, executor._cwd),
                    len(pieces), IN_FLIGHT_PER_CPU * executor.cluster_cpus(), finished)
        if failures:
            raise _unpack_error(failures[0])
        return results

    return gather_rows


def _row_pass_task(rows: RowPass, partition, payload: Any, folders: dict[str, str], cwd: str) -> tuple:
    from pipeline.executors.ray import _enter, _pack_error

    _enter(cwd)
    try:
        return ("ok", write_partition_rows(rows, partition, payload, folders))
    except RETURNED_ERRORS as exc:
        return ("error", _pack_error(exc))


def _run_row_pass(executor: Any, rows: RowPass, ctx: Context, remote_ctx: Context, partitions: list,
                  out_dir: Path, options: dict) -> None:
    """One task per partition writes that partition's rows of every output; then the driver's `done`."""
    from pipeline.executors.ray import IN_FLIGHT_PER_CPU, _unpack_error, run_bounded

    folders = output_folders(rows, remote_ctx, out_dir)
    task = ray.remote(_row_pass_task).options(scheduling_strategy="SPREAD", **options)
    rows_ref = ray.put(rows)  # the pass without the driver's whole state: each task gets its payload
    failures: list = []

    def finished(_k: int, result: tuple) -> bool:
        if result[0] == "error":
            failures.append(result[1])
            return False
        return True

    try:
        run_bounded(lambda i: task.remote(rows_ref, partitions[i], rows.payload(partitions[i]), folders, executor._cwd),
                    len(partitions), IN_FLIGHT_PER_CPU * executor.cluster_cpus(), finished)
    finally:
        for folder in folders.values():
            remove_leftovers(Path(folder))
    if failures:
        raise _unpack_error(failures[0])
    end_row_pass(rows, ctx, folders)


def _submit_reducers(executor: Any, stage: PartitionedStage, stage_ref: Any, broadcast_ref: Any, part_refs: list,
                     buckets: int, options: dict, second: int = 0) -> list:
    """One reduce task per bucket, its arguments that bucket's part of every partition in input order; with a
    second round, one more task per second-round bucket, its arguments that bucket's part of every first-round
    result. The refs to wait for: every reducer's status, then (with a second round) the second round's."""
    if not buckets:
        return []
    common = {"scheduling_strategy": "SPREAD", "max_retries": executor.max_retries,
              "num_cpus": options.get("num_cpus", 1)}
    reduce_task = ray.remote(_reduce_task).options(num_returns=1 + second, **common)
    first = [reduce_task.remote(stage_ref, b, broadcast_ref, second, *(refs[b] for refs in part_refs))
             for b in range(buckets)]
    if not second:
        return first
    second_task = ray.remote(_reduce_second_task).options(**common)
    statuses = [refs[0] for refs in first]
    return statuses + [second_task.remote(stage_ref, k, broadcast_ref, *(refs[1 + k] for refs in first))
                       for k in range(second)]


def _settle(refs: list) -> None:
    """Wait for tasks whose results are no longer wanted: nothing of a failed step is left running."""
    if refs:
        ray.wait(refs, num_returns=len(refs), fetch_local=False)


def _reduced(refs: list) -> list:
    from pipeline.executors.ray import _get, _unpack_error

    results = [_get(ref) for ref in refs]
    for result in results:
        if result[0] == "error":
            raise _unpack_error(result[1])
    return [value for _, value in results]
