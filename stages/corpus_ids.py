"""The `id` column of a corpus a source reads: taken from the input's own column or numbered, and refused in one
line when it cannot name rows (split from stages/file_stream.py, which `normalise`s every batch with it)."""

from __future__ import annotations

import polars as pl

from pipeline.errors import InputDataError

_NOT_IDS = (pl.List, pl.Array, pl.Struct, pl.Object, pl.Null)


def id_column_problem(schema: dict, text_column: str, id_column: str | None) -> str | None:
    """Why `id_column` cannot be the ids of rows of `schema`, or None. Each case failed inside polars (exit 1, "a
    bug"): the ids cast from a list or struct column, or an `id` column beside them (a duplicate column name);
    and the text column as ids left no text at all."""
    if id_column is None or id_column not in schema:
        return None
    if id_column == text_column:
        return f"names the text column '{text_column}'; a text cannot also be the row's id: name another column"
    if id_column != "id" and "id" in schema and text_column != "id":
        return (f"names '{id_column}', but the input also has a column 'id', which the ids would replace; drop or "
                f"rename 'id' first")
    dtype = schema[id_column]
    if dtype is not None and isinstance(dtype, _NOT_IDS):
        return f"column '{id_column}' holds {dtype}, not ids; name a column of text or numbers"
    return None


def take_ids(df: pl.DataFrame, id_column: str | None, default_ids: pl.Series | None,
             label: str) -> tuple[pl.DataFrame, pl.Series]:
    """`df` without its id column, and the ids (strings) it held, or `default_ids` when it has none (after
    `id_column_problem` found none)."""
    if id_column is not None:
        if id_column not in df.columns:
            raise InputDataError(f"no column '{id_column}'; columns are: {df.columns}", param="id_column", file=label)
        return df.drop(id_column), df[id_column].cast(pl.String)
    if "id" in df.columns:
        return df.drop("id"), df["id"].cast(pl.String)
    return df, default_ids


def unique_id_hint(id_column: str | None) -> str:
    if id_column in (None, "id"):  # leaving id_column out takes the input's own 'id' column again
        return ("a column named 'id' is the id even with id_column unset; rename or drop 'id', then pass id_column "
                "naming a unique column, or leave it out to number rows")
    return "pass id_column naming a unique column, or leave it out to number rows"
