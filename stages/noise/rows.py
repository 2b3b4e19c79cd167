"""Reading labels and ids, and writing noisy rows: the table side of label_noise, shared by flip and dilute."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError
from pipeline.io import DEFAULT_BATCH_ROWS, Dataset
from stages._hashing import id_digest, id_words
from stages.noise.counts import CHUNK_ROWS, dense_counts, json_value

NOISE_COLUMNS = ("clean_label", "is_noisy", "noise_origin", "source_id")
# Integer classes spanning fewer values than this are indexed through a dense lookup table.
DENSE_LABEL_SPAN = 1 << 20
# Rows that `_consecutive_labels` looks at to prove the class set of in-memory integer labels.
PROBE_ROWS = CHUNK_ROWS


def batch_rows(ds: Any) -> int:
    """Rows per batch: a Parquet input streams in DEFAULT_BATCH_ROWS; an in-memory table is one batch
    (it is already in memory, and one batch keeps the vectorised work in one call)."""
    frame = getattr(ds, "frame", None)
    return max(frame.height, 1) if frame is not None else DEFAULT_BATCH_ROWS


def _label_counts(data: Dataset, label: str, dtype: pl.DataType) -> pl.DataFrame:
    """Rows per distinct label (nulls included); a bincount for small integer labels held in memory."""
    if data.frame is not None and dtype.is_integer() and data.frame[label].null_count() == 0 and data.num_rows:
        values = data.frame[label]
        lo, hi = _label_range(data.frame, label)
        if hi - lo < DENSE_LABEL_SPAN:
            counts = dense_counts(values.to_numpy(), lo, hi - lo + 1)
            present = np.flatnonzero(counts)
            return pl.DataFrame({label: pl.Series(present + lo).cast(dtype), "len": counts[present].astype(np.uint32)})
    return data.lazy().group_by(label).len().collect()


def _label_range(frame: pl.DataFrame, label: str) -> tuple[int, int]:
    """Smallest and largest label of a frame without null labels (both in one polars call, in parallel)."""
    lo, hi = frame.select(pl.col(label).min().alias("lo"), pl.col(label).max().alias("hi")).row(0)
    return int(lo), int(hi)


def _consecutive_labels(data: Dataset, label: str, dtype: pl.DataType) -> pl.Series | None:
    """The classes lo..hi of in-memory integer labels, when a strided sample of rows holds every integer
    from the labels' min to their max (then those are all the distinct labels), else None. Costs a
    min, a max and one chunk: counting the classes can wait for a pass that reads the labels anyway."""
    frame = data.frame
    if frame is None or not dtype.is_integer() or not frame.height or frame[label].null_count():
        return None
    values = frame[label]
    lo, hi = _label_range(frame, label)
    span = hi - lo + 1
    if span < 2 or span > PROBE_ROWS // 16 or hi >= 1 << 63:
        return None
    probe = values.gather_every(max(1, frame.height // PROBE_ROWS))  # strided: sorted labels pass too
    if not dense_counts(probe.to_numpy(), lo, span).all():
        return None
    return pl.Series(label, np.arange(span, dtype=np.int64) + lo).cast(dtype)


def with_label_kind(types: dict[str, dict[str, str]], label_column: str) -> dict[str, dict[str, str]]:
    """`required_column_types` with input 'data''s `label_column` of kind "label" (integers or strings), for the
    stages that draw label noise: a float or categorical label column is then refused from the schema, by
    `pipeline validate` too, not when the step runs (in the studies, after their split)."""
    types.setdefault("data", {})[label_column] = "label"
    return types


def refuse_label_kind(data: Dataset, label: str) -> pl.DataType:
    """The label column's type, refused (in the words of the schema check `with_label_kind` asks for) unless it
    holds integers or strings: where no schema was known before the run (an upstream step that does not declare the
    column), label_noise said it otherwise, and the studies split first and failed inside their label_noise call,
    naming its stage and its in-memory table instead of theirs and the file."""
    from pipeline.columns import COLUMN_KINDS

    dtype = data.lazy().collect_schema()[label]
    accepts, what = COLUMN_KINDS["label"]
    if not accepts(dtype):
        raise InputDataError(f"input 'data' column '{label}' (named by parameter 'label_column') is {dtype}, not "
                             f"{what}", param="label_column", file=data.label)
    return dtype


def refuse_noise_columns(data: Dataset) -> None:
    """An input that already has a column label_noise writes (from an earlier label_noise step?) is refused,
    naming its file: the step would otherwise overwrite the record of the earlier noise."""
    for col in NOISE_COLUMNS:
        if col in data.columns:
            raise InputDataError(
                f"input already has column '{col}' (from an earlier label_noise step?); drop or rename it first",
                file=data.label,
            )


def class_table(stage: Any, data: Dataset, need_rows: bool = True) -> tuple[pl.Series, np.ndarray | None]:
    """The class set in order, and the number of rows of each class (one pass over the labels).

    Without `need_rows` the counts may be None (the caller counts them later, e.g. from a pass of
    its own) when the class set is known without counting (`_consecutive_labels`).
    """
    label = stage.label_column
    dtype = refuse_label_kind(data, label)
    refuse_noise_columns(data)
    if not need_rows and stage.classes is None:
        classes = _consecutive_labels(data, label, dtype)
        if classes is not None:
            return classes, None
    counted = _label_counts(data, label, dtype)
    if counted[label].null_count():
        nulls = int(counted.filter(pl.col(label).is_null())["len"][0])
        raise InputDataError(f"label column '{label}' has {nulls} null value(s); every row needs a label",
                             param="label_column", file=data.label)
    if stage.classes is not None:
        try:
            classes = pl.Series(label, stage.classes).cast(dtype, strict=True)
        except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError, TypeError):
            raise ParamError("classes", f"values {stage.classes} do not match the label type {dtype}") from None
        unknown = counted.filter(~pl.col(label).is_in(classes.implode()))[label].to_list()
        if unknown:
            raise InputDataError(f"label column '{label}' holds values not in classes: {unknown[:10]}",
                                 param="classes", file=data.label)
    else:
        classes = counted[label].sort()
    if classes.len() < 2:
        raise InputDataError(
            f"label column '{label}' has a single class {classes.to_list()}; label noise needs at least 2",
            param="label_column", file=data.label,
        )
    joined = pl.DataFrame({label: classes}).join(counted, on=label, how="left", maintain_order="left")
    return classes, joined["len"].fill_null(0).to_numpy().astype(np.int64)


def class_index(labels: pl.Series, classes: pl.Series) -> np.ndarray:
    """Position of each label in `classes` (labels are already known to be in it)."""
    if labels.dtype.is_integer() and classes.len():
        lo, hi = int(classes.min()), int(classes.max())
        values = labels.to_numpy()
        if _consecutive(classes):  # classes lo, lo + 1, ..., in order: the index is an offset
            if not lo and values.dtype in (np.int32, np.int64):
                return values  # labels 0..K-1 are their own indices: the column itself, no pass, no copy
            return (values - lo).astype(np.int32) if lo else values.astype(np.int32)
        if hi - lo < DENSE_LABEL_SPAN:
            # A dense lookup table: ~7x faster than replace_strict on 10M integer labels.
            lut = np.zeros(hi - lo + 1, dtype=np.int32)
            lut[classes.to_numpy().astype(np.int64) - lo] = np.arange(classes.len(), dtype=np.int32)
            return lut[values.astype(np.int64, copy=False) - lo]
    return labels.replace_strict(classes, np.arange(classes.len(), dtype=np.int32),
                                 return_dtype=pl.Int32).to_numpy()


def _consecutive(classes: pl.Series) -> bool:
    """Are the classes the integers lo, lo + 1, ..., hi in this order?"""
    k = classes.len()
    return bool(classes.dtype.is_integer() and k and int(classes[-1]) - int(classes[0]) == k - 1
                and classes.is_sorted() and classes.n_unique() == k)


def class_labels(classes: pl.Series, idx: np.ndarray) -> pl.Series:
    """The class at each index: arithmetic when the classes are consecutive integers, a gather otherwise."""
    if _consecutive(classes):
        lo = int(classes[0])
        values = idx.astype(np.int64, copy=False) + lo if lo else idx.astype(np.int64, copy=False)
        return pl.Series(classes.name, values).cast(classes.dtype)
    return classes.gather(idx)


def class_positions(classes: pl.Series, values: Any, param: str, file: str | None) -> np.ndarray:
    """The index of each class a parameter names; `file` (the data's, whose labels are the classes unless `classes`
    lists them) is named when one is not a class."""
    lookup = {json_value(c): i for i, c in enumerate(classes.to_list())}
    out = []
    for v in values:
        if v not in lookup:
            raise ParamError(param, f"names unknown class {v!r}; the classes are {list(lookup)}", file=file,
                             hint="name one of them, or list the classes with the parameter 'classes'")
        out.append(lookup[v])
    return np.asarray(out, dtype=np.int64)


def digests(stage: Any, batch: pl.DataFrame, offset: int, label: str, words: bool = False) -> np.ndarray:
    """The seed-independent digest of each row's id (or of its corpus-wide position without an id column).

    With `words` (integer ids only) the ids' words instead (`stages._hashing.id_words`, often a view
    of the column): their digest is word * _GOLDEN, which the hash loop multiplies in cache.
    """
    if stage.id_column is None:
        return id_digest(pl.Series(np.arange(offset, offset + batch.height, dtype=np.int64)))
    ids = batch[stage.id_column]
    if ids.null_count():
        raise InputDataError(f"id column '{stage.id_column}' has null values; every row needs an id",
                             param="id_column", file=label)
    return id_words(ids) if words else id_digest(ids)


def source_ids(stage: Any, batch: pl.DataFrame, offset: int) -> pl.Series:
    if stage.id_column is None:
        return pl.Series("source_id", np.arange(offset, offset + batch.height, dtype=np.int64))
    return batch[stage.id_column].alias("source_id")


def as_id_dtype(stage: Any, ids: pl.Series, schema: pl.Schema, file: str | None) -> pl.Series:
    """`source_id` keeps the data's id type, so added rows from `source` concatenate with the rest."""
    if not stage.id_column or ids.dtype == schema[stage.id_column]:
        return ids
    try:
        return ids.cast(schema[stage.id_column], strict=True)
    except pl.exceptions.InvalidOperationError:
        raise InputDataError(
            f"ids of input 'source' ({ids.dtype}) do not convert to the data's id type "
            f"({schema[stage.id_column]}); give both tables the same id type", param="id_column", file=file,
        ) from None


def decorate(label: str, batch: pl.DataFrame, noisy: pl.Series, clean: pl.Series, is_noisy: np.ndarray | pl.Series,
             origin: str, source_id: pl.Series) -> pl.DataFrame:
    """Put the noisy label in place and append the provenance columns.

    `origin` is 'clean' or 'added' for the whole batch, or 'flipped' for the rows that are noisy.
    """
    if origin == "flipped":
        origin_expr = pl.when(pl.col("is_noisy")).then(pl.lit("flipped")).otherwise(pl.lit("clean"))
    else:
        origin_expr = pl.lit(origin, dtype=pl.String)
    return batch.with_columns(
        noisy.alias(label),
        clean.alias("clean_label"),
        pl.Series("is_noisy", is_noisy, dtype=pl.Boolean),
        source_id,
    ).with_columns(origin_expr.alias("noise_origin")).select([*batch.columns, *NOISE_COLUMNS])


def transitions(classes: pl.Series, counts: np.ndarray, requested: np.ndarray | None,
                ood_counts: np.ndarray | None = None) -> pl.DataFrame:
    """The realised clean x noisy counts (and the requested ones), one row per cell; `source` rows last."""
    k = classes.len()
    grid_clean = classes.gather(np.repeat(np.arange(k), k))
    grid_noisy = classes.gather(np.tile(np.arange(k), k))
    cols: dict[str, Any] = {"clean_label": grid_clean, "label": grid_noisy,
                            "count": pl.Series(counts.reshape(-1), dtype=pl.Int64)}
    if requested is not None:
        cols["requested_count"] = pl.Series(requested.reshape(-1), dtype=pl.Float64)
    table = pl.DataFrame(cols)
    if ood_counts is not None:
        ood = pl.DataFrame({"clean_label": pl.Series([None] * k, dtype=classes.dtype), "label": classes,
                            "count": pl.Series(ood_counts, dtype=pl.Int64)})
        table = pl.concat([table, ood], how="diagonal_relaxed")
    return table
