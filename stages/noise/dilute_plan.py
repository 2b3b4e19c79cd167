"""The plan of one dilute run: the confusing distributions, how many rows, from which pool, which picked.

Built in `finish`, from the broadcast (classes, confusion) and the merged label pass over the data;
a `source` input (out-of-distribution inputs) is scanned here, once, while its rows are spilled for
the cycles (see `stages.noise.pool`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.columns import is_text
from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.stage import Context
from stages._hashing import stream_key
from stages._vectors import vector_matrix
from stages.noise.counts import dense_counts, hash_collision, keyed_chunked, round_half_up
from stages.noise.params import check_stochastic
from stages.noise.rows import batch_rows, class_index, class_positions, digests


def confusion_matrix(stage: Any, ctx: Context, classes: pl.Series, centroids: np.ndarray | None,
                     file: str | None) -> np.ndarray:
    """C[i] = distribution of the structured label for clean class i (row-stochastic); `file`, the data's, is named
    where `confusion` does not fit its classes."""
    k = classes.len()
    c = stage.confusion
    if isinstance(c, dict):
        conf = np.full((k, k), 1.0 / k)  # classes the mapping leaves out get no preferred confusion
        src = class_positions(classes, list(c), "confusion", file)
        dst = class_positions(classes, list(c.values()), "confusion", file)
        conf[src] = 0.0
        conf[src, dst] = 1.0
        return conf
    if isinstance(c, list):
        return check_stochastic("confusion", c, k, file)
    if c == "derangement":
        rng = ctx.rng("label_noise", "derangement")
        while True:
            perm = rng.permutation(k)
            if not np.any(perm == np.arange(k)):
                break
        return np.eye(k)[perm]
    dist = ((centroids[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    return np.eye(k)[dist.argmin(axis=1)]


def centroids(stage: Any, data: Dataset, classes: pl.Series) -> np.ndarray:
    """Mean `feature_column` vector per class, summed batch by batch in input order (one fixed order)."""
    sums, counts = None, np.zeros(classes.len())
    for batch in data.iter_batches(batch_rows(data), columns=[stage.label_column, stage.feature_column]):
        x = vector_matrix(batch[stage.feature_column], "feature_column", finite=True, file=data.label)
        idx = class_index(batch[stage.label_column], classes)
        if sums is None:
            sums = np.zeros((classes.len(), x.shape[1]))
        np.add.at(sums, idx, x)
        counts += np.bincount(idx, minlength=classes.len())
    return sums / np.maximum(counts, 1)[:, None]


def dilute_broadcast(stage: Any, ctx: Context, data: Dataset, classes: pl.Series, has_source: bool) -> dict[str, Any]:
    """What every part of a dilute run shares: centroids (when needed) and the confusing distributions."""
    out: dict[str, Any] = {"centroids": None, "conf": None, "conf_cdf": None}
    if stage.noise_kind != "structured":
        return out
    if stage.confusion == "centroid" or has_source:
        if not stage.feature_column:
            raise ParamError("feature_column", "is required by confusion 'centroid'")
        out["centroids"] = centroids(stage, data, classes)
    k = classes.len()
    out["conf"] = confusion_matrix(stage, ctx, classes, out["centroids"], data.label)
    cdf = (np.arange(k)[:, None] + np.cumsum(out["conf"], axis=1)).reshape(-1)
    cdf[k - 1 :: k] = np.arange(1, k + 1)  # rows end exactly at the next row's start
    out["conf_cdf"] = cdf
    return out


def check_source(stage: Any, data: Dataset, pool: Dataset, structured: bool) -> None:
    needed = [c for c in data.columns if c != stage.label_column]
    missing = [c for c in needed if c not in pool.columns]
    if missing:
        raise InputDataError(
            f"input 'source' lacks column(s) {missing}; added rows keep every data column except the label",
            file=pool.label,
        )
    if structured and not stage.feature_column:
        raise ParamError("feature_column", "structured noise on a 'source' input needs a vector column to "
                         "find each out-of-distribution input's nearest class")


def value_kind(dtype: Any) -> str:
    """What a column holds, as far as an added row's values may be cast between the data's and the source's types:
    text, integers, floats, vectors of one of these (a list or array), or the type itself (booleans, dates...)."""
    if is_text(dtype):
        return "text"
    if dtype.is_integer():
        return "integers"
    if dtype.is_float():
        return "floats"
    if isinstance(dtype, (pl.List, pl.Array)):
        return f"vectors of {value_kind(dtype.inner)}"
    return str(dtype.base_type())


def _fits(theirs: Any, ours: Any) -> bool:
    """Can a source value of type `theirs` be appended as type `ours` and still say the same: the same kind,
    integers as floats, nulls as anything, and vectors whose items fit (`List(String)` is no `List(Float64)`)."""
    vectors = (pl.List, pl.Array)
    if isinstance(ours, vectors) and isinstance(theirs, vectors):
        return _fits(theirs.inner, ours.inner)
    mine, other = value_kind(ours), value_kind(theirs)
    return mine == other or other == "Null" or (mine, other) == ("floats", "integers")


def refuse_source_kinds(stage: Any, data: dict[str, Any], source: dict[str, Any], file: str | None) -> None:
    """Added rows from `source` take the data's column types (they are appended to it): a source column of another
    kind, e.g. Int64 where the data's text is String, would be cast without a word (numbers written as text).
    `data` and `source` are polars schemas (a type of None, not declared, is not checked); the label column is
    not read from source, and the id column has its own conversion (`rows.as_id_dtype`)."""
    for column, dtype in data.items():
        theirs = source.get(column)
        if column in (stage.label_column, stage.id_column) or dtype is None or theirs is None:
            continue
        if not _fits(theirs, dtype):
            raise InputDataError(
                f"input 'source' column '{column}' is {theirs} ({value_kind(theirs)}), but the data's is {dtype} "
                f"({value_kind(dtype)}); added rows are appended to the data, so cast it to {dtype} first",
                file=file)


def nearest_class(stage: Any, batch: pl.DataFrame, centroids: np.ndarray, label: str) -> np.ndarray:
    x = vector_matrix(batch[stage.feature_column], "feature_column", finite=True, file=label)
    if x.shape[1] != centroids.shape[1]:
        raise InputDataError(f"'{stage.feature_column}' vectors in 'source' have {x.shape[1]} values, "
                             f"the data's have {centroids.shape[1]}", param="feature_column", file=label)
    d = (x**2).sum(1)[:, None] - 2 * x @ centroids.T + (centroids**2).sum(1)[None, :]
    return d.argmin(axis=1)


def refuse_id_overflow(stage: Any, data: Dataset, id_dtype: pa.DataType, max_id: int, added: int) -> None:
    """Added rows' integer ids continue after the largest; refuse in one line where they would not fit the id type
    (or Int64, the type they are counted in): they were a cast or overflow error."""
    top = min(int(np.iinfo(id_dtype.to_pandas_dtype()).max), int(np.iinfo(np.int64).max))
    if added and max_id > top - added:
        raise InputDataError(
            f"added rows take integer ids after the largest, {max_id}, and {added:,} more would pass {top}, the "
            f"largest usable in {id_dtype}; cast column '{stage.id_column}' to a wider integer or to strings",
            param="id_column", file=data.label)


class Dilution:
    """The plan and running counts of one dilute-mode run (how many rows, from which pool, which picked)."""

    def __init__(self, stage: Any, ctx: Context, data: Dataset, source: Dataset | None, broadcast: dict,
                 class_idx: np.ndarray, digest: np.ndarray, max_id: int | None):
        self.ctx, self.data = ctx, data
        self.classes, self.class_rows = broadcast["classes"], broadcast["class_rows"]
        self.k, self.n = self.classes.len(), data.num_rows
        self.added = round_half_up(stage.alpha * self.n)
        self.ood = source is not None
        self.pool = source if source is not None else data
        self.p = self.pool.num_rows
        self.rows, self.pool_rows = batch_rows(data), batch_rows(self.pool)
        self.structured = stage.noise_kind == "structured"
        if self.ood:
            check_source(stage, data, self.pool, self.structured)
        self.centroids, self.conf, self.conf_cdf = broadcast["centroids"], broadcast["conf"], broadcast["conf_cdf"]
        self.digest, self.true_idx, self.confusing = digest, class_idx, None
        # Integer ids: `digest` holds the ids' words (the digest is word * _GOLDEN, see `keyed_words`).
        self.words = bool(broadcast["integer_ids"])
        self.full_cycles, self.remainder = divmod(self.added, self.p) if self.p else (0, 0)
        self.cycles = self.full_cycles + (1 if self.remainder else 0)
        id_dtype = data.schema.field(stage.id_column).type if stage.id_column else None
        self.next_int_id = None
        if stage.id_column and pa.types.is_integer(id_dtype):
            self.next_int_id = max_id + 1 if max_id is not None else None
            if self.next_int_id is not None:
                refuse_id_overflow(stage, data, id_dtype, max_id, self.added)
        self.schema = data.lazy().collect_schema()
        # Class sizes not counted by the broadcast: a first, full cycle over the data draws every row once,
        # so its transition counts' row sums are those sizes (`count_classes`); otherwise count them now.
        self.counting_classes = self.class_rows is None and not self.ood and self.full_cycles > 0
        if self.class_rows is None and not self.counting_classes:
            self.class_rows = dense_counts(class_idx, 0, self.k)
        self.counts = np.zeros((self.k, self.k), dtype=np.int64) if self.counting_classes else \
            np.diag(self.class_rows).astype(np.int64)
        self.ood_counts = np.zeros(self.k, dtype=np.int64)
        self.pick = None

    def count_classes(self) -> None:
        """After a first, full cycle over the data (see `counting_classes`): the class sizes, and the
        clean rows' cells on the diagonal."""
        if self.counting_classes:
            self.class_rows = self.counts.sum(axis=1)
            self.counts += np.diag(self.class_rows)
            self.counting_classes = False

    def scan_source(self, stage: Any, batches: Any) -> None:
        """Digests and nearest classes of the `source` pool, from its batches (read once, in row order)."""
        parts, nearest, off = [], [], 0
        for batch in batches:
            parts.append(digests(stage, batch, off, self.pool.label))
            if self.structured:
                nearest.append(nearest_class(stage, batch, self.centroids, self.pool.label))
            off += batch.height
        self.digest = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
        self.words = False
        self.true_idx = np.full(self.digest.size, -1, dtype=np.int32)
        self.confusing = np.concatenate(nearest) if nearest else None

    def choose_partial_cycle(self, stage: Any) -> None:
        """The pool rows of the last, partial cycle: the `remainder` smallest pick hashes."""
        if not self.remainder:
            return
        h = keyed_chunked(self.digest, stream_key(self.ctx.seed, "label_noise", "dilute-pick"), words=self.words)
        cut = np.partition(h, self.remainder - 1)[self.remainder - 1]
        self.pick = h <= cut
        if int(self.pick.sum()) != self.remainder:  # rows tie at the cut: see `hash_collision`
            raise hash_collision(stage.id_column, np.flatnonzero(h == cut), self.pool.label,
                                 "source" if self.ood else "data")
