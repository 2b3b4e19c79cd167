"""Rows that must be named and hold something: ids present and unique, texts present, refused otherwise
with the column and the file named."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

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


def null_count(data: Dataset, column: str) -> int:
    """The nulls in one column of a whole input, exactly, without holding the column: from the Parquet footers'
    statistics where every row group of a flat column has them (nothing read), else counted batch by batch."""
    if data.frame is not None:
        return data.frame.get_column(column).null_count()
    counted = _footer_nulls(data, column)
    if counted is not None:
        return counted
    return sum(batch.column(0).null_count for batch in data.iter_arrow_batches(columns=[column]))


def _footer_nulls(data: Dataset, column: str) -> int | None:
    """Sum of the row groups' recorded null counts of a flat column, or None where one is not recorded."""
    if pa.types.is_nested(data.schema.field(column).type):
        return None  # a leaf's count is of values inside lists or structs, not of rows
    total = 0
    for path in data.files:
        meta = pq.read_metadata(path)
        leaves = [meta.schema.column(i).path for i in range(meta.num_columns)]
        if column not in leaves:
            return None
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(leaves.index(column)).statistics
            if stats is None or not stats.has_null_count:
                return None
            total += stats.null_count
    return total


def refuse_null_texts(data: Dataset, column: str, consequence: str, *, input_name: str | None = None,
                      param: str = "text_column") -> None:
    """Refuse an input whose text column holds nulls (counted exactly, see `null_count`), saying what a null
    row would have come to (`consequence`): a stage that read one as '' would lose it without a word."""
    nulls = null_count(data, column)
    if nulls:
        where = f"input '{input_name}' " if input_name else ""
        raise InputDataError(f"{where}column '{column}' has {nulls:,} null texts; {consequence}; drop or fill them "
                             "first", param=param, file=data.label)
