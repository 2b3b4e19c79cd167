"""Executors decide where a step's work runs; the runner decides what runs and records it.

An executor has one job: `run_step(stage, ctx, inputs, out_dir)` writes the step's main table as
Parquet parts into `out_dir` (side outputs and artefacts go through `ctx`). Caching, manifests,
atomic publication and locking stay in the runner, so every executor gets them for free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pipeline.errors import PipelineError
from pipeline.io import Dataset, write_table
from pipeline.stage import Context, Stage


class Executor(Protocol):
    name: str

    def run_step(self, stage: Stage, ctx: Context, inputs: dict[str, Dataset], out_dir: Path) -> None: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs every step in this process, streaming batches straight to Parquet."""

    name = "local"

    def __init__(self, partition_bytes: int | None = None):
        if partition_bytes is not None and partition_bytes < 1:
            raise PipelineError(f"partition_bytes must be at least 1, got {partition_bytes}")
        self.partition_bytes = partition_bytes

    def run_step(self, stage: Stage, ctx: Context, inputs: dict[str, Dataset], out_dir: Path) -> None:
        from pipeline.partitioned import PartitionedStage, run_partitioned_step

        if isinstance(stage, PartitionedStage):
            # Partitions are cut the same way on every executor, so the merged state is the same.
            run_partitioned_step(stage, ctx, inputs, out_dir, self.partition_bytes)
            return
        write_table(stage.run(ctx, **inputs), out_dir)

    def close(self) -> None:
        pass


def get_executor(name: str, **options: Any) -> Executor:
    if name == "local":
        unknown = sorted(set(options) - {"partition_bytes"})
        if unknown:
            raise PipelineError(f"the local executor takes only the option partition_bytes, got {unknown}")
        return LocalExecutor(**options)
    if name == "ray":
        try:
            from pipeline.executors.ray import RayExecutor
        except ImportError as exc:
            raise PipelineError(
                f"the Ray executor needs Ray ({exc})", hint="pip install 'corpusforge[ray]'"
            ) from None
        return RayExecutor(**options)
    raise PipelineError(f"unknown executor '{name}'; choose 'local' or 'ray'")
