"""Partial states of a partitioned step, as every executor handles them (`pipeline.partitioned`).

A map turns a partition into a `PartialState` fingerprinted by the step's params and inputs; states
merge only with states of the same fingerprint and other partitions; a finished partition's state is
checkpointed so a killed driver resumes from it; and the step records how the maps went and how big
the merged state is. The local fold (`pipeline.partition_fold`) and the Ray executor
(`pipeline.executors.ray_partitioned`) both do these steps with the functions here. `PartialState`
itself stays in `pipeline.partitioned`, where checkpoints written by earlier versions find it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import resource
import time
from pathlib import Path
from typing import Any

import xxhash

from pipeline.errors import PipelineError
from pipeline.io import Dataset
from pipeline.partitioned import PartialState, Partition, PartitionedStage
from pipeline.stage import Context, Stage


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



# ------------------------------------------------------------------------------ sizes and stats


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
