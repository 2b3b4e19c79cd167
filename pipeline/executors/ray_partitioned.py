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
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import ray

from pipeline.errors import PipelineError
from pipeline.io import Dataset, write_table
from pipeline.partitioned import (
    DEFAULT_PARTITION_BYTES,
    PartitionedStage,
    checkpoint_path,
    load_checkpoint,
    map_partition,
    merge_states,
    plan_partitions,
    record_partitioning,
    save_checkpoint,
    state_fingerprint,
)
from pipeline.stage import Context


def _map_task(stage: PartitionedStage, partition, broadcast: Any, fingerprint: str, checkpoint: str | None,
              cwd: str) -> tuple:
    from pipeline.executors.ray import _enter, _pack_error

    _enter(cwd)
    try:
        state, profile = map_partition(stage, partition, broadcast, fingerprint)
    except PipelineError as exc:
        return ("error", _pack_error(exc)), ("error", _pack_error(exc))
    save_checkpoint(Path(checkpoint) if checkpoint else None, state)
    # Two objects: the small profile comes back to the driver, the state stays for the merges.
    return ("ok", profile), ("ok", state)


def _merge_task(stage: PartitionedStage, a: tuple, b: tuple) -> tuple:
    from pipeline.executors.ray import _pack_error

    for side in (a, b):
        if side[0] == "error":
            return side
    try:
        return ("ok", merge_states(stage, a[1], b[1]))
    except PipelineError as exc:
        return ("error", _pack_error(exc))


def run_partitioned_on_ray(executor: Any, stage: PartitionedStage, ctx: Context, inputs: dict[str, Dataset],
                           out_dir: Path, remote_ctx: Context) -> None:
    from pipeline.executors.ray import _get, _unpack_error

    data = inputs[stage.partition_input]
    size = executor.partition_bytes or DEFAULT_PARTITION_BYTES
    partitions = plan_partitions(data, size if stage.partitionable() else 1 << 62)
    fingerprint = state_fingerprint(stage, inputs)
    broadcast = stage.broadcast(ctx, inputs)
    options = executor._task_options(stage)
    map_task = ray.remote(_map_task).options(scheduling_strategy="SPREAD", num_returns=2, **options)
    merge_task = ray.remote(_merge_task).options(num_cpus=options.get("num_cpus", 1),
                                                  max_retries=executor.max_retries)
    stage_ref, broadcast_ref = ray.put(stage), ray.put(broadcast)
    refs: list = []
    resumed = 0
    profile_refs = []
    for part in partitions:
        path = checkpoint_path(remote_ctx, fingerprint, part)
        done = load_checkpoint(path, fingerprint, part)
        if done is not None:
            refs.append(ray.put(("ok", done)))
            resumed += 1
            continue
        profile_ref, state_ref = map_task.remote(stage_ref, part, broadcast_ref, fingerprint,
                                                 str(path) if path else None, executor._cwd)
        refs.append(state_ref)
        profile_refs.append(profile_ref)
    # The whole tree of adjacent merges is submitted now: Ray runs each merge as soon as its two
    # inputs exist, and frees a partial state once merged, so states do not pile up in the store.
    while len(refs) > 1:
        paired = [merge_task.remote(stage_ref, refs[i], refs[i + 1]) for i in range(0, len(refs) - 1, 2)]
        refs = paired + ([refs[-1]] if len(refs) % 2 else [])
    bar = ctx.progress(total=len(partitions), unit="partitions")
    finished = False
    try:
        profiles = []
        pending = list(profile_refs)
        bar.update(resumed)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            result = _get(ready[0])
            if result[0] == "error":
                raise _unpack_error(result[1])
            profiles.append(result[1])
            bar.update(1)
        final = _get(refs[0]) if refs else ("ok", None)
        finished = True
    finally:
        bar.close()
        for ref in refs + profile_refs if not finished else []:  # a partition failed for good: stop the rest
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
    if final[0] == "error":
        raise _unpack_error(final[1])
    state = final[1]
    record_partitioning(ctx, partitions, profiles, resumed, state)
    write_table(stage.finish(ctx, state.value if state is not None else None, broadcast, inputs), out_dir)
