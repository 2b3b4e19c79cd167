"""Executors decide where a step's work runs; the runner decides what runs and records it.

An executor has one job: `run_step(stage, ctx, inputs, out_dir)` writes the step's main table as
Parquet parts into `out_dir` (side outputs and artefacts go through `ctx`). Caching, manifests,
atomic publication and locking stay in the runner, so every executor gets them for free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pipeline.errors import PipelineError
from pipeline.fragments import is_rowwise_step, run_fragments_locally
from pipeline.io import Dataset
from pipeline.stage import Context, Stage
from pipeline.writing import write_table


class Executor(Protocol):
    name: str

    def run_step(self, stage: Stage, ctx: Context, inputs: dict[str, Dataset], out_dir: Path) -> None: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs every step in this process, streaming batches straight to Parquet.

    `partition_bytes` and `fragment_rows` cut partitioned and row-wise steps as the Ray executor's
    options of the same names do (None: from the input alone), so both write the same files.
    """

    name = "local"

    def __init__(self, partition_bytes: int | None = None, fragment_rows: int | None = None):
        check_count_option("partition_bytes", partition_bytes)
        check_count_option("fragment_rows", fragment_rows)
        self.partition_bytes = partition_bytes
        self.fragment_rows = fragment_rows

    def run_step(self, stage: Stage, ctx: Context, inputs: dict[str, Dataset], out_dir: Path) -> None:
        from pipeline.partition_fold import run_partitioned_step
        from pipeline.partitioned import PartitionedStage

        if isinstance(stage, PartitionedStage):
            # Partitions are cut the same way on every executor, so the merged state is the same.
            run_partitioned_step(stage, ctx, inputs, out_dir, self.partition_bytes)
        elif is_rowwise_step(stage, inputs):
            (data,) = inputs.values()
            run_fragments_locally(stage, ctx, data, out_dir, self.fragment_rows)
        else:
            write_table(stage.run(ctx, **inputs), out_dir)

    def close(self) -> None:
        pass


def check_count_option(name: str, value: Any) -> None:
    """A size option of an executor: None (its default) or a whole number of at least 1. Options come from
    `--executor-option KEY=VALUE` parsed as YAML, so 'x', 1.5 and true arrive here as they are."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise PipelineError(f"{name} must be a whole number of at least 1, got {value!r}")
    if value < 1:
        raise PipelineError(f"{name} must be at least 1, got {value}")


RAY_OPTIONS = ("address", "connect_timeout_s", "max_retries", "fragment_rows", "actors", "runtime_env",
               "partition_bytes")


def check_ray_options(options: dict[str, Any]) -> None:
    """The Ray executor's options, checked before Ray is imported or a cluster is reached, so a typo or a
    value of the wrong type is one line naming the option (Ray's own checks end in a TypeError or hang)."""
    unknown = sorted(set(options) - set(RAY_OPTIONS))
    if unknown:
        raise PipelineError(f"the Ray executor takes only the options {', '.join(RAY_OPTIONS)}, got {unknown}")
    for name in ("partition_bytes", "fragment_rows", "actors"):
        check_count_option(name, options.get(name))
    address = options.get("address")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise PipelineError(f"address must be a Ray head's HOST:PORT, 'auto' or 'local', got {address!r}",
                            hint="leave it out to use $RAY_ADDRESS or start Ray in this process")
    retries = options.get("max_retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < -1):
        raise PipelineError(f"max_retries must be a whole number of at least 0 (-1: retry without end), "
                            f"got {retries!r}")
    timeout = options.get("connect_timeout_s")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not 0 < timeout < float("inf")):
        raise PipelineError(f"connect_timeout_s must be a number of seconds above 0, got {timeout!r}")
    runtime_env = options.get("runtime_env")
    if runtime_env is not None and not isinstance(runtime_env, dict):
        raise PipelineError(f"runtime_env must be a mapping (e.g. {{env_vars: {{KEY: VALUE}}}}), got {runtime_env!r}")


def get_executor(name: str, **options: Any) -> Executor:
    if name == "local":
        unknown = sorted(set(options) - {"partition_bytes", "fragment_rows"})
        if unknown:
            raise PipelineError(f"the local executor takes only the options partition_bytes and fragment_rows, "
                                f"got {unknown}")
        return LocalExecutor(**options)
    if name == "ray":
        check_ray_options(options)
        try:
            from pipeline.executors.ray import RayExecutor
        except ImportError as exc:
            raise PipelineError(
                f"the Ray executor needs Ray ({exc})", hint="pip install 'corpusforge[ray]'"
            ) from None
        return RayExecutor(**options)
    raise PipelineError(f"unknown executor '{name}'; choose 'local' or 'ray'")
