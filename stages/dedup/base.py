"""What the three dedup stages share: inputs, keep policies, the partitioned passes, and the outputs.

Every dedup stage is a partitioned stage (`pipeline.partitioned`) over `data`, so memory holds
per-row features (a hash, LSH band keys or a signature, a vector), never the texts, and an
executor may fan the first pass out:

1. `broadcast` gathers the features of `reference` (if given) once; `map` gathers the features
   of one partition of `data`; `merge` concatenates adjacent partitions' features (in input
   order, so every partitioning numbers rows the same way).
2. `finish` turns all features into duplicate pairs (`duplicate_pairs`, the stage's own),
   `clusters.resolve` joins them into clusters and picks the row each keeps;
3. the data is then passed again, partition by partition (`outputs.DedupRows`, on the workers on
   Ray): kept rows are the step's table, removed rows go to the side output `removed` with the
   cluster, the row they duplicate, the similarity and the reason; `clusters` lists every member
   of every cluster of two or more rows. Nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.partitioned import Partition, PartitionedStage
from pipeline.stage import Context
from stages.dedup.clusters import resolve
from stages.dedup.outputs import ADDED_COLUMNS, DedupRows

KEEP_POLICIES = ("first", "longest", "lowest_id", "column")
# Rows per first-pass batch: large enough to vectorise, small enough that per-byte hashing stays small.
SCAN_BATCH_ROWS = 8_192


@dataclass
class Scan:
    """Per-row facts of reference + data gathered in the first pass (features are the stage's own)."""

    n_reference: int = 0
    ids: list[pl.Series] = field(default_factory=list)
    lengths: list[np.ndarray] = field(default_factory=list)
    keep_values: list[pl.Series] = field(default_factory=list)
    features: list[Any] = field(default_factory=list)
    # How to reach rows again (a stage may re-read the few it must look at): the reference here, the
    # data where its partitions are (`Context.gather_rows`; data rows numbered from 0).
    reference_source: Dataset | None = None
    gather_rows: Any = None
    # A shuffling stage's reducers' results, in bucket order (`PartitionedStage.shuffled`).
    shuffled: list | None = None

    @property
    def n(self) -> int:
        return sum(len(i) for i in self.ids)

    def extend(self, other: Scan) -> Scan:
        """This scan's rows followed by `other`'s (the merge of adjacent partitions)."""
        return Scan(self.n_reference, self.ids + other.ids, self.lengths + other.lengths,
                    self.keep_values + other.keep_values, self.features + other.features,
                    shuffled=other.shuffled if other.shuffled is not None else self.shuffled)

    def all_ids(self) -> pl.Series:
        return pl.concat([i.cast(pl.String) for i in self.ids]) if self.ids else pl.Series([], dtype=pl.String)


@dataclass
class Broadcast:
    """What every partition's map needs: the label of `data` (for errors) and the reference's scan."""

    data_label: str
    reference: Scan
    # A shuffling stage's reference rows' share of each bucket (ahead of every partition's).
    shuffle_parts: list = field(default_factory=list)


class DedupStage(PartitionedStage):
    """Base of `dedup_exact`, `dedup_minhash` and `dedup_semantic` (not a stage itself)."""

    inputs: ClassVar[tuple[str, ...]] = ("data", "reference")
    optional_inputs: ClassVar[tuple[str, ...]] = ("reference",)
    partition_input: ClassVar[str] = "data"
    reason: ClassVar[str] = "duplicate"
    # Columns of the input the first pass reads besides id and keep column (set per stage).
    keep_policies: ClassVar[tuple[str, ...]] = KEEP_POLICIES

    id_column: str
    keep: str
    keep_column: str | None
    keep_descending: bool
    within_data: bool

    # -- parameters -----------------------------------------------------------------------------

    def validate_keep(self) -> None:
        if self.keep not in self.keep_policies:
            raise ParamError("keep", f"must be one of {', '.join(self.keep_policies)}, got {self.keep!r}")
        if self.keep == "column" and not self.keep_column:
            raise ParamError("keep_column", "is required when keep is 'column' (the column whose best value wins)")

    def scan_columns(self) -> list[str]:
        """Columns the first pass reads from each input (the stage's own plus id and keep column)."""
        raise NotImplementedError

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        needed: dict[str, str | None] = {self.id_column: "id_column"}
        if self.keep == "column" and self.keep_column:
            needed[self.keep_column] = "keep_column"
        needed.update(self.feature_columns())
        return {"data": dict(needed), "reference": dict(needed)}

    def feature_columns(self) -> dict[str, str | None]:
        return {}

    # -- the stage-specific part ----------------------------------------------------------------

    def batch_features(self, batch: pl.DataFrame, label: str) -> Any:
        """Features of one batch of rows (a hash per row, signatures, vectors)."""
        raise NotImplementedError

    def lengths(self, batch: pl.DataFrame) -> np.ndarray:
        """Row length for keep='longest' (characters of the text by default)."""
        return np.zeros(batch.height, np.int64)

    def duplicate_pairs(self, ctx: Context, scan: Scan) -> tuple[np.ndarray, Any]:
        """(pairs (m, 2) of row positions, anything `similarity` needs) from the gathered features."""
        raise NotImplementedError

    def similarity(self, scan: Scan, state: Any, rows: np.ndarray, kept: np.ndarray) -> np.ndarray:
        """Similarity of each row to the row its cluster keeps."""
        return np.ones(rows.size, np.float64)

    def extra_priority(self, scan: Scan, state: Any) -> list[np.ndarray] | None:
        """Sort keys for a keep policy of the stage's own (e.g. nearest the centroid)."""
        return None

    def gathered(self, scan: Scan) -> Scan:
        """A partition's scan as its partial state (a stage may condense its features here)."""
        return scan

    def release(self, state: Any) -> None:
        """Free what `duplicate_pairs` holds outside memory (e.g. spilled shingle sets)."""

    # -- the partitioned passes -----------------------------------------------------------------

    def broadcast(self, ctx: Context, inputs: dict[str, Dataset]) -> Broadcast:
        data, reference = inputs["data"], inputs.get("reference")
        clash = [c for c in ADDED_COLUMNS if c in data.columns]
        if clash:
            raise InputDataError(f"input 'data' already has a column '{clash[0]}', which the side output "
                                 f"'removed' adds; rename it first", stage=self.name, file=data.label)
        scan = Scan()
        if reference is not None:
            self._scan(reference.iter_batches(SCAN_BATCH_ROWS, columns=self._columns()), reference.label, scan)
            scan.n_reference = scan.n
        return Broadcast(data.label, self.gathered(scan))

    def map(self, partition: Partition, broadcast: Broadcast) -> Scan:
        scan = Scan()
        self._scan(partition.iter_batches(SCAN_BATCH_ROWS, columns=self._columns()), broadcast.data_label, scan)
        return self.gathered(scan)

    def merge(self, a: Scan, b: Scan) -> Scan:
        return a.extend(b)

    def finish(self, ctx: Context, state: Scan | None, broadcast: Broadcast,
               inputs: dict[str, Dataset]) -> DedupRows:
        data, reference = inputs["data"], inputs.get("reference")
        scan = broadcast.reference.extend(state if state is not None else Scan())
        scan.reference_source, scan.gather_rows = reference, ctx.gather_rows
        pairs, pair_state = self.duplicate_pairs(ctx, scan)
        try:
            resolution = resolve(scan.n_reference, scan.n - scan.n_reference, pairs, self.priority(scan, pair_state),
                                 within_data=self.within_data or reference is None)
            similarity = np.ones(scan.n, np.float64)
            in_cluster = np.flatnonzero(resolution.size >= 2)
            similarity[in_cluster] = self.similarity(scan, pair_state, in_cluster, resolution.kept[in_cluster])
        finally:
            self.release(pair_state)
        return DedupRows(self.reason, data.lazy().head(0).collect().schema, resolution, similarity, scan.all_ids())

    def _columns(self) -> list[str]:
        return list(dict.fromkeys(self.scan_columns()))

    def _scan(self, batches: Iterator[pl.DataFrame], label: str, scan: Scan) -> None:
        for batch in batches:
            scan.ids.append(batch.get_column(self.id_column))
            scan.lengths.append(self.lengths(batch))
            if self.keep == "column" and self.keep_column:
                scan.keep_values.append(batch.get_column(self.keep_column))
            scan.features.append(self.batch_features(batch, label))

    def priority(self, scan: Scan, state: Any) -> list[np.ndarray]:
        """Sort keys of the keep policy over all rows (lower is kept first; see clusters.keep_rank)."""
        n = scan.n
        if self.keep == "first":
            return []
        if self.keep == "longest":
            return [-np.concatenate(scan.lengths).astype(np.int64)] if n else []
        if self.keep == "lowest_id":
            return [_rank(_concat_relaxed(scan.ids), descending=False)]
        if self.keep == "column":
            return [_rank(_concat_relaxed(scan.keep_values), descending=self.keep_descending)]
        extra = self.extra_priority(scan, state)
        if extra is None:
            raise ParamError("keep", f"'{self.keep}' is not a keep policy of '{self.name}'")
        return extra


class TextDedupStage(DedupStage):
    """A dedup stage over a text column (`dedup_exact`, `dedup_minhash`): reads id, text and keep column."""

    text_column: str

    def feature_columns(self) -> dict[str, str | None]:
        return {self.text_column: "text_column"}

    def scan_columns(self) -> list[str]:
        return [self.id_column, self.text_column] + ([self.keep_column] if self.keep == "column" else [])

    def lengths(self, batch: pl.DataFrame) -> np.ndarray:
        return batch.get_column(self.text_column).str.len_chars().fill_null(0).to_numpy().astype(np.int64)

    def texts(self, batch: pl.DataFrame, label: str) -> pl.Series:
        return text_series(batch, self.text_column, self.id_column, label, self.name)


def _concat_relaxed(parts: list[pl.Series]) -> pl.Series:
    """One series of batches whose types may differ (int ids in data, string ids in reference): the supertype."""
    return pl.concat([p.rename("v").to_frame() for p in parts], how="vertical_relaxed").get_column("v")


def _rank(values: pl.Series, descending: bool) -> np.ndarray:
    """Dense rank of each value (nulls last), as an int64 sort key."""
    ranks = values.rank(method="dense", descending=descending).fill_null(values.len() + 1)
    return ranks.cast(pl.Int64).to_numpy()


def text_series(batch: pl.DataFrame, column: str, id_column: str, label: str, stage: str) -> pl.Series:
    """The text column of a batch, refusing non-text, null and empty texts with one clear line."""
    texts = batch.get_column(column)
    if texts.dtype != pl.String:
        raise InputDataError(f"column '{column}' is {texts.dtype}, not text", stage=stage, param="text_column",
                             file=label)
    blank = texts.is_null() | (texts.str.strip_chars().str.len_bytes() == 0)
    if blank.any():
        count = int(blank.sum())
        raise InputDataError(
            f"column '{column}' has {count} null or empty text(s) (first: {id_column} {batch.get_column(id_column)[int(blank.arg_true()[0])]!r}); "
            "drop them first, e.g. with a length_filter step", stage=stage, param="text_column", file=label)
    return texts
