"""Runs a pipeline: caching by fingerprint, atomic step outputs, a lock per run folder, manifests.

Layout of a run folder (`<workdir>/<pipeline>/`):
    <step>/part-*.parquet      the step's table (zstd)
    <step>/<side>/part-*.parquet  side tables, readable as input `step:side`
    <step>/<artefact>          non-table outputs (an index, a report)
    <step>/_manifest.json      what produced it, and a fingerprint of what it holds
    _run.json                  the last run: which steps ran or were cached, timings
    .staging/ .trash/ .checkpoints/ .lock   engine bookkeeping

A step is built in `.staging/` and renamed into place only when complete, so readers see the old
output or the new one, never a mix. Killing a run at any moment and re-running it converges on the
same result, because finished steps are recognised by fingerprint and unfinished ones start over
(or resume from their checkpoint directory).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import platform
import shutil
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from pipeline.config import (
    PipelineConfig,
    StepConfig,
    build_stage,
    load_config,
    order_steps,
    parse_config,
    upstream,
)
from pipeline.errors import InputDataError, LockedError, ParamError, PipelineError
from pipeline.executors import get_executor
from pipeline.io import Dataset, describe_table, fsync_tree
from pipeline.stage import Context, Stage, check_inputs
from pipeline.verify import DEFAULT_MODE, check_mode, describe_artefacts, verify_step, written_mtimes

MANIFEST = "_manifest.json"
RUN_RECORD = "_run.json"
FORMAT_VERSION = 1
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
    status: str  # ran | cached | skipped
    rows: int | None = None
    wall_time_s: float | None = None
    peak_rss_bytes: int | None = None
    fingerprint: str | None = None
    path: str | None = None
    # Why a step whose fingerprint matched was recomputed anyway (its files differ from the manifest).
    recomputed_because: str | None = None


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
    for pkg in ("corpusforge", "polars", "pyarrow", "numpy", "faiss-cpu", "sentence-transformers", "torch", "ray"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_manifest(step_dir: Path) -> dict | None:
    try:
        manifest = json.loads((step_dir / MANIFEST).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


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


class RunDir:
    """The run folder of one pipeline: lock, crash recovery, atomic publication of steps."""

    def __init__(self, workdir: Path, pipeline: str):
        self.workdir = workdir
        self.path = workdir / pipeline
        self.staging = self.path / ".staging"
        self.trash = self.path / ".trash"
        self.checkpoints = self.path / ".checkpoints"
        self._lock_fh = None

    def refuse_link(self, path: Path) -> None:
        """Refuse to go through a symbolic link inside the run folder: the engine made none.

        A link planted as `.trash`, `.staging`, `.checkpoints` or a step folder would make the
        engine move, overwrite or delete whatever it points at, outside the run folder.
        """
        if os.path.islink(path):
            raise PipelineError(
                f"'{path.name}' in the run folder is a symbolic link (to '{os.readlink(path)}'); "
                "the engine never follows links it did not create, so nothing was changed",
                file=str(path), hint="remove the link, or use another --workdir",
            )

    def lock(self, wait_s: float = 0.0) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.refuse_link(self.workdir / ".cache")
        fh = self._open_lock_file()
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    fh.seek(0)
                    holder = fh.read().strip() or "unknown"
                    fh.close()
                    raise LockedError(
                        f"another run of this pipeline holds the lock (pid {holder}); nothing was changed",
                        file=str(self.path / ".lock"),
                        hint="wait for it to finish, pass --wait SECONDS, or use another --workdir",
                    ) from None
                time.sleep(0.2)
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh
        try:
            for bookkeeping in (self.trash, self.staging, self.checkpoints):
                self.refuse_link(bookkeeping)
            self.recover()
        except BaseException:
            self.unlock()
            raise

    def _open_lock_file(self):
        """Open `.lock` without following a link (O_NOFOLLOW) and only if it is a regular file."""
        lock_path = self.path / ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self.refuse_link(lock_path)
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise PipelineError("'.lock' in the run folder is not a regular file; nothing was changed",
                                file=str(lock_path), hint="remove it, or use another --workdir")
        return os.fdopen(fd, "r+")

    def unlock(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def recover(self) -> None:
        """Undo what a killed run left: restore a step caught mid-swap, drop half-built steps."""
        if self.trash.is_dir():
            for old in self.trash.iterdir():
                if old.is_symlink():
                    # Only the engine's own folders go into .trash; never move a link into place.
                    old.unlink()
                    continue
                step = old.name.rsplit("@", 1)[0]
                if not os.path.lexists(self.path / step):
                    os.rename(old, self.path / step)
                else:
                    shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self.staging, ignore_errors=True)

    def drop_checkpoints(self, step_id: str) -> None:
        """A finished step's checkpoints, and those of earlier params that will never resume, go;
        `.checkpoints/` itself goes when nothing else is in it, so a finished run leaves nothing there."""
        self.refuse_link(self.checkpoints)
        for stale in self.checkpoints.glob(f"{step_id}@*"):
            if stale.is_symlink():
                stale.unlink()
            else:
                shutil.rmtree(stale, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.checkpoints.rmdir()  # fails, as it should, while another step's checkpoint is there

    def new_staging(self, step_id: str) -> Path:
        d = self.staging / f"{step_id}@{uuid.uuid4().hex[:12]}"
        d.mkdir(parents=True)
        return d

    def publish(self, staged: Path, step_id: str) -> Path:
        """Swap a finished step into place; the old output is kept until the new one is there."""
        fsync_tree(staged)
        target = self.path / step_id
        self.refuse_link(target)
        old = None
        if target.exists():
            self.trash.mkdir(exist_ok=True)
            old = self.trash / f"{step_id}@{uuid.uuid4().hex[:12]}"
            os.rename(target, old)
        os.rename(staged, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.trash.rmdir()  # only when empty
        return target


def _outputs_intact(step_dir: Path, manifest: dict, verify: str = DEFAULT_MODE) -> bool:
    """Whether a finished step's files still match its manifest (see pipeline/verify.py)."""
    return verify_step(step_dir, manifest, verify) is None


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
                ds = Dataset.from_parquet(ref.path)
                described[input_name] = {"path": ref.path, "fingerprint": ds.stat_fingerprint()}
            else:
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
                if ref.side:
                    info = manifest.get("side_outputs", {}).get(ref.side)
                    if info is None:
                        raise InputDataError(
                            f"input '{input_name}': step '{ref.step}' has no side output '{ref.side}'; "
                            f"it has: {sorted(manifest.get('side_outputs', {})) or 'none'}"
                        )
                    ds = Dataset.from_parquet(step_dir / ref.side)
                    fp = info["fingerprint"]
                else:
                    ds = Dataset.from_parquet(step_dir)
                    fp = manifest["output"]["fingerprint"]
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
    if isinstance(config, (str, Path)):
        config = load_config(config, overrides)
    elif isinstance(config, dict):
        config = parse_config(config, overrides=overrides)
    elif not isinstance(config, PipelineConfig):
        raise ParamError("config", f"expects a YAML path, a dict or a PipelineConfig, got {type(config).__name__}")
    elif overrides:
        raise PipelineError("pass overrides with a config path or dict, not a parsed config")
    ordered = order_steps(config)
    selected = select_steps(config, only, until)

    workdir = Path(workdir)
    run = RunDir(workdir, config.name)
    # Connect first: an executor that cannot start (a wrong Ray address) must not leave the lock held.
    exe = get_executor(executor, **(executor_options or {}))
    try:
        run.lock(wait_for_lock_s)
    except BaseException:
        exe.close()
        raise
    report = RunReport(config.name, run.path)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    try:
        total = len(selected)
        n = 0
        verified: set[str] = set()
        for step in ordered:
            if step.id not in selected:
                report.steps.append(StepReport(step.id, step.stage, "skipped"))
                continue
            n += 1
            stage = build_stage(step, config)
            inputs, described = _resolve_inputs(step, run, config, verified, verify)
            fp = step_fingerprint(stage, described, config.seed)
            step_dir = run.path / step.id
            run.refuse_link(step_dir)
            manifest = read_manifest(step_dir)
            damaged = None
            if not force and manifest and manifest.get("fingerprint") == fp:
                damaged = verify_step(step_dir, manifest, verify)
                if damaged is None:
                    verified.add(step.id)
                    rows = manifest["output"]["rows"]
                    _say(quiet, f"[{n}/{total}] {step.id} ({step.stage}): cached, unchanged ({rows:,} rows)")
                    report.steps.append(
                        StepReport(step.id, step.stage, "cached", rows, manifest.get("wall_time_s"),
                                   manifest.get("peak_rss_bytes"), fp, str(step_dir))
                    )
                    continue
            why = f" (its files differ from the manifest: {damaged})" if damaged else ""
            _say(quiet, f"[{n}/{total}] {step.id} ({step.stage}): running{why}")
            manifest = _run_step(step, stage, inputs, described, fp, config, run, exe, quiet)
            verified.add(step.id)
            report.steps.append(
                StepReport(step.id, step.stage, "ran", manifest["output"]["rows"], manifest["wall_time_s"],
                           manifest["peak_rss_bytes"], fp, str(step_dir), recomputed_because=damaged)
            )
            _say(
                quiet,
                f"      {manifest['output']['rows']:,} rows in {manifest['wall_time_s']:.2f}s, "
                f"peak memory {manifest['peak_rss_bytes'] / 2**20:,.0f} MiB",
            )
    finally:
        exe.close()
        record = {
            "format": FORMAT_VERSION,
            "pipeline": config.name,
            "config": config.source,
            "executor": executor,
            "started_at": started,
            "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "steps": [s.__dict__ for s in report.steps],
        }
        with contextlib.suppress(OSError):
            _write_json_atomic(run.path / RUN_RECORD, record)
        run.unlock()
    ran, cached = len(report.ran), len(report.cached)
    _say(quiet, f"done: {ran} ran, {cached} cached (unchanged) -> {run.path}")
    return report


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
        out_dir=staged,
        quiet=quiet,
        executor=exe.name,
        cache_dir=run.workdir / ".cache",
        checkpoint_dir=checkpoint,
    )
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    try:
        with _PeakMemory() as mem:
            exe.run_step(stage, ctx, inputs, staged)
    except PipelineError as exc:
        shutil.rmtree(staged, ignore_errors=True)
        raise exc.add_context(step=step.id, stage=step.stage) from None
    except KeyboardInterrupt:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(staged, ignore_errors=True)
        raise StepFailed(step.id, step.stage, exc) from exc
    wall = time.perf_counter() - t0
    output = describe_table(staged)
    sides = {name: describe_table(staged / name).to_dict() for name in ctx.side_outputs}
    # Everything else the stage left beside its Parquet (an index, a report) is an artefact.
    artefacts = describe_artefacts(staged)
    manifest = {
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
        "output": output.to_dict(),
        "side_outputs": sides,
        "artefacts": artefacts,
        "stats": ctx.stats,
        "executor": exe.name,
        "config": config.source,
        "versions": library_versions(),
        "platform": f"{platform.system()} {platform.machine()}",
        "command_line": COMMAND_LINE,
        "started_at": started,
        "wall_time_s": round(wall, 4),
        "peak_rss_bytes": mem.peak,
    }
    manifest["mtimes"] = written_mtimes(staged, manifest)
    _write_json_atomic(staged / MANIFEST, manifest)
    run.publish(staged, step.id)
    run.drop_checkpoints(step.id)
    return manifest
