"""The stage contract.

A stage is a small class whose constructor arguments are exactly its YAML params (the
scikit-learn convention): `Stage(**params)` is the whole configuration, `get_params()` gives it
back, and so a step round-trips between a config file and library code. Subclasses declare:

- `name`: the registry key used in YAML (setting it registers the class);
- `inputs`: the named inputs it reads (`()` for sources, `("data",)` by default, `("train", "test")`...);
- `required_columns()`: the columns it needs from each input, so the engine fails before running;
- `side_output_names()`: the side outputs its params let it write, so a `step:side` reference to
  any other is refused before running (none by default);
- `run(ctx, **inputs)`: the work. Each input is a `pipeline.io.Dataset`; the result is a polars
  DataFrame or LazyFrame, an Arrow table, or an iterable of batches (streamed to Parquet).

The engine knows nothing about any particular stage; it only calls this contract.
"""

from __future__ import annotations

import inspect
import re
import shutil
import tempfile
import typing
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.columns import polars_schema
from pipeline.errors import InputDataError, ParamError, PipelineError, first_line, in_memory_input
from pipeline.io import DEFAULT_BATCH_ROWS, Dataset
from pipeline.params import ParamSpec, annotation_description, check_seed, checked_init, docstring_param_docs
from pipeline.progress import Progress
from pipeline.registry import register
from pipeline.results import StageResult
from pipeline.writing import write_table

# Parameters that name a key column (rows are grouped or stratified by its values).
KEY_PARAMS = ("group_by", "strata", "subset_column")


def default_cache_dir() -> Path:
    import os

    return Path(os.environ.get("CORPUSFORGE_CACHE", Path.home() / ".cache" / "corpusforge"))


@dataclass
class Context:
    """What a running stage may use from the engine: seed, progress, side outputs, artefacts, stats."""

    step_id: str
    seed: int
    out_dir: Path
    quiet: bool = True
    stats: dict = field(default_factory=dict)
    side_outputs: list[str] = field(default_factory=list)
    executor: str = "local"
    # Persistent across runs and pipelines (content-addressed caches such as embeddings live here).
    cache_dir: Path = field(default_factory=lambda: default_cache_dir())
    # Persistent until this step (with these exact params and inputs) completes: lets a long stage
    # resume from its last finished unit of work after a kill. Removed by the engine on success.
    checkpoint_dir: Path | None = None
    # The progress of the batch loop now running (RowwiseStage.run sets it), for finer updates.
    current_progress: Progress | None = None
    # Where side outputs are written, one folder per name; the runner keeps them apart from the
    # step's own table (published as `<step>@<name>/`). None = beside the table, in `out_dir`.
    side_root: Path | None = None
    # Set by the partitioned executors while a partitioned stage's `broadcast` or `finish` runs (`pipeline.
    # row_pass.gather_rows`): `gather_rows(fn, rows, extra)` runs `fn(partition, local_rows, extra)` where the
    # partitions holding `rows` are (Ray: tasks on the workers) and returns the results in input order.
    gather_rows: Any = field(default=None, repr=False, compare=False)
    # Set by the Ray executor only, while `finish` runs (`pipeline.executors.ray_join`): `join_rows(rows_fn,
    # pairs, pair_fn, extra)` computes `pair_fn` of row pairs on the workers, where both rows' values (made by
    # `rows_fn` where their partitions are) meet; the driver sends row numbers and gets one value per pair.
    # None elsewhere: one process holds the rows' values anyway, and a stage keeps its own way to hold them.
    join_rows: Any = field(default=None, repr=False, compare=False)

    def rng(self, *salt: Any) -> np.random.Generator:
        """A numpy generator seeded by the pipeline seed (and optional salt), never by the clock."""
        key = [self.seed & 0xFFFFFFFF, self.seed >> 32 & 0xFFFFFFFF]
        for s in salt:
            key.extend(s.encode() if isinstance(s, str) else [int(s) & 0xFFFFFFFF])
        return np.random.default_rng(np.random.SeedSequence(key))

    def artefact_path(self, name: str) -> Path:
        """Where to write a non-table artefact (an index, a report); it lands beside the step's Parquet."""
        if "/" in name or name.startswith(("part-", "_", ".")):
            raise ValueError(f"artefact name {name!r} is reserved or not a plain file name")
        return self.out_dir / name

    def write_side_output(self, name: str, result: Any) -> None:
        """Write a second table (e.g. `matches`, `transitions`); other steps read it as `step:name`."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
            raise ValueError(f"side output name {name!r} must be letters, digits, '_' or '-'")
        target = (self.side_root or self.out_dir) / name
        try:
            target.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise InputDataError(f"side output '{name}' would be written to '{target}', which already exists; pass "
                                 "an empty workdir, or remove it", step=self.step_id) from None
        write_table(result, target)
        self.side_outputs.append(name)

    def record(self, key: str, value: Any) -> None:
        """Keep a figure in the step's manifest (`stats`), e.g. requested vs realised noise."""
        self.stats[key] = value

    def lead_with(self, figures: dict[str, Any]) -> None:
        """Record `figures` ahead of those recorded so far: what a step found, known only at its end, heads the
        run's summary (which shows a step's first few figures) before how it got there."""
        rest = {k: v for k, v in self.stats.items() if k not in figures}
        self.stats.clear()  # in place: whoever holds the dict (an executor, a test) sees the new order
        self.stats.update(figures)
        self.stats.update(rest)

    def warn(self, note: str, **figures: Any) -> None:
        """Lead the stats with a warning naming this step (after any earlier one of this step, '; ' between), and
        `figures` beside it: what a reader of the run's summary must see before the step's other figures."""
        earlier = self.stats.get("warning")
        self.lead_with({**figures, "warning": f"{earlier}; {note}" if earlier else f"step '{self.step_id}': {note}"})

    def progress(self, total: int | None = None, unit: str = "rows") -> Progress:
        return Progress(self.step_id, total=total, unit=unit, quiet=self.quiet)

    def report_rows(self, n: int) -> None:
        """Rows of the current batch done so far, from inside `process_batch` (e.g. per model batch)."""
        if self.current_progress is not None:
            self.current_progress.update(n)


class Stage:
    """Base class of every stage. See the module docstring for the contract."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ("data",)
    # Named inputs that a config may leave out.
    optional_inputs: ClassVar[tuple[str, ...]] = ()
    # Python modules the stage imports lazily; checked when the stage is built, as datatrove does.
    requires: ClassVar[tuple[str, ...]] = ()
    # Sources and filters may legitimately see or make empty tables; most stages cannot use one.
    allow_empty_input: ClassVar[bool] = False
    # "table" stages see whole inputs; "rowwise" stages are map-only and can be split by any executor.
    kind: ClassVar[str] = "table"
    # Hints for distributed executors: {"num_cpus": 1, "num_gpus": 0, "memory": bytes}.
    resources: ClassVar[dict[str, float]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = checked_init(cls.__dict__["__init__"])
        if cls.__dict__.get("name"):
            register(cls)

    # -- parameters ---------------------------------------------------------------------------

    @classmethod
    def param_specs(cls) -> list[ParamSpec]:
        cached = cls.__dict__.get("_param_specs")
        if cached is not None:
            return cached
        sig = inspect.signature(cls.__init__)
        try:
            hints = typing.get_type_hints(cls.__init__, include_extras=True)
        except Exception:  # noqa: BLE001 - unresolvable hints only lose type checking
            hints = {}
        docs = docstring_param_docs(cls)
        specs = []
        for p in list(sig.parameters.values())[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            annotation = hints.get(p.name, p.annotation)
            specs.append(ParamSpec(p.name, annotation, p.default, annotation_description(annotation) or docs.get(p.name, "")))
        cls._param_specs = specs
        return specs

    def get_params(self) -> dict[str, Any]:
        return {s.name: getattr(self, s.name) for s in self.param_specs()}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Stage:
        """Build from config values, checking names and types; errors name the parameter."""
        specs = {s.name: s for s in cls.param_specs()}
        missing = [n for n, s in specs.items() if s.required and n not in params]
        if missing and not set(params) - set(specs):
            raise ParamError(missing[0], "is required")
        cls.check_requires()
        stage = cls(**params)  # the constructor checks names, types and declared bounds (see check_params)
        stage.validate()
        return stage

    @classmethod
    def check_requires(cls) -> None:
        """Refuse, naming it, a package in `requires` that is not installed (before any work, not deep in `run`).

        Found, not imported: importing faiss cost a library call of the n-gram audit 25 ms (3% of a 31.5 MB audit),
        torch a second or two, for stages that import them only on some paths."""
        import importlib.util

        for mod in cls.requires:
            try:
                found = importlib.util.find_spec(mod) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                raise PipelineError(
                    f"needs the Python package '{mod}', which is not installed", stage=cls.name,
                    hint=f"pip install {mod}",
                ) from None

    def validate(self) -> None:
        """Check parameter values together; raise ParamError naming the parameter. Called at build time."""

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        """{input name: {column: the parameter that names it, or None}}; checked before `run`."""
        return {}

    def required_column_types(self) -> dict[str, dict[str, str]]:
        """{input name: {column: kind}}: needed columns of a kind ("text", "numeric", "scalar", "rank" or "label", see
        `pipeline.columns.COLUMN_KINDS`), checked before `run` and by `pipeline validate`.

        By default a column named by a parameter called `text_column` (or ending in `_text_column`)
        must hold text, and one named by `group_by`, `strata` or `subset_column` must hold one value a
        row (it is a key); override to declare more.
        """
        def kind(param: str | None) -> str | None:
            if param and (param == "text_column" or param.endswith("_text_column")):
                return "text"
            return "scalar" if param in KEY_PARAMS else None

        return {name: {c: k for c, p in cols.items() if (k := kind(p))}
                for name, cols in self.required_columns().items()}

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        """Whole-input checks a streamed stage cannot make batch by batch (e.g. unique ids); raise InputDataError.

        Called once before any executor runs the stage (batches may then go to other workers).
        """

    def output_schema(self, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """The main output's columns (name -> polars dtype or None) given the inputs' schemas; None = not declared.

        `pipeline validate` uses it to check the column flow of a whole DAG before anything runs.
        `pipeline.columns.passthrough` covers the usual shape (input columns, minus some, plus some).
        """
        return None

    def check_input_files(self, inputs: dict[str, Any], paths: dict[str, str]) -> None:
        """`pipeline validate`'s checks of inputs given as paths (`paths`: input name -> path) that need more than
        their schemas (`inputs`), e.g. a built index's metadata beside its Parquet. Nothing by default; raise
        InputDataError (a message starting "input 'x'" names that input's file) or ParamError."""

    def side_output_names(self) -> tuple[str, ...]:
        """Every side output this stage can write with these params (a config reads one as `step:name`).

        `pipeline validate` refuses a reference to any other, so a side output written only under some
        params is declared under exactly those. A name may be a shell pattern (`size_*`) for a family
        whose names the data decides. The shared contract test checks the declaration against a run.
        """
        return ()

    def side_output_schemas(self, inputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Columns of the declared side outputs, given the inputs' schemas (those that can be declared)."""
        return {}

    def fingerprint_extra(self) -> Any:
        """Anything besides params and inputs that decides the output (e.g. source file sizes)."""
        return None

    # -- work ---------------------------------------------------------------------------------

    def run(self, ctx: Context, **inputs: Dataset) -> Any:
        raise NotImplementedError(f"stage '{self.name}' does not implement run()")

    # -- library use --------------------------------------------------------------------------

    def execute(self, *args: Any, seed: int = 0, workdir: str | Path | None = None, **inputs: Any) -> StageResult:
        """Run the stage on in-memory tables or paths, without a config or a run directory.

        Positional arguments fill the declared inputs in order (`stage.apply(df)` for a
        single-input stage); keyword arguments name them (`apply(train=a, test=b)`).
        """
        if len(args) > len(self.inputs):
            raise InputDataError(f"takes {len(self.inputs)} input(s) ({', '.join(self.inputs) or 'none'}), got "
                                 f"{len(args)} positionally", stage=self.name)
        named = dict(zip(self.inputs, args))
        twice = [k for k in inputs if k in named]
        if twice:  # else the keyword would silently replace the table given positionally
            raise InputDataError(f"input '{twice[0]}' is given twice, positionally and by name; pass it once",
                                 stage=self.name)
        named.update(inputs)
        # None for an input a config may leave out is leaving it out (`reference=None`), as the builder takes it.
        named = {k: v for k, v in named.items() if v is not None or k not in self.optional_inputs}
        try:
            seed = check_seed(seed)
            _check_workdir(workdir)
        except ParamError as exc:
            raise exc.add_context(stage=self.name) from None
        self.check_requires()
        self.validate()
        datasets = {k: library_input(v, in_memory_input(k), stage=self.name) for k, v in named.items()}
        check_inputs(self, datasets)
        temporary = workdir is None
        out_dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-")) if temporary else Path(workdir).expanduser()
        out_dir.mkdir(parents=True, exist_ok=True)
        # The caller's workdir may hold their own files: only what this call writes is an artefact (else
        # `keep_artefacts` would move their notes away with the report).
        before = _modified_times(out_dir)
        ctx = Context(step_id=self.name, seed=seed, out_dir=out_dir, checkpoint_dir=out_dir / "_checkpoint")
        try:
            table = _to_frame(self.run(ctx, **datasets))
            sides = {name: pl.read_parquet(out_dir / name / "part-*.parquet") for name in ctx.side_outputs}
        except BaseException:
            if temporary:
                shutil.rmtree(out_dir, ignore_errors=True)
            else:  # the caller's folder as it was (a side output's folder left there refused the next call), but
                _remove_new_entries(out_dir, before, keep=ctx.checkpoint_dir.name)  # the next call resumes from here
            raise
        for name in ctx.side_outputs:
            shutil.rmtree(out_dir / name)
        shutil.rmtree(out_dir / "_checkpoint", ignore_errors=True)
        artefacts = sorted(name for name, mtime in _modified_times(out_dir).items()
                           if before.get(name) != mtime and not name.startswith(("part-", "_", ".")))
        result = StageResult(table=table, side_outputs=sides, artefact_dir=out_dir, stats=ctx.stats, artefacts=artefacts)
        if temporary:
            # Keep no trace on disk (training loops call this often): the folder goes with the result.
            result._cleanup = weakref.finalize(result, shutil.rmtree, str(out_dir), True)
            if not artefacts:
                result.close()
        return result

    def apply(self, *args: Any, seed: int = 0, **inputs: Any) -> pl.DataFrame:
        """Library call: the stage's main output as a polars DataFrame."""
        return self.execute(*args, seed=seed, **inputs).table

    # -- conformance --------------------------------------------------------------------------

    @classmethod
    def example(cls) -> tuple[dict[str, Any], dict[str, pl.DataFrame]] | None:
        """A tiny (params, inputs) case the shared conformance test runs twice and compares."""
        return None

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_params() == other.get_params()  # type: ignore[union-attr]

    __hash__ = object.__hash__


def library_input(value: Any, label: str, **where: str) -> Dataset:
    """`Dataset.from_any` for library calls: a value that is no table (None, a dict, a DatasetDict, a pandas
    column mixing types) is refused in one line naming the input (`label`), not by a raw conversion error."""
    try:
        return Dataset.from_any(value, label=label)
    except PipelineError:
        raise
    except (TypeError, AttributeError, ValueError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
        why = "" if type(exc) is TypeError else f" ({first_line(exc)})"  # a plain TypeError: just not a table
        raise InputDataError(f"{label} ({type(value).__name__}) cannot be read as a table{why}", **where,
                             hint="pass a polars, Arrow or pandas table, a datasets.Dataset, or a Parquet "
                                  "path") from None


def _check_workdir(workdir: Any) -> None:
    if workdir is None:
        return
    if not isinstance(workdir, (str, Path)):
        raise ParamError("workdir", f"expects a folder path (str or Path), got {workdir!r} ({type(workdir).__name__})")
    if Path(workdir).expanduser().exists() and not Path(workdir).expanduser().is_dir():
        raise ParamError("workdir", f"'{workdir}' is a file; pass a folder for the stage's artefacts (created if "
                                    "needed)")


def _modified_times(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def _remove_new_entries(folder: Path, before: dict[str, int], keep: str) -> None:
    """Remove what a failed call created in the caller's folder (side outputs, a half-written report) but `keep` (its
    checkpoints); what was there before is left as it is."""
    for path in folder.iterdir():
        if path.name not in before and path.name != keep:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _to_frame(result: Any) -> pl.DataFrame:
    """A stage's result as one in-memory DataFrame (library calls work on in-memory data)."""
    if isinstance(result, pl.LazyFrame):
        return result.collect()
    if isinstance(result, pl.DataFrame):
        return result
    if isinstance(result, (pa.Table, pa.RecordBatch)):
        return pl.from_arrow(result)
    if result is None or isinstance(result, (dict, str)):  # a stage's own bug: say what `run` must return
        raise TypeError(f"run() returned a {type(result).__name__}; return a polars DataFrame or LazyFrame, an "
                        "Arrow table, or an iterable of batches")
    frames = [b if isinstance(b, pl.DataFrame) else pl.from_arrow(b) for b in result]
    # No rechunk: copying the whole result into one buffer would cost more than the stage itself.
    return pl.concat(frames, how="vertical_relaxed", rechunk=False) if frames else pl.DataFrame()


class RowwiseStage(Stage):
    """A stage whose output for a batch depends on that batch alone (map-only).

    The engine may stream it batch by batch or split it across Ray tasks; anything random must
    therefore be keyed by row content or id, never by batch position.
    """

    kind: ClassVar[str] = "rowwise"
    batch_rows: ClassVar[int] = DEFAULT_BATCH_ROWS
    # True for stages that hold a model: distributed executors load it once per worker (actor pool).
    uses_model: ClassVar[bool] = False

    def process_batch(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        raise NotImplementedError

    def run(self, ctx: Context, data: Dataset) -> Iterator[pl.DataFrame]:
        bar = ctx.progress(total=data.num_rows)
        try:
            written = False
            for out in self.process_stream(data.iter_batches_with_arrow(self.batch_rows), ctx, bar):
                written = True
                yield out
            if not written:
                # An input of no rows has no batch, but it has columns: a batch of none gives the output's, which
                # were lost (a step of no columns, refused downstream as "has no column 'text'").
                yield self.process_batch(pl.DataFrame(schema=polars_schema(data.schema)), ctx)
        finally:
            bar.close()

    def process_stream(self, batches: Iterator[tuple[pl.DataFrame, Any]], ctx: Context,
                       bar: Progress) -> Iterator[Any]:
        """`process_batch` over (polars batch, Arrow batch or None) pairs, counting rows on `bar`.

        A batch handed back unchanged is written from its Arrow batch as read (see
        `Dataset.iter_batches_with_arrow`). Every executor runs a row-wise step through here.
        """
        ctx.current_progress = bar
        try:
            for batch, arrow in batches:
                before = bar.done
                out = self.process_batch(batch, ctx)
                # A stage may report finer progress itself (per model batch); count only the rest.
                bar.update(max(batch.height - (bar.done - before), 0))
                if out is batch and arrow is not None:
                    out = arrow  # handed back unchanged: written as read, no conversion back to Arrow
                batch = arrow = None
                yield out
                out = None  # written by now: hold no batch while the next one is read
        finally:
            ctx.current_progress = None


def check_inputs(stage: Stage, inputs: dict[str, Dataset]) -> None:
    """Fail before running when an input is missing, unexpected, empty, or lacks a needed column."""
    extra = [n for n in inputs if n not in stage.inputs]
    if extra:  # first: a misspelt input name also leaves the input it meant missing
        raise InputDataError(
            f"unknown input '{extra[0]}'; '{stage.name}' takes inputs: {', '.join(stage.inputs) or 'none'}",
            stage=stage.name,
        )
    missing = [n for n in stage.inputs if n not in inputs and n not in stage.optional_inputs]
    if missing:
        raise InputDataError(
            f"input '{missing[0]}' is not given; '{stage.name}' takes inputs: {', '.join(stage.inputs)}",
            stage=stage.name,
        )
    from pipeline.columns import check_schema, polars_schema

    schemas = {name: polars_schema(ds.schema) for name, ds in inputs.items()}
    check_schema(stage, schemas, {name: ds.label for name, ds in inputs.items()})
    if not stage.allow_empty_input:
        for input_name, ds in inputs.items():
            if ds.num_rows == 0:
                raise InputDataError(f"input '{input_name}' has no rows", stage=stage.name, file=ds.label)
    stage.check_input_data(inputs)
