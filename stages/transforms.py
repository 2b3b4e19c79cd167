"""General table transforms: select, length filter, sample, split (SQL lives in stages/sql.py)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import polars as pl

from pipeline.columns import passthrough
from pipeline.errors import ParamError
from pipeline.io import Dataset
from pipeline.params import Fraction, NonNegativeInt
from pipeline.stage import Context, RowwiseStage, Stage
from stages._hashing import id_uniform
from stages._ids import refuse_bad_ids
from stages.text import SPLIT_REGEX


class Select(RowwiseStage):
    """Keep, drop or rename columns; with no params it passes the table through unchanged (streamed).

    Parameters:
        columns: the columns to keep, in order (null keeps all)
        drop: columns to remove
        rename: a mapping of old name to new name
    """

    name = "select"
    allow_empty_input = True

    def __init__(self, columns: list[str] | None = None, drop: list[str] | None = None,
                 rename: dict[str, str] | None = None):
        self.columns = columns
        self.drop = drop
        self.rename = rename

    def validate(self) -> None:
        for param, names in (("columns", self.columns), ("drop", self.drop)):
            repeated = sorted({c for c in names or [] if list(names).count(c) > 1})
            if repeated:
                raise ParamError(param, f"names column {repeated[0]!r} more than once")
        targets = list((self.rename or {}).values())
        for new in targets:
            if not isinstance(new, str) or not new:
                raise ParamError("rename", f"a new column name must be a non-empty string, got {new!r}")
            if targets.count(new) > 1:
                raise ParamError("rename", f"renames two columns to {new!r}")

    def required_columns(self):
        need = list(self.columns or []) + list(self.drop or []) + list((self.rename or {}).keys())
        param = {c: "columns" for c in self.columns or []}
        param.update({c: "drop" for c in self.drop or []})
        param.update({c: "rename" for c in self.rename or {}})
        return {"data": {c: param[c] for c in need}}

    def output_schema(self, inputs):
        schema = inputs["data"]
        if self.columns is not None:
            schema = {c: schema.get(c) for c in self.columns}
        schema = passthrough(schema, drop=self.drop or [])
        if not schema:
            raise ParamError("drop" if self.drop else "columns", "leaves no columns; keep at least one")
        rename = self.rename or {}
        gone = [old for old in rename if old not in schema]
        if gone:
            raise ParamError("rename", f"renames column '{gone[0]}', which columns or drop removes first")
        clash = [new for new in rename.values() if new in schema and new not in rename]
        if clash:
            raise ParamError("rename", f"would rename a column to {clash[0]!r}, which the output already has; "
                             "drop that column or pick another name")
        return {rename.get(c, c): t for c, t in schema.items()}

    def process_batch(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        self.output_schema({"data": dict(batch.schema)})  # undeclared upstream: refuse a clash here, not in polars
        if self.columns is not None:
            batch = batch.select(self.columns)
        if self.drop:
            batch = batch.drop(self.drop)
        if self.rename:
            batch = batch.rename(self.rename)
        return batch

    @classmethod
    def example(cls):
        return {"columns": ["id", "text"]}, {"data": pl.DataFrame({"id": ["a", "b"], "text": ["x y", "z"], "n": [1, 2]})}


class LengthFilter(RowwiseStage):
    """Keep documents whose length in characters and whitespace words lies within bounds.

    Parameters:
        min_chars: drop documents shorter than this many characters
        max_chars: drop documents longer than this (null: no bound)
        min_words: drop documents with fewer whitespace-separated words
        text_column: the column to measure
    """

    name = "length_filter"
    allow_empty_input = True

    def __init__(self, min_chars: NonNegativeInt = 0, max_chars: int | None = None, min_words: NonNegativeInt = 0,
                 text_column: str = "text"):
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.min_words = min_words
        self.text_column = text_column

    def validate(self) -> None:
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise ParamError("max_chars", f"must be >= min_chars ({self.min_chars}), got {self.max_chars}")

    def required_columns(self):
        return {"data": {self.text_column: "text_column"}}

    def output_schema(self, inputs):
        return dict(inputs["data"])

    def process_batch(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        text = pl.col(self.text_column).cast(pl.String)  # a Categorical or Enum column is text too (pipeline.columns.is_text)
        cond = text.str.len_chars() >= self.min_chars
        if self.max_chars is not None:
            cond &= text.str.len_chars() <= self.max_chars
        if self.min_words:
            cond &= text.str.count_matches(SPLIT_REGEX["whitespace"]) >= self.min_words
        # A row with no text passes no bound: dropped, and counted (a column of nulls gave no rows and no word why).
        nulls = batch.get_column(self.text_column).null_count()
        if nulls:
            ctx.stats["null_texts_dropped"] = ctx.stats.get("null_texts_dropped", 0) + nulls
        return batch.filter(cond)

    @classmethod
    def example(cls):
        return {"min_chars": 3}, {"data": pl.DataFrame({"id": ["a", "b"], "text": ["ab", "abcd"]})}


class _DrawnByIds(Stage):
    """A stage that draws rows by a seeded hash of each row's id (`id_column`): Sample and Split."""

    id_column: str

    def required_columns(self):
        return {"data": {self.id_column: "id_column"}}

    def required_column_types(self) -> dict[str, dict[str, str]]:
        # An id is one value a row: a list id failed inside polars hashing it (exit 1).
        return {"data": {self.id_column: "scalar"}}


class Sample(_DrawnByIds):
    """Draw a reproducible sample of rows, chosen by a seeded hash of each id (order preserved).

    Exactly `n` rows (or round(fraction * rows)) are kept: the rows whose hashes are smallest.

    Parameters:
        n: how many rows to keep
        fraction: the share of rows to keep, in [0, 1] (instead of n)
        id_column: the column of unique ids the draw is keyed on
        seed: overrides the pipeline seed for this step
    """

    name = "sample"

    def __init__(self, n: NonNegativeInt | None = None, fraction: Fraction | None = None, id_column: str = "id",
                 seed: NonNegativeInt | None = None):
        self.n = n
        self.fraction = fraction
        self.id_column = id_column
        self.seed = seed

    def validate(self) -> None:
        if (self.n is None) == (self.fraction is None):
            raise ParamError("n", "give exactly one of n and fraction")

    def output_schema(self, inputs):
        return dict(inputs["data"])

    def run(self, ctx: Context, data: Dataset) -> pl.DataFrame:
        if self.n is not None and self.n > data.num_rows:
            # Sampling without replacement, as polars' and pandas' sample(n) refuse to: fewer rows than asked for
            # would pass silently into everything downstream.
            raise ParamError("n", f"is {self.n:,}, but the input has {data.num_rows:,} rows; a sample drawn "
                                  "without replacement cannot be larger than its input", file=data.label,
                             hint="lower n, or give fraction: 1.0 to keep every row")
        df = data.collect()
        # The draw is keyed on the ids: a repeated id is kept or dropped with its twin, a null has no key.
        refuse_bad_ids(df[self.id_column], self.id_column, data.label)
        k = self.n if self.n is not None else round(self.fraction * df.height)
        u = id_uniform(df[self.id_column], self.seed if self.seed is not None else ctx.seed, "sample")
        keep = np.zeros(df.height, dtype=bool)
        keep[np.argsort(u, kind="stable")[:k]] = True
        ctx.record("rows_in", df.height)
        ctx.record("rows_out", int(k))
        return df.filter(pl.Series(keep))

    @classmethod
    def example(cls):
        return {"n": 2}, {"data": pl.DataFrame({"id": [f"r{i}" for i in range(6)], "text": list("abcdef")})}


class Split(_DrawnByIds):
    """Split rows into named parts (default train/test) by a seeded hash of the id, exactly sized.

    The main output is every row with a `split` column; each part is also a side output, so other
    steps read `mystep:train` and `mystep:test`.

    Parameters:
        fractions: part name -> share of rows; shares must sum to 1
        id_column: the column of unique ids the split is keyed on
        seed: overrides the pipeline seed for this step
    """

    name = "split"

    def __init__(self, fractions: dict[str, Fraction] | None = None, id_column: str = "id", seed: NonNegativeInt | None = None):
        self.fractions = fractions if fractions is not None else {"train": 0.9, "test": 0.1}
        self.id_column = id_column
        self.seed = seed

    def validate(self) -> None:
        if not self.fractions:
            raise ParamError("fractions", "name at least one part")
        for name in self.fractions:  # shares are bounded by the declared type (Fraction)
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
                # Part names name side-output folders: ASCII only, like step ids.
                raise ParamError("fractions", f"part name {name!r} must be ASCII letters, digits, '_' or '-'")
        if abs(sum(self.fractions.values()) - 1) > 1e-9:
            raise ParamError("fractions", f"shares must sum to 1, got {sum(self.fractions.values())}")

    def output_schema(self, inputs):
        return passthrough(inputs["data"], add={"split": pl.String})

    def side_output_names(self):
        return tuple(self.fractions)

    def side_output_schemas(self, inputs):
        return {name: self.output_schema(inputs) for name in self.side_output_names()}

    def run(self, ctx: Context, data: Dataset) -> pl.DataFrame:
        df = data.collect()
        refuse_bad_ids(df[self.id_column], self.id_column, data.label)
        u = id_uniform(df[self.id_column], self.seed if self.seed is not None else ctx.seed, "split")
        order = np.argsort(u, kind="stable")
        # Exact sizes by largest remainder, so part sizes never drift from the requested shares.
        names = list(self.fractions)
        raw = np.array([self.fractions[n] * df.height for n in names])
        sizes = np.floor(raw).astype(int)
        for i in np.argsort(-(raw - sizes), kind="stable")[: df.height - sizes.sum()]:
            sizes[i] += 1
        labels = np.empty(df.height, dtype=object)
        start = 0
        for name, size in zip(names, sizes):
            labels[order[start:start + size]] = name
            start += size
        out = df.with_columns(pl.Series("split", labels.tolist(), dtype=pl.String))
        for name, size in zip(names, sizes):
            ctx.write_side_output(name, out.filter(pl.col("split") == name))
            ctx.record(f"rows_{name}", int(size))
        return out

    @classmethod
    def example(cls) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        return {"fractions": {"train": 0.75, "test": 0.25}}, {
            "data": pl.DataFrame({"id": [f"r{i}" for i in range(8)], "text": list("abcdefgh")})
        }
