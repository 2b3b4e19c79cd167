"""Build a pipeline in Python: Stage objects and in-memory frames in, the YAML run's cache and manifests out.

    from pipeline.builder import PipelineBuilder
    from stages.noise import LabelNoise
    from stages.transforms import LengthFilter

    p = PipelineBuilder("study", seed=0)
    docs = p.add("docs", PythonDocs(granularity="paragraph"))
    p.add("prose", LengthFilter(min_words=40), docs)
    labels = p.add_frame("labels", train_df)                  # polars, Arrow, pandas, datasets
    p.add("noisy", LabelNoise(mode="flip", rate=0.2), labels)
    report = p.run(workdir="data/runs")                       # same as `pipeline run` of that YAML

A builder is a config written in code: `to_config()` is the dict `pipeline run` would read, each
Stage object becoming its name and params, so runs are cached, resumed and recorded exactly like
YAML runs. An in-memory frame is written once, by content, under the run folder
(`_inputs/<digest>/`) and enters through a pass-through `select` step, so it is fingerprinted by
content: the same frame is a cache hit, a changed one re-runs what depends on it, and everything
downstream has the fingerprints the YAML run over the same data would have.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import xxhash

from pipeline.config import run_name_problem
from pipeline.errors import ParamError, PipelineError
from pipeline.params import check_seed
from pipeline.registry import STAGES
from pipeline.stage import Stage, library_input
from pipeline.writing import write_table

FRAME_FOLDER = "_inputs"


@dataclass(frozen=True)
class StepHandle:
    """A step added to a builder; pass it as another step's input (or `.side("train")`)."""

    id: str

    def side(self, name: str) -> str:
        return f"{self.id}:{name}"

    def __str__(self) -> str:
        return self.id


class _HashingSink:
    """A write-only file that hashes what it is given (so hashing a table never copies it whole)."""

    def __init__(self) -> None:
        self.hash = xxhash.xxh3_128()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def frame_digest(table: pa.Table, batch_rows: int = 65_536) -> str:
    """Content identity of a table: xxh3-128 of its Arrow IPC stream in fixed-size batches.

    Fixed batches, each copied into fresh buffers (`take`), make the digest independent of how the
    table happens to be chunked or sliced in memory.
    """
    sink = _HashingSink()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), table.schema) as writer:
        for offset in range(0, table.num_rows, batch_rows):
            piece = table.slice(offset, batch_rows)
            writer.write_table(piece.take(pa.array(range(piece.num_rows), pa.int64())))
    return sink.hash.hexdigest()


def _is_frame(obj: Any) -> bool:
    return not isinstance(obj, (str, Path, StepHandle))  # None too: refused as no table, not read as step 'None'


class PipelineBuilder:
    """A pipeline assembled from Stage objects and in-memory frames; see the module docstring."""

    def __init__(self, name: str, seed: int = 0):
        # Checked now, not when the config is parsed: `run` writes the frames under `<workdir>/<name>` first, so a
        # name such as '../x' would put them outside the workdir before the config refused it.
        problem = run_name_problem(name)
        if problem:
            raise ParamError("name", problem)
        self.name = name
        self.seed = check_seed(seed)
        self._steps: list[dict[str, Any]] = []
        self._frames: dict[str, pa.Table] = {}

    def add(self, step_id: str, stage: Stage, *inputs: Any, **named_inputs: Any) -> StepHandle:
        """Add a step; inputs are StepHandles, step ids ('step' / 'step:side'), Parquet paths or frames."""
        if not isinstance(stage, Stage):
            raise TypeError(f"step '{step_id}': expected a Stage object, got {type(stage).__name__}")
        if STAGES.get(stage.name) is not type(stage):
            raise PipelineError(f"stage class {type(stage).__qualname__} is not registered under its name "
                                f"'{stage.name}'", step=step_id, hint="give the class a unique `name`")
        if len(inputs) > len(stage.inputs):
            raise PipelineError(f"takes {len(stage.inputs)} input(s) {stage.inputs}, got {len(inputs)}", step=step_id)
        unknown = [n for n in named_inputs if n not in stage.inputs]
        if unknown:
            raise PipelineError(f"unknown input '{unknown[0]}'; '{stage.name}' takes inputs: "
                                f"{', '.join(stage.inputs) or 'none'}", step=step_id)
        twice = [n for n in named_inputs if n in stage.inputs[:len(inputs)]]
        if twice:
            raise PipelineError(f"input '{twice[0]}' is given twice, positionally and by name", step=step_id)
        self._refuse_taken(step_id)
        given = dict(zip(stage.inputs, inputs)) | named_inputs
        # None for an input a config may leave out is leaving it out (it became the step reference 'None').
        given = {k: v for k, v in given.items() if v is not None or k not in stage.optional_inputs}
        refs: dict[str, str] = {}
        added = len(self._steps)
        try:
            for input_name, value in given.items():
                if _is_frame(value):
                    value = self.add_frame(f"{step_id}.{input_name}", value)
                refs[input_name] = str(value)
        except PipelineError:  # a refused frame leaves no step of this call behind (the frames before it)
            for step in self._steps[added:]:
                self._frames.pop(step["id"], None)
            del self._steps[added:]
            raise
        step: dict[str, Any] = {"id": step_id, "stage": stage.name, "params": stage.get_params()}
        if refs:
            step["inputs"] = refs
        self._steps.append(step)
        return StepHandle(step_id)

    def add_frame(self, step_id: str, frame: Any) -> StepHandle:
        """An in-memory table (polars, Arrow, pandas, datasets) as a step other steps can read."""
        self._refuse_taken(step_id)
        collected = library_input(frame, "the frame", step=step_id).collect()
        objects = [name for name, dtype in collected.schema.items() if dtype == pl.Object]
        if objects:  # polars hands them to Arrow as 8-byte pointers: memory addresses written as the data
            raise PipelineError(f"the frame's column '{objects[0]}' holds Python objects, which a run cannot write; "
                                "convert it to strings, numbers or lists first", step=step_id)
        table = collected.to_arrow()
        self._frames[step_id] = table
        self._steps.append({"id": step_id, "stage": "select", "params": {}, "inputs": {"data": step_id}})
        return StepHandle(step_id)

    def _refuse_taken(self, step_id: str) -> None:
        """A step id used twice is refused where it is added (the config's refusal would name a frame's step)."""
        if any(step["id"] == step_id for step in self._steps):
            raise PipelineError(f"step id '{step_id}' is already taken; give each step its own id", step=step_id)

    def _materialise(self, workdir: Path, new_frames_under: Path | None = None) -> dict[str, str]:
        """Write each frame once under the run folder, named by content; return step id -> folder.

        `new_frames_under`: a frame not yet under the run folder is written there instead (a plan writes nothing
        into the run folder)."""
        folders = {}
        for step_id, table in self._frames.items():
            target = workdir / self.name / FRAME_FOLDER / frame_digest(table)
            if new_frames_under is not None and not target.is_dir():
                target = new_frames_under / target.name
            if not target.is_dir():
                staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
                staging.mkdir(parents=True)
                write_table(table, staging)
                try:
                    os.rename(staging, target)
                except OSError:  # written meanwhile by another run: the same content
                    shutil.rmtree(staging, ignore_errors=True)
            folders[step_id] = str(target)
        return folders

    def to_config(self, workdir: str | Path = "data/runs", new_frames_under: Path | None = None) -> dict[str, Any]:
        """The config dict `pipeline run` would read (frames written under the run folder first)."""
        folders = self._materialise(Path(workdir), new_frames_under)
        steps = []
        for step in self._steps:
            if step["id"] in folders:
                step = {**step, "inputs": {"data": folders[step["id"]]}}
            steps.append(step)
        return {"name": self.name, "seed": self.seed, "steps": steps}

    def run(self, workdir: str | Path = "data/runs", **options: Any):
        """Run like `pipeline run` (options: force, only, until, executor, executor_options, quiet...)."""
        from pipeline.runner import run_pipeline

        return run_pipeline(self.to_config(workdir), workdir=workdir, **options)

    def plan(self, workdir: str | Path = "data/runs", **options: Any):
        """What `run` would do (force, only, until): the `--dry-run` plan. It writes nothing into the run folder: a
        frame not written there yet is planned from a temporary copy (its step runs, as the run's would)."""
        from pipeline.plan import plan_run

        with tempfile.TemporaryDirectory(prefix="corpusforge-plan-") as scratch:
            return plan_run(self.to_config(workdir, new_frames_under=Path(scratch)), workdir=workdir, **options)
