"""Column flow: which columns each step's output has, checked over the whole DAG before anything runs.

Every stage may declare its output columns as a function of its params and its input schemas
(`Stage.output_schema`, `Stage.side_output_schemas`), and declares which side outputs its params let
it write (`Stage.side_output_names`). `check_column_flow` walks the steps in order: a `step:side`
input must name a side output that step can write; a Parquet path input contributes the schema in
its footer, a step output the schema its stage declared; then each step's `required_columns()` and
`required_column_types()` are checked against what its inputs will hold. A stage that declares no
columns (returns None) makes its output unknown, and the column check stops there for its readers:
it never guesses.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any

import polars as pl

from pipeline.errors import InputDataError, PipelineError

# Column name -> polars dtype (None where the stage does not know the type).
Schema = dict[str, Any]


def passthrough(schema: Schema, add: Schema | None = None, drop: tuple[str, ...] | list[str] = ()) -> Schema:
    """The input's columns, minus `drop`, plus (or replaced by) `add`: the common shape of a declaration."""
    out = {c: t for c, t in schema.items() if c not in drop}
    out.update(add or {})
    return out


def polars_schema(arrow_schema: Any) -> Schema:
    """The polars dtypes of an Arrow schema.

    Read off an empty table made from no batches: `pyarrow.Schema.empty_table()` imports pandas
    (about 0.5 s per process), which nothing else on the pipeline's path needs.
    """
    import pyarrow as pa

    return dict(pl.from_arrow(pa.Table.from_batches([], schema=arrow_schema)).schema)


def is_text(dtype: Any) -> bool:
    """Does a polars dtype hold text (String, Categorical, Enum)? None (unknown) counts as text."""
    if dtype is None:
        return True
    return dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum)) or dtype in (pl.Categorical, pl.Enum)


def is_numeric(dtype: Any) -> bool:
    """Does a polars dtype hold numbers? None (unknown) counts as numeric."""
    return dtype is None or dtype.is_numeric()


def is_label(dtype: Any) -> bool:
    """Does a polars dtype hold class labels as the label-noise stages take them (integers or strings)? None counts."""
    return dtype is None or dtype.is_integer() or dtype == pl.String


def is_scalar(dtype: Any) -> bool:
    """Is a polars dtype one value a row (a group key), not a list, array or struct? None counts as scalar."""
    return dtype is None or not dtype.is_nested()


def is_rankable(dtype: Any) -> bool:
    """Does a polars dtype hold values with an order a "best" row is picked by (numbers, booleans, dates, times,
    durations, and Enum: the order of its declared categories)? Text is left out: it ranks by its characters
    ('10' before '9'), an order no one means by "best". None counts as rankable."""
    return (dtype is None or dtype.is_numeric() or dtype.is_temporal() or dtype == pl.Boolean
            or isinstance(dtype, pl.Enum))


# The kinds `Stage.required_column_types` may ask for: (test, what the column must be).
COLUMN_KINDS = {
    "text": (is_text, "text; cast it to a string first or name a text column"),
    "numeric": (is_numeric, "numeric; cast it to a number first or name a numeric column"),
    "scalar": (is_scalar, "one value a row; a list, array or struct column cannot be a key"),
    "rank": (is_rankable, "numbers, booleans, dates, times or an Enum to rank rows by (text would rank by its "
                          "characters, '10' before '9'); cast it first or name another column"),
    "label": (is_label, "integer or string class labels; cast it to integers or strings first"),
}


def _path_schema(path: str) -> Schema | None:
    from pipeline.io import Dataset

    try:
        arrow = Dataset.from_parquet(path).schema
    except Exception:  # noqa: BLE001 - a path that does not exist yet is checked when the step runs
        return None
    return polars_schema(arrow)


def check_schema(stage: Any, inputs: dict[str, Schema], labels: dict[str, str]) -> None:
    """Raise InputDataError when a known input schema lacks a column, or has the wrong type, that the stage needs."""
    types = stage.required_column_types()
    for input_name, columns in stage.required_columns().items():
        schema = inputs.get(input_name)
        if schema is None:
            continue
        for column, param in columns.items():
            via = f" (named by parameter '{param}')" if param else ""
            if column not in schema:
                raise InputDataError(
                    f"input '{input_name}' has no column '{column}'{via}; the available columns are: {list(schema)}",
                    stage=stage.name, param=param, file=labels.get(input_name),
                )
            kind = types.get(input_name, {}).get(column)
            if kind is not None and not COLUMN_KINDS[kind][0](schema[column]):
                what = COLUMN_KINDS[kind][1]
                if not param:  # a fixed column name (no parameter names it): only a cast helps
                    what = what.split(" or name a ")[0]
                raise InputDataError(
                    f"input '{input_name}' column '{column}'{via} is {schema[column]}, not {what}",
                    stage=stage.name, param=param, file=labels.get(input_name),
                )


def check_side_references(step: Any, built: dict[str, Any]) -> None:
    """Refuse a `step:side` input naming a side output its step's stage, so configured, cannot write."""
    for name, ref in step.inputs.items():
        if ref.side is not None:
            declared = built[ref.step].side_output_names()
            if not any(fnmatchcase(ref.side, pattern) for pattern in declared):
                raise ref.no_such_side(name, list(declared))


def refuse_undeclared_sides(stage: Any, written: list[str]) -> None:
    """A stage that wrote a side output it does not declare breaks what `check_side_references` promised (a
    valid config's `step:side` inputs are known before anything runs): the step fails, naming the method."""
    declared = stage.side_output_names()
    undeclared = [s for s in written if not any(fnmatchcase(s, pattern) for pattern in declared)]
    if undeclared:
        raise PipelineError(
            f"stage '{stage.name}' wrote side output(s) {', '.join(undeclared)} that its side_output_names() does "
            f"not declare (it declares: {', '.join(declared) or 'none'}); add them there, as pipeline validate "
            "checks step:side inputs against it"
        )


_INPUT_NAMED = re.compile(r"input '([^']+)'")


def _named_input_file(exc: PipelineError, labels: dict[str, str]) -> str | None:
    """The file (or upstream step) of the input a refusal starts by naming ("input 'data' column ..."): a
    declaration such as `output_schema` sees schemas only, so it cannot name the data's file itself."""
    named = _INPUT_NAMED.match(exc.message)
    return labels.get(named.group(1)) if named else None


def check_column_flow(config: Any) -> dict[str, Schema | None]:
    """Check every step's inputs (side outputs named, needed columns) against what its upstream steps
    will write; return each output's schema."""
    from pipeline.config import build_stage, order_steps

    known: dict[str, Schema | None] = {}
    built: dict[str, Any] = {}
    for step in order_steps(config):
        stage = built[step.id] = build_stage(step, config)
        inputs: dict[str, Schema] = {}
        labels: dict[str, str] = {}
        for name, ref in step.inputs.items():
            schema = _path_schema(ref.path) if ref.path is not None else known.get(str(ref))
            if schema is not None:
                inputs[name] = schema
                labels[name] = ref.path if ref.path is not None else f"output of step '{ref}'"
        complete = len(inputs) == len(step.inputs)
        try:
            check_side_references(step, built)
            check_schema(stage, inputs, labels)
            stage.check_input_files(inputs, {n: r.path for n, r in step.inputs.items() if r.path is not None})
            # A declaration may itself refuse the inputs (e.g. `sql` binding its query to the schema).
            known[step.id] = stage.output_schema(inputs) if complete else None
            sides = stage.side_output_schemas(inputs) if complete else {}
        except PipelineError as exc:
            raise exc.add_context(step=step.id, stage=step.stage,
                                  file=_named_input_file(exc, labels) or config.source) from None
        for side, schema in (sides or {}).items():
            known[f"{step.id}:{side}"] = schema
    return known
