"""Run the same pipelines on a Ray cluster, with the same results as the local executor.

How each kind of stage is placed (the runner still owns caching, manifests and atomic publication):

- Row-wise stages (`kind == "rowwise"`) are split into fragments: contiguous row ranges of the input
  Parquet files, in file order, cut from the input alone (`pipeline.fragments`). One Ray task per
  fragment writes it exactly as the local executor does (`part-<fragment>-<k>.parquet`, the same
  batches and row groups), so the step's files are the local files byte for byte, and each
  part is written under a temporary name and renamed, so a retried task overwrites cleanly. We use
  Ray core tasks rather than Ray Data's `map_batches` + `write_parquet` because Ray Data names
  output files by its own block ids, which would lose that order.
- Row-wise stages that hold a model (`uses_model = True` on the class, e.g. `embed`) run on a pool
  of Ray actors instead: each actor keeps one copy of the stage and whatever the stage caches per
  process (the loaded model) across all fragments it serves. When the cluster has GPUs and the
  stage does not say otherwise, each actor asks for one. The pool outlives its step when the next
  step is also a model step with the same resources (embedding a corpus, then a test set: the model
  loads once per actor); any other step, and `close`, release it first, since idle actors hold CPUs.
- Partitioned stages (`pipeline.partitioned.PartitionedStage`: a map over partitions of one input,
  a merge, a finish) fan their partitions out as tasks and merge in a tree (`ray_partitioned.py`).
- Every other stage ("table" stages: sources, split, sample, index builds, n-gram audits) needs its
  whole input, so it runs as one Ray task sized by `stage.resources` (CPUs, GPUs, memory), which lets
  Ray place it on a node where it fits. It reads its inputs from the shared filesystem and writes
  its output there; only the small things (stats, side-output names) travel back to the driver.

Workers must see the staging folder at the same path as the driver (a shared filesystem, or local
disk for nodes on one machine), and must have corpusforge installed, as for any Ray application.

The tasks themselves (and how stats and errors travel back) are in `ray_tasks.py`; finding and
probing the head is `ray_connect.py`; partitioned stages are `ray_partitioned.py`.

Failures: tasks are retried `max_retries` times when a worker dies (actors are restarted and their
calls retried), and every write is idempotent, so the step's output is complete and correct after
a retry. A wrong address or an absent cluster is reported as a PipelineError within seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray

from pipeline.errors import PipelineError, first_line
from pipeline.executors.ray_connect import is_loopback, probe
from pipeline.executors.ray_tasks import (  # noqa: F401 - re-exported for ray_partitioned and tests
    IN_FLIGHT_PER_CPU,
    StatsLog,
    _enter,
    _FragmentWorker,
    _get,
    _pack_error,
    _run_fragment,
    _run_table_stage,
    _unify_part_schemas,
    _unpack_error,
    replay_stats,
    run_bounded,
)
from pipeline.fragments import fragment_size, is_rowwise_step, plan_fragments, remove_leftovers
from pipeline.io import Dataset
from pipeline.stage import Context, Stage

# ------------------------------------------------------------------------------ the executor


class RayExecutor:
    """Runs each step on a Ray cluster; see the module docstring for where each kind of stage runs.

    address: a running cluster's head as host:port (GCS port, 6379 by default), 'auto' for the
        cluster this machine belongs to, or None for $RAY_ADDRESS, else a Ray instance started here.
    connect_timeout_s: how long to wait for the head to answer before giving up with an error.
    max_retries: how often a task is retried (or an actor restarted) when its worker dies.
    fragment_rows: rows per row-wise task; None sizes fragments from the input alone
        (`pipeline.fragments`), as the local executor does: give both the same value for the same files.
    actors: size of the actor pool for model-holding stages, at most what the cluster holds; None fills it.
    runtime_env: passed to ray.init (e.g. to ship code to a cluster without corpusforge installed).
    partition_bytes: bytes per partition of a partitioned stage (`pipeline.partitioned`); None = its default.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        connect_timeout_s: float = 15.0,
        max_retries: int = 3,
        fragment_rows: int | None = None,
        actors: int | None = None,
        runtime_env: dict | None = None,
        partition_bytes: int | None = None,
    ):
        from pipeline.executors import check_ray_options

        check_ray_options({"address": address, "connect_timeout_s": connect_timeout_s, "max_retries": max_retries,
                           "fragment_rows": fragment_rows, "actors": actors, "runtime_env": runtime_env,
                           "partition_bytes": partition_bytes})
        self.partition_bytes = partition_bytes
        self.address = address
        self.connect_timeout_s = connect_timeout_s
        self.max_retries = max_retries
        self.fragment_rows = fragment_rows
        self.actors = actors
        self.runtime_env = runtime_env
        self._owns_connection = False
        # The model actors of the last model step, kept for the next one with the same resources.
        self._actor_pool: tuple[tuple, list] | None = None
        self._connect()

    # -- connection ---------------------------------------------------------------------------

    def _connect(self) -> None:
        if ray.is_initialized():
            return  # the caller connected already (a notebook, a Ray job); use that cluster
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if address not in (None, "auto", "local"):
            probe(address, self.connect_timeout_s, given_by="--address" if self.address else "$RAY_ADDRESS")
        kwargs: dict[str, Any] = {
            "address": address,
            "logging_level": logging.WARNING,
            "runtime_env": self.runtime_env,
            # Stage errors come back as exceptions; worker chatter would only clutter the CLI.
            "log_to_driver": False,
        }
        if address in (None, "local"):
            kwargs["include_dashboard"] = False
        elif is_loopback(address):
            # A cluster on loopback: attach this driver to it there, not at the machine's public IP.
            kwargs["_node_ip_address"] = "127.0.0.1"
        try:
            ray.init(**kwargs)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
            text = first_line(exc)
            raise PipelineError(
                f"could not connect to a Ray cluster at {address or 'a new local instance'}: {text}",
                hint="start one with `ray start --head`, or pass --address HOST:PORT of its head node",
            ) from None
        self._owns_connection = True

    def close(self) -> None:
        self._release_actors()
        if self._owns_connection and ray.is_initialized():
            ray.shutdown()
        self._owns_connection = False

    def cluster_cpus(self) -> int:
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    # -- steps --------------------------------------------------------------------------------

    def run_step(self, stage: Stage, ctx: Context, inputs: dict[str, Dataset], out_dir: Path) -> None:
        # Workers may start elsewhere than the driver: ship absolute paths, and the driver's cwd.
        self._cwd = os.getcwd()
        out_dir = out_dir.resolve()
        inputs = {name: _absolute(ds) for name, ds in inputs.items()}
        from pipeline.partitioned import PartitionedStage

        rowwise = is_rowwise_step(stage, inputs)
        if not (rowwise and getattr(type(stage), "uses_model", False)):
            self._release_actors()  # idle actors hold their CPUs: this step's tasks would wait for them
        if isinstance(stage, PartitionedStage):
            from pipeline.executors.ray_partitioned import run_partitioned_on_ray

            run_partitioned_on_ray(self, stage, ctx, inputs, out_dir, _remote_ctx(ctx, out_dir))
        elif rowwise:
            (data,) = inputs.values()
            self._run_rowwise(stage, ctx, data, out_dir)
        else:
            self._run_table(stage, ctx, inputs, out_dir)

    def _task_options(self, stage: Stage) -> dict[str, Any]:
        res = dict(stage.resources or {})
        options: dict[str, Any] = {"num_cpus": res.get("num_cpus", 1), "max_retries": self.max_retries}
        if res.get("num_gpus"):
            options["num_gpus"] = res["num_gpus"]
        if res.get("memory"):
            options["memory"] = int(res["memory"])
        _check_fits_a_node(type(stage).__name__, options)
        return options

    def _run_table(self, stage: Stage, ctx: Context, inputs: dict[str, Dataset], out_dir: Path) -> None:
        task = ray.remote(_run_table_stage).options(**self._task_options(stage))
        result = _get(task.remote(stage, _remote_ctx(ctx, out_dir), inputs, str(out_dir), self._cwd))
        if result[0] == "error":
            raise _unpack_error(result[1])
        _, stats, side_outputs = result
        ctx.stats.update(stats)
        ctx.side_outputs.extend(side_outputs)

    def _run_rowwise(self, stage: Stage, ctx: Context, data: Dataset, out_dir: Path) -> None:
        fragments = plan_fragments(data, stage.batch_rows, self.fragment_rows)
        remote_ctx = _remote_ctx(ctx, out_dir)
        if data.frame is not None:
            # An in-memory input (library use) goes to the object store once, not once per fragment.
            frame_ref = ray.put(data.frame)
            fragments = [tuple((frame_ref, start, stop) for _, start, stop in pieces) for pieces in fragments]
        bar = ctx.progress(total=data.num_rows)
        try:
            if getattr(type(stage), "uses_model", False):
                results = self._map_on_actors(stage, remote_ctx, fragments, out_dir, bar)
            else:
                results = self._map_on_tasks(stage, remote_ctx, fragments, out_dir, bar)
        finally:
            bar.close()
            remove_leftovers(out_dir)
        for result in results:
            if result is not None and result[0] == "error":
                raise _unpack_error(result[1])
        _unify_part_schemas(out_dir)
        for _, _rows, ops in results:
            replay_stats(ctx.stats, ops)

    def _map_on_tasks(self, stage: Stage, ctx: Context, fragments: list, out_dir: Path, bar) -> list:
        # SPREAD: fragments go round the nodes rather than filling the driver's node first, so every
        # node reads its share of the input from the shared filesystem.
        task = ray.remote(_run_fragment).options(scheduling_strategy="SPREAD", **self._task_options(stage))
        stage_ref, ctx_ref = ray.put(stage), ray.put(ctx)
        results: list = [None] * len(fragments)

        def submit(i: int):
            return task.remote(stage_ref, ctx_ref, fragments[i], i, str(out_dir), self._cwd)

        def finished(i: int, result: tuple) -> bool:
            results[i] = result
            bar.update(fragment_size(fragments[i]))
            return result[0] != "error"  # a fragment failed: submit no more (its error is raised below)

        run_bounded(submit, len(fragments), IN_FLIGHT_PER_CPU * self.cluster_cpus(), finished)
        return results

    def _map_on_actors(self, stage: Stage, ctx: Context, fragments: list, out_dir: Path, bar) -> list:
        options = self._task_options(stage)
        options.pop("max_retries")
        per_actor_cpus = options.get("num_cpus", 1) or 1
        resources = ray.cluster_resources()
        if "num_gpus" not in options and resources.get("GPU", 0) >= 1:
            options["num_gpus"] = 1
        if options.get("num_gpus"):
            size = max(1, int(resources.get("GPU", 0) // options["num_gpus"]))
        else:
            size = max(1, int(resources.get("CPU", 1) // per_actor_cpus))
        # No more actors than the cluster holds: an actor that cannot start would keep the fragment
        # given to it waiting forever (actors=3 on two CPUs hung the step).
        size = min(size, self.actors or size, len(fragments))
        actors = self._actors(options, size)
        stage_ref, ctx_ref, step = ray.put(stage), ray.put(ctx), str(out_dir)
        results: list = [None] * len(fragments)

        def submit(actor, i: int):
            return actor.run.remote(step, stage_ref, ctx_ref, fragments[i], i, str(out_dir), self._cwd)

        try:
            # Each actor takes the next fragment as soon as it is free (simple work stealing).
            queue = list(range(len(fragments)))
            running: dict = {}
            for actor in actors:
                if queue:
                    i = queue.pop(0)
                    running[submit(actor, i)] = (i, actor)
            while running:
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    i, actor = running.pop(ref)
                    results[i] = _get(ref)
                    bar.update(fragment_size(fragments[i]))
                    if queue:
                        j = queue.pop(0)
                        running[submit(actor, j)] = (j, actor)
        except BaseException:
            self._release_actors()
            raise
        return results

    def _actors(self, options: dict[str, Any], size: int) -> list:
        """`size` model actors with these resources: the last model step's, when they match, plus new ones.

        Kept from one model step to the next (released before any other step and on close), so a
        pipeline that embeds twice starts its actors and loads its model once per actor, not per step.
        """
        key = tuple(sorted(options.items()))
        if self._actor_pool is not None and self._actor_pool[0] != key:
            self._release_actors()
        actors = self._actor_pool[1] if self._actor_pool is not None else []
        actor_cls = ray.remote(_FragmentWorker).options(
            max_restarts=self.max_retries, max_task_retries=self.max_retries, scheduling_strategy="SPREAD", **options
        )
        actors += [actor_cls.remote() for _ in range(size - len(actors))]
        self._actor_pool = (key, actors)
        return actors[:size]

    def _release_actors(self) -> None:
        pool, self._actor_pool = self._actor_pool, None
        for actor in pool[1] if pool is not None else []:
            with contextlib.suppress(Exception):
                ray.kill(actor)


def _check_fits_a_node(stage: str, options: dict[str, Any]) -> None:
    """Refuse a task no node can run: Ray would keep it pending forever (an "infeasible" warning in its log)."""
    wanted = {"CPU": options.get("num_cpus", 1), "GPU": options.get("num_gpus", 0), "memory": options.get("memory", 0)}
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(all(node.get(key, 0) >= need for key, need in wanted.items() if need) for node in nodes):
        return
    asked = ", ".join(f"{key} {need:g}" for key, need in wanted.items() if need)
    largest = max(nodes, key=lambda node: node.get("CPU", 0), default={})
    has = ", ".join(f"{key} {largest.get(key, 0):g}" for key, need in wanted.items() if need)
    raise PipelineError(f"stage {stage} asks each task for {asked} (its `resources`), and no node of the cluster "
                        f"has that (the largest: {has})",
                        hint="add a node that has it, or lower the stage's resources")


def _remote_ctx(ctx: Context, out_dir: Path) -> Context:
    absolute = {"out_dir": out_dir}
    for name in ("cache_dir", "checkpoint_dir", "side_root"):
        value = getattr(ctx, name)
        absolute[name] = Path(value).resolve() if value is not None else None
    return replace(ctx, stats={}, side_outputs=[], quiet=True, **absolute)


def _absolute(ds: Dataset) -> Dataset:
    if ds.files is None:
        return ds
    out = Dataset(files=[Path(f).resolve() for f in ds.files], label=ds.label)
    out._schema, out._num_rows = ds._schema, ds._num_rows
    return out


