"""Values a stage cannot rank, key or read: null or repeated ids, null texts, NaN keys; refused with the column
and the file named, counted exactly over the whole input."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.arrays import unique_sorted
from pipeline.columns import polars_schema
from pipeline.errors import InputDataError
from pipeline.io import Dataset
from stages._hashing import id_words

# Rows of the id column hashed at a time by `refuse_bad_id_column` (a batch is all it holds besides the hashes).
ID_BATCH_ROWS = 1 << 18


DEDUPLICATE = "deduplicate the input first, or name a unique column with id_column"


def refuse_bad_ids(ids: pl.Series, column: str, label: str | None, *, param: str = "id_column",
                   input_name: str | None = None, hint: str = DEDUPLICATE) -> None:
    """Ids are documented unique: a null or repeated id would land in two parts, be counted twice or be ambiguous.
    `hint` says what to do about a repeated id."""
    if ids.null_count():
        raise _null_ids(ids.null_count(), column, label, param, input_name)
    if ids.dtype.is_float() and ids.is_nan().any():
        raise InputDataError(f"{_where(input_name)}column '{column}' holds {int(ids.is_nan().sum()):,} NaN ids; a NaN "
                             "equals no id, not even itself, so it names no row", param=param, file=label,
                             hint="give those rows ids, or use integer or string ids")
    repeated = ids.filter(ids.is_duplicated())
    if repeated.len():
        raise InputDataError(
            f"{_where(input_name)}column '{column}' holds duplicate ids ({repeated.n_unique():,} ids repeated, "
            f"e.g. {repeated[0]!r}); ids must be unique", param=param, file=label,
            hint=hint,
        )


def refuse_bad_id_column(data: Dataset, column: str, *, input_name: str | None = None,
                         param: str = "id_column", hint: str = DEDUPLICATE) -> None:
    """`refuse_bad_ids` of one input's id column (for `Stage.check_input_data`, before any batch), holding
    8 bytes an id rather than the column (at 5e8 string ids, gigabytes on the driver).

    The column is streamed once, keeping a 64-bit word per id (an integer id's own value, a string's hash):
    sorted, words that never repeat prove the ids unique. Only the ids whose word repeats are read again
    and checked exactly, so a hash collision of two distinct ids refuses nothing, and the error is the
    one `refuse_bad_ids` gives for the whole column (the repeated ids are all among them, in row order).
    Refusing repeats holds those ids (memory follows the repeats, not the column); floats, dates and other
    id types are read whole as before. `input_name` names the input in the message (a stage with several).
    Cost: about 0.1 s per million ids, string or integer, in memory or in Parquet (most of it the sort).
    """
    dtype = polars_schema(data.schema)[column]
    if not (dtype.is_integer() or dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum))):
        refuse_bad_ids(data.lazy().select(column).collect().to_series(), column, data.label, param=param,
                       input_name=input_name, hint=hint)
        return
    words = np.empty(data.num_rows, np.uint64)
    filled = nulls = 0
    for ids in _id_batches(data, column):
        nulls += ids.null_count()
        if not nulls:  # after a null only the count goes on: the ids are refused for it
            words[filled:filled + ids.len()] = _id_word(ids)
            filled += ids.len()
    if nulls:
        raise _null_ids(nulls, column, data.label, param, input_name)
    words = words[:filled]
    words.sort()
    repeated = unique_sorted(words[1:][words[1:] == words[:-1]])
    del words
    if repeated.size:
        candidates = [ids.filter(pl.Series(_among(_id_word(ids), repeated))) for ids in _id_batches(data, column)]
        refuse_bad_ids(pl.concat(candidates), column, data.label, param=param, input_name=input_name, hint=hint)


def refuse_null_ids(data: Dataset, column: str, *, input_name: str | None = None, param: str = "id_column") -> None:
    """Null ids of a whole input, counted exactly without holding the column (`null_count`): for a stage that
    streams its input and never gathers every id (a count per batch would give the first batch's only)."""
    nulls = null_count(data, column)
    if nulls:
        raise _null_ids(nulls, column, data.label, param, input_name)


def _null_ids(count: int, column: str, label: str | None, param: str, input_name: str | None = None) -> InputDataError:
    return InputDataError(f"{_where(input_name)}column '{column}' has {count:,} null ids; every row needs an id",
                          param=param, file=label, hint="drop or fill those rows first")


def null_count(data: Dataset, column: str) -> int:
    """The nulls in one column of a whole input, exactly, without holding the column: from the Parquet footers'
    statistics where every row group of a flat column has them (nothing read), else counted batch by batch."""
    if data.frame is not None:
        return data.frame.get_column(column).null_count()
    counted = _footer_nulls(data, column)
    if counted is not None:
        return counted
    return sum(batch.column(column).null_count for batch in data.iter_arrow_batches(columns=[column]))


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


def null_rows(data: Dataset, columns: list[str]) -> int:
    """The rows of a whole input null in every one of `columns`: none where one of them has no null (`null_count`,
    from the footers where it can), else counted batch by batch."""
    if any(null_count(data, column) == 0 for column in columns):
        return 0
    every = pl.all_horizontal(pl.col(columns).is_null())
    if data.frame is not None:
        return int(data.frame.select(every.sum()).item())
    return sum(int(batch.select(every.sum()).item()) for batch in data.iter_batches(ID_BATCH_ROWS, columns=columns))


def refuse_nulls(data: Dataset, column: str | list[str], consequence: str, *, kind: str, param: str,
                 input_name: str | None = None, every_row: bool = False) -> None:
    """Refuse an input whose column holds nulls (counted exactly, see `null_count`), in one line naming the column,
    the file and what a row's value is (`kind`, a singular noun: "text", "label"), and saying what a null row
    would have come to (`consequence`). With `every_row`, only a column null in every row is refused (for a stage
    that reads a null as empty: then nothing at all is left to measure). With a list of columns (the fields one
    value is joined from), the rows null in all of them (`null_rows`)."""
    columns = [column] if isinstance(column, str) else list(column)
    nulls = null_count(data, columns[0]) if len(columns) == 1 else null_rows(data, columns)
    if not nulls or (every_row and nulls < data.num_rows):
        return
    named = ", ".join(repr(c) for c in columns)
    if every_row:
        what = (f"{_where(input_name)}column{'s' * (len(columns) > 1)} {named} "
                f"{'hold' if len(columns) > 1 else 'holds'} no {kind} (all {nulls:,} rows null)")
        todo = f"check that {param} names the right column, or fill it"
    elif len(columns) == 1:
        what, todo = f"{_where(input_name)}column {named} has {nulls:,} null {kind}s", "drop or fill them first"
    else:
        what = f"{_where(input_name) or 'the input '}has {nulls:,} rows with no {kind} (columns {named} all null)"
        todo = "drop or fill them first"
    raise InputDataError(f"{what}; {consequence}; {todo}", param=param, file=data.label)


def refuse_null_texts(data: Dataset, column: str | list[str], consequence: str, *, input_name: str | None = None,
                      param: str = "text_column") -> None:
    """`refuse_nulls` of a text column (or the fields one text is joined from): a stage that read a null as ''
    would lose its row without a word."""
    refuse_nulls(data, column, consequence, kind="text", param=param, input_name=input_name)


def nan_count(data: Dataset, column: str) -> int:
    """The NaN values of a float column of a whole input (0 for any other type), counted batch by batch."""
    if not pa.types.is_floating(data.schema.field(column).type):
        return 0
    return sum(pc.sum(pc.is_nan(batch.column(column))).as_py() or 0
               for batch in data.iter_arrow_batches(columns=[column]))


def refuse_nans(data: Dataset, column: str, consequence: str, *, param: str, input_name: str | None = None) -> None:
    """Refuse NaN in a column whose values are compared (a key, a rank): NaN equals nothing, not even itself, so
    `consequence` would follow. A null is the way to say 'no value' there."""
    nans = nan_count(data, column)
    if nans:
        raise InputDataError(f"{_where(input_name)}column '{column}' has {nans:,} NaN values; {consequence}; make "
                             "them null (fill_nan(None)) or drop those rows first", param=param, file=data.label)


def _where(input_name: str | None) -> str:
    return f"input '{input_name}' " if input_name else ""


def _among(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Which `values` are in the sorted, non-empty `sorted_set`: binary searches of the values in order (against
    2e6 repeated words, 0.04 s a batch; unordered 0.2 s, and `np.isin` 2.5 s)."""
    order = np.argsort(values)
    at = np.searchsorted(sorted_set, values[order])
    at[at == sorted_set.size] = 0
    found = np.empty(values.size, bool)
    found[order] = sorted_set[at] == values[order]
    return found


def _id_batches(data: Dataset, column: str) -> Iterator[pl.Series]:
    for batch in data.iter_batches(ID_BATCH_ROWS, columns=[column]):
        yield batch.to_series()


def _id_word(ids: pl.Series) -> np.ndarray:
    """64 bits per id, equal for equal ids: an integer's own word, else polars' string hash. That hash may change
    between polars versions (`stages._hashing` holds the stable ones that decide rows' fates), but within one
    process it is fixed, which is all one check needs; it is ~70x faster than `id_digest`."""
    if ids.dtype.is_integer():
        return id_words(ids)
    return ids.cast(pl.String).hash(0x5EED).to_numpy()
