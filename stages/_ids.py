"""Row ids: present and unique, refused otherwise with the column and the file named."""

from __future__ import annotations

import polars as pl

from pipeline.errors import InputDataError
from pipeline.io import Dataset


def refuse_bad_ids(ids: pl.Series, column: str, label: str | None, *, param: str = "id_column",
                   duplicates: bool = True) -> None:
    """Ids are documented unique: a null or repeated id would land in two parts, be counted twice or be ambiguous."""
    if ids.null_count():
        raise InputDataError(f"column '{column}' has {ids.null_count():,} null ids; every row needs an id",
                             param=param, file=label, hint="drop or fill those rows first")
    if not duplicates:
        return
    repeated = ids.filter(ids.is_duplicated())
    if repeated.len():
        raise InputDataError(
            f"column '{column}' holds duplicate ids ({repeated.n_unique():,} ids repeated, "
            f"e.g. {repeated[0]!r}); ids must be unique", param=param, file=label,
            hint="deduplicate the input first, or name a unique column with id_column",
        )


def refuse_bad_id_column(data: Dataset, column: str) -> None:
    """`refuse_bad_ids` of one input's id column, read alone (for `Stage.check_input_data`, before any batch)."""
    refuse_bad_ids(data.lazy().select(column).collect().to_series(), column, data.label)
