"""What the three dedup stages share: inputs, keep policies, the partitioned passes, and the outputs.

Every dedup stage is a partitioned stage (`pipeline.partitioned`) over `data`, so memory holds
per-row features (a hash, LSH band keys, a vector), never the texts, and an executor may fan the
first pass out:

1. `broadcast` gathers the features of `reference` (if given) once; `map` gathers the features
   of one partition of `data`. The text stages shuffle theirs (`split`: one key column per
   bucket; `reduce`: equal keys in a bucket become pairs), so what merges is a row count per
   batch; `merge` concatenates adjacent partitions' states in input order, so every partitioning
   numbers rows the same way; semantic dedup shuffles its rows' vectors by k-means cluster, and
   its reducers make the greedy pass, so what reaches `finish` is pairs there too.
2. `finish` turns the features into duplicate pairs (`duplicate_pairs`, the stage's own), reads
   the ids and keep-policy values of the rows in some pair (`row_facts`: where the partitions
   are), and `clusters.resolve` joins the pairs into clusters and picks the row each keeps. The
   driver's memory follows the duplicate rows, not the corpus (only the id check before the passes,
   `check_input_data`, holds 8 bytes a row, and frees them).
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

from pipeline.columns import is_text
from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.partitioned import Partition, PartitionedStage
from pipeline.stage import Context
from stages._ids import refuse_bad_id_column, refuse_nans
from stages.dedup.clusters import members_of, resolve
from stages.dedup.outputs import ADDED_COLUMNS, DedupRows
from stages.dedup.shuffle import band_pairs

KEEP_POLICIES = ("first", "longest", "lowest_id", "column")
# Rows per first-pass batch: large enough to vectorise, small enough that per-byte hashing stays small.
SCAN_BATCH_ROWS = 8_192


@dataclass
class Scan:
    """Per-row facts of reference + data gathered in the first pass (features are the stage's own).

    The data's ids, lengths and keep-column values are read by a map only for a stage whose reducers
    rank rows (`facts_to_reducers`), which sends them on with the rows; the driver reads them later for
    the rows that end up in a cluster (`DedupStage.row_facts`), so the state of a partition is its
    features and its row count. The reference's are always kept: it is broadcast to every map anyway.
    """

    n_reference: int = 0
    counts: list[int] = field(default_factory=list)
    # Position of this scan's first row in reference + data numbering (a map's: the reference's rows
    # plus its partition's base), for shuffle parts that name their rows.
    first_row: int = 0
    ids: list[pl.Series] = field(default_factory=list)
    lengths: list[np.ndarray] = field(default_factory=list)
    keep_values: list[pl.Series] = field(default_factory=list)
    features: list[Any] = field(default_factory=list)
    # How to reach rows again (a stage may re-read the few it must look at): the reference here, the
    # data where its partitions are (`Context.gather_rows`; data rows numbered from 0), and, on Ray, a
    # function of pairs of data rows computed where their values meet (`Context.join_rows`).
    reference_source: Dataset | None = None
    gather_rows: Any = None
    join_rows: Any = None
    # A shuffling stage's reducers' results, in bucket order (`PartitionedStage.shuffled`).
    shuffled: list | None = None

    @property
    def n(self) -> int:
        return sum(self.counts)

    def extend(self, other: Scan) -> Scan:
        """This scan's rows followed by `other`'s (the merge of adjacent partitions)."""
        return Scan(self.n_reference, self.counts + other.counts, self.first_row, self.ids + other.ids,
                    self.lengths + other.lengths, self.keep_values + other.keep_values,
                    self.features + other.features,
                    shuffled=other.shuffled if other.shuffled is not None else self.shuffled)


@dataclass
class RowFacts:
    """What the keep policy and the outputs read of some rows: ids, and lengths or keep-column values."""

    rows: np.ndarray  # sorted positions (reference + data numbering)
    ids: pl.Series
    lengths: np.ndarray | None = None  # with keep='longest'
    keep_values: pl.Series | None = None  # with keep='column'


@dataclass
class Broadcast:
    """What every partition's map needs: the label of `data` (for errors) and the reference's scan."""

    data_label: str
    reference: Scan
    # A shuffling stage's reference rows' share of each bucket (ahead of every partition's).
    shuffle_parts: list = field(default_factory=list)
    # How many key ranges each shuffled key column is cut into (`DedupStage.key_ranges`), chosen once here
    # from the input's size, so every map cuts its keys the same way.
    key_ranges: int = 1
    # What a stage learned from a sample before the maps (`DedupStage.train`: semantic dedup's k-means).
    trained: Any = None


class DedupStage(PartitionedStage):
    """Base of `dedup_exact`, `dedup_minhash` and `dedup_semantic` (not a stage itself)."""

    inputs: ClassVar[tuple[str, ...]] = ("data", "reference")
    optional_inputs: ClassVar[tuple[str, ...]] = ("reference",)
    partition_input: ClassVar[str] = "data"
    reason: ClassVar[str] = "duplicate"
    keep_policies: ClassVar[tuple[str, ...]] = KEEP_POLICIES
    # True for a stage whose reducers rank their rows by the keep policy (semantic dedup's greedy pass): its
    # maps read every row's ids and keep values and send them to the reducers with the rows (`split`).
    facts_to_reducers: ClassVar[bool] = False
    # 3: removed.duplicate_of and clusters.id keep the id column's type (were strings); 2: partial states without
    # per-row ids (checkpoints of version 1 are mapped again).
    version: ClassVar[str] = "3"

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
        if self.keep_column and self.keep != "column":  # else ignored: the rows kept were not its best
            raise ParamError("keep_column", f"is used only with keep: column, but keep is {self.keep!r}; set keep: "
                             "column to keep each cluster's best value, or leave keep_column out")

    def scan_columns(self) -> list[str]:
        """Columns the first pass reads from each input (the stage's own plus id and keep column)."""
        raise NotImplementedError

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        # The id and keep columns last: a column named by two parameters is reported under one of these.
        needed: dict[str, str | None] = {**self.feature_columns(), self.id_column: "id_column"}
        if self.keep == "column" and self.keep_column:
            needed[self.keep_column] = "keep_column"
        return {"data": dict(needed), "reference": dict(needed)}

    def required_column_types(self) -> dict[str, dict[str, str]]:
        # A list or struct id was refused as a repeated id over many lines. The keep column is ranked: numbers,
        # booleans, dates, times or an Enum ("rank"); a list has no best value, and strings ranked by their characters
        # ("9.5" above "10.2" of a score read as text), so a row was kept by an order no one meant.
        kinds = super().required_column_types()
        for columns in kinds.values():
            columns.setdefault(self.id_column, "scalar")
            if self.keep == "column" and self.keep_column:
                columns[self.keep_column] = "rank"
        return kinds

    def feature_columns(self) -> dict[str, str | None]:
        return {}

    def side_output_names(self) -> tuple[str, ...]:
        return ("removed", "clusters")  # `DedupRows`: removed rows per partition, then the clusters

    def output_schema(self, inputs: dict[str, Any]) -> None:
        """No columns declared; `pipeline validate` knows which inputs are wired (see `check_input_data`)."""
        self._refuse_within_reference_only(inputs)
        return None

    def _refuse_within_reference_only(self, inputs: dict[str, Any]) -> None:
        if not self.within_data and inputs.get("reference") is None:
            raise ParamError("within_data", "is false (remove only rows duplicating the reference), but the step has "
                             "no `reference` input; give it one, or leave within_data out")

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        """Null or repeated ids (the side outputs name rows by id: 'b duplicate_of a' must say which a, and a kept
        row's id must name one row) and values the keep policy cannot rank, refused before the passes, over each
        whole input (the passes read ids and keep values of clustered rows only). The id check streams the
        column holding 8 bytes an id on the driver, released before the passes (`refuse_bad_id_column`: about
        0.1 s per million ids). within_data=False with no reference is refused: it was ignored, and duplicates
        within data removed all the same."""
        self._refuse_within_reference_only(inputs)
        for name in ("data", "reference"):
            if inputs.get(name) is None:
                continue
            refuse_bad_id_column(inputs[name], self.id_column, input_name=name)
            if self.keep == "column" and self.keep_column:
                refuse_nans(inputs[name], self.keep_column, "a NaN cannot be ranked (it was kept as if the highest "
                            "value)", param="keep_column", input_name=name)

    # -- the stage-specific part ----------------------------------------------------------------

    def batch_features(self, batch: pl.DataFrame, label: str) -> Any:
        """Features of one batch of rows (a hash per row, signatures, vectors)."""
        raise NotImplementedError

    def lengths(self, batch: pl.DataFrame) -> np.ndarray:
        """Row length for keep='longest' (characters of the text by default)."""
        return np.zeros(batch.height, np.int64)

    def fact_columns(self) -> list[str]:
        """Columns `row_facts` reads: the id, and what the keep policy compares."""
        return [self.id_column] + ([self.keep_column] if self.keep == "column" and self.keep_column else [])

    def duplicate_pairs(self, ctx: Context, scan: Scan) -> tuple[np.ndarray, Any]:
        """(pairs (m, 2) of row positions, anything `similarity` needs) from the gathered features."""
        raise NotImplementedError

    def similarity(self, scan: Scan, state: Any, rows: np.ndarray, kept: np.ndarray) -> np.ndarray:
        """Similarity of each row to the row its cluster keeps."""
        return np.ones(rows.size, np.float64)

    def extra_priority(self, rows: np.ndarray, state: Any) -> list[np.ndarray] | None:
        """Sort keys of `rows` for a keep policy of the stage's own (e.g. nearest the centroid)."""
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
            self._scan(reference.iter_batches(SCAN_BATCH_ROWS, columns=self._columns()), reference.label, scan,
                       facts=True)
            scan.n_reference = scan.n
        broadcast = Broadcast(data.label, self.gathered(scan), key_ranges=self.key_ranges(scan.n + data.num_rows))
        broadcast.trained = self.train(ctx, broadcast, inputs)
        if self.shuffle_buckets(broadcast):
            broadcast.reference, broadcast.shuffle_parts = self.split(broadcast.reference, broadcast)
        return broadcast

    def train(self, ctx: Context, broadcast: Broadcast, inputs: dict[str, Dataset]) -> Any:
        """What every map needs that only a sample of the rows can give (None here), before the reference is split."""
        return None

    def key_ranges(self, rows: int) -> int:
        """Key ranges per shuffled key column for `rows` rows of reference + data (see `Broadcast`): one here."""
        return 1

    def map(self, partition: Partition, broadcast: Broadcast) -> Scan:
        scan = Scan(first_row=broadcast.reference.n_reference + partition.base)
        self._scan(partition.iter_batches(SCAN_BATCH_ROWS, columns=self._columns()), broadcast.data_label, scan,
                   facts=self.facts_to_reducers)
        return self.gathered(scan)

    def merge(self, a: Scan, b: Scan) -> Scan:
        return a.extend(b)

    # A text stage shuffles keys (`split` gives one key column per bucket): rows with equal keys in a
    # bucket become pairs in its reducer, so the driver gets pairs, never every row's key.

    def reduce(self, bucket: int, parts: list[np.ndarray], broadcast: Broadcast) -> np.ndarray:
        return band_pairs([broadcast.shuffle_parts[bucket], *parts])

    def shuffled(self, scan: Scan | None, results: list[np.ndarray]) -> Scan:
        scan = scan if scan is not None else Scan()
        scan.shuffled = results
        return scan

    def finish(self, ctx: Context, state: Scan | None, broadcast: Broadcast,
               inputs: dict[str, Dataset]) -> DedupRows:
        data, reference = inputs["data"], inputs.get("reference")
        scan = broadcast.reference.extend(state if state is not None else Scan())
        scan.reference_source, scan.gather_rows, scan.join_rows = reference, ctx.gather_rows, ctx.join_rows
        pairs, pair_state = self.duplicate_pairs(ctx, scan)
        try:
            members = members_of(pairs)
            facts = self.row_facts(scan, members.rows)  # (ids are unique: `check_input_data`)
            resolution = resolve(scan.n_reference, scan.n - scan.n_reference, members, self.priority(facts, pair_state),
                                 within_data=self.within_data or reference is None)
            similarity = self.similarity(scan, pair_state, resolution.members, resolution.kept)
        finally:
            self.release(pair_state)
        schemas = [ds.lazy().head(0).collect().schema for ds in (data, reference) if ds is not None]
        # duplicate_of names data or reference rows: their ids' common type (int data, text reference: text)
        id_type = concat_relaxed([pl.Series([], dtype=schema[self.id_column]) for schema in schemas]).dtype
        return DedupRows(self.reason, schemas[0], resolution, similarity, facts.ids, id_type)

    def row_facts(self, scan: Scan, rows: np.ndarray) -> RowFacts:
        """Ids and keep-policy values of the sorted `rows`: from the scan where it holds them (the
        reference), else read where the data's partitions are."""
        held = scan.n_reference
        # Ids of reference and data meet in one column of their common type (int ids in data and string
        # ids in the reference are compared as strings), whichever rows are asked for.
        parts = [(scan.ids[0].head(0), np.zeros(0, np.int64),
                  scan.keep_values[0].head(0) if scan.keep_values else None)] if scan.ids else []
        if (rows < held).any():
            inside = rows[rows < held]
            parts.append((concat_relaxed(scan.ids).gather(inside),
                          np.concatenate(scan.lengths)[inside] if self.keep == "longest" else None,
                          concat_relaxed(scan.keep_values).gather(inside) if self.keep == "column" else None))
        if (rows >= held).any():
            parts += scan.gather_rows(partition_row_facts, rows[rows >= held] - scan.n_reference, self)
        if not parts:  # no reference and no row asked for
            return RowFacts(rows, pl.Series([], dtype=pl.String), np.zeros(0, np.int64),
                            pl.Series([], dtype=pl.Null) if self.keep == "column" else None)
        return RowFacts(rows, concat_relaxed([p[0] for p in parts]),
                        np.concatenate([p[1] for p in parts]) if self.keep == "longest" else None,
                        concat_relaxed([p[2] for p in parts]) if self.keep == "column" else None)

    def _columns(self) -> list[str]:
        return list(dict.fromkeys(self.scan_columns()))

    def _scan(self, batches: Iterator[pl.DataFrame], label: str, scan: Scan, facts: bool) -> None:
        for batch in batches:  # (null ids were refused before: `check_input_data`)
            scan.counts.append(batch.height)
            if facts:
                ids, lengths, keep_values = self.batch_facts(batch)
                scan.ids.append(ids)
                if lengths is not None:
                    scan.lengths.append(lengths)
                if keep_values is not None:
                    scan.keep_values.append(keep_values)
            scan.features.append(self.batch_features(batch, label))

    def batch_facts(self, batch: pl.DataFrame) -> tuple[pl.Series, np.ndarray | None, pl.Series | None]:
        """(ids, lengths if keep='longest', keep values if keep='column') of a batch."""
        return (batch.get_column(self.id_column), self.lengths(batch) if self.keep == "longest" else None,
                batch.get_column(self.keep_column) if self.keep == "column" and self.keep_column else None)

    def priority(self, facts: RowFacts, state: Any) -> list[np.ndarray]:
        """Sort keys of the keep policy over `facts`' rows (lower is kept first; see clusters.keep_rank)."""
        if self.keep == "first":
            return []
        if self.keep == "longest":
            return [-facts.lengths.astype(np.int64)]
        if self.keep == "lowest_id":
            return [_rank(facts.ids, descending=False)]
        if self.keep == "column":
            return [_rank(facts.keep_values, descending=self.keep_descending)]
        extra = self.extra_priority(facts.rows, state)
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
        return batch.get_column(self.text_column).cast(pl.String).str.len_chars().fill_null(0).to_numpy().astype(np.int64)

    def fact_columns(self) -> list[str]:
        return super().fact_columns() + ([self.text_column] if self.keep == "longest" else [])

    def texts(self, batch: pl.DataFrame, label: str) -> pl.Series:
        return text_series(batch, self.text_column, self.id_column, label, self.name)


def selected_rows(batches: Iterator[pl.DataFrame], rows: np.ndarray) -> Iterator[tuple[pl.DataFrame, np.ndarray]]:
    """(batch, positions in it) of the sorted `rows` (numbered over `batches`), for each batch holding some."""
    position = 0
    for batch in batches:
        lo, hi = np.searchsorted(rows, [position, position + batch.height])
        if hi > lo:
            yield batch, rows[lo:hi] - position
        position += batch.height


def partition_row_facts(partition: Partition, rows: np.ndarray, stage: DedupStage) -> tuple:
    """`Context.gather_rows` function: `stage.batch_facts` of some sorted rows of one partition."""
    ids, lengths, keep_values = [], [], []
    columns = list(dict.fromkeys(stage.fact_columns()))
    for batch, inside in selected_rows(partition.iter_batches(SCAN_BATCH_ROWS, columns=columns), rows):
        i, n, k = stage.batch_facts(batch[inside])
        ids.append(i)
        lengths.append(n)
        keep_values.append(k)
    return (concat_relaxed(ids), np.concatenate(lengths) if stage.keep == "longest" else None,
            concat_relaxed(keep_values) if stage.keep == "column" else None)


def concat_relaxed(parts: list[pl.Series]) -> pl.Series:
    """One series of batches whose types may differ (int ids in data, string ids in reference): the supertype."""
    return pl.concat([p.rename("v").to_frame() for p in parts], how="vertical_relaxed").get_column("v")


def _rank(values: pl.Series, descending: bool) -> np.ndarray:
    """Dense rank of each value (nulls last), as an int64 sort key (NaN is refused before: `check_input_data`)."""
    ranks = values.rank(method="dense", descending=descending).fill_null(values.len() + 1)
    return ranks.cast(pl.Int64).to_numpy()


def text_series(batch: pl.DataFrame, column: str, id_column: str, label: str, stage: str) -> pl.Series:
    """The text column of a batch, refusing non-text, null and empty texts with one clear line."""
    texts = batch.get_column(column)
    if not is_text(texts.dtype):
        raise InputDataError(f"column '{column}' is {texts.dtype}, not text", stage=stage, param="text_column",
                             file=label)
    texts = texts.cast(pl.String)  # Categorical and Enum hold text too (`pipeline validate` passes them)
    blank = texts.is_null() | (texts.str.strip_chars().str.len_bytes() == 0)
    if blank.any():
        count = int(blank.sum())
        raise InputDataError(
            # Counted in this batch only (a count over the whole input would read every text once more first).
            f"column '{column}' has null or empty texts ({count:,} in one batch; first: {id_column} "
            f"{batch.get_column(id_column)[int(blank.arg_true()[0])]!r}); "
            "drop them first, e.g. with a length_filter step", stage=stage, param="text_column", file=label)
    return texts
