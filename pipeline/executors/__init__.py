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

    def run_step(self, stage: Stage, ctx: Context, inputs: dict[str, Dataset], out_dir: Path) -> None:
        write_table(stage.run(ctx, **inputs), out_dir)

    def close(self) -> None:
        pass


def get_executor(name: str, **options: Any) -> Executor:
    if name == "local":
        if options:
            raise PipelineError(f"the local executor takes no options, got {sorted(options)}")
        return LocalExecutor()
    if name == "ray":
        try:
            from pipeline.executors.ray import RayExecutor
        except ImportError as exc:
            raise PipelineError(
                f"the Ray executor needs Ray ({exc})", hint="pip install 'corpusforge[ray]'"
            ) from None
        return RayExecutor(**options)
    raise PipelineError(f"unknown executor '{name}'; choose 'local' or 'ray'")
