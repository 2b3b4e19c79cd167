"""What a dedup step writes, as a second pass over the data's partitions (`pipeline.row_pass`).

The kept rows are the step's table; the removed rows go to the side output `removed` with the
cluster, the row they duplicate, the similarity and the reason; `clusters` lists every member of
every cluster of two or more rows. Nothing is dropped silently.

The kept and removed rows are the data itself, so they are written partition by partition: on Ray
by one task per partition on the workers (the driver does not read the corpus again), locally as
one stream in input order. Each partition's task gets only its slice of the decision (`payload`):
which of its rows go, their clusters and similarities, and the ids of the rows they duplicate.
`clusters` (one row per clustered row, ids only) and the stats are written on the driver.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.partitioned import Partition
from pipeline.row_pass import RowPass
from pipeline.stage import Context
from stages.dedup.clusters import Resolution, summary

ADDED_COLUMNS = ("cluster_id", "duplicate_of", "duplicate_of_input", "similarity", "reason")


@dataclass
class PartitionDecision:
    """One partition's share: which rows go and, for those, where they went."""

    removed: np.ndarray  # bool, one per row of the partition
    cluster: np.ndarray  # int64, per removed row
    duplicate_of: pl.Series  # id of the kept row, per removed row (the id column's type)
    from_reference: np.ndarray  # bool, per removed row
    similarity: np.ndarray  # float64, per removed row


class DedupRows(RowPass):
    """A dedup step's outputs: kept rows (the table) and `removed`, per partition; `clusters` and stats at the end."""

    outputs = ("", "removed")

    def __init__(self, reason: str, data_schema: pl.Schema, resolution: Resolution, similarity: np.ndarray,
                 ids: pl.Series, id_type: pl.DataType):
        """`similarity` and `ids` are per member of `resolution` (rows in no cluster are kept, unnamed); `id_type`
        is the id column's type (data's and reference's common one), which `duplicate_of` and `clusters.id` keep, so
        they join back to the rows' ids (they were strings, while `id` kept its type)."""
        self.reason = reason
        self.data_schema = data_schema
        self.id_type = id_type
        # The whole decision stays on the driver (see __getstate__): tasks get their payload.
        self.resolution, self.similarity, self.ids = resolution, similarity, ids.cast(id_type)
        self.removed = resolution.removed

    def __getstate__(self) -> dict:
        return {"reason": self.reason, "data_schema": self.data_schema, "id_type": self.id_type}

    def payload(self, partition: Partition) -> PartitionDecision:
        r = self.resolution
        start = r.n_reference + partition.base
        lo, hi = np.searchsorted(r.members, [start, start + partition.num_rows])
        going = lo + np.flatnonzero(self.removed[lo:hi])  # member indices of this partition's removed rows
        removed = np.zeros(partition.num_rows, bool)
        removed[r.members[going] - start] = True
        kept = r.kept[going]
        return PartitionDecision(removed, r.cluster[going], self.ids.gather(r.index_of(kept)) if kept.size else
                                 self._no_ids(), kept < r.n_reference, self.similarity[going])

    def rows(self, partition: Partition, payload: PartitionDecision, output: str) -> Iterator[pl.DataFrame]:
        offset, done = 0, 0
        for batch in partition.iter_batches():
            mask = payload.removed[offset : offset + batch.height]
            offset += batch.height
            if not output:
                yield batch.filter(pl.Series(~mask))
            elif mask.any():
                count = int(mask.sum())
                yield self._removed_rows(batch.filter(pl.Series(mask)), payload, slice(done, done + count))
                done += count

    def empty(self, output: str) -> pl.DataFrame:
        frame = pl.DataFrame(schema=self.data_schema)
        if not output:
            return frame
        none = PartitionDecision(np.zeros(0, bool), np.zeros(0, np.int64), self._no_ids(), np.zeros(0, bool),
                                 np.zeros(0))
        return self._removed_rows(frame, none, slice(0, 0))

    def _removed_rows(self, rows: pl.DataFrame, d: PartitionDecision, at: slice) -> pl.DataFrame:
        from_reference = d.from_reference[at]
        return rows.with_columns(
            pl.Series("cluster_id", d.cluster[at], dtype=pl.Int64),
            d.duplicate_of[at].alias("duplicate_of"),
            pl.Series("duplicate_of_input", np.where(from_reference, "reference", "data").tolist(), dtype=pl.String),
            pl.Series("similarity", d.similarity[at], dtype=pl.Float64),
            pl.Series("reason", np.where(from_reference, f"{self.reason} of a reference row", self.reason).tolist(),
                      dtype=pl.String),
        )

    def _no_ids(self) -> pl.Series:
        return pl.Series([], dtype=self.id_type)

    def done(self, ctx: Context) -> None:
        ctx.write_side_output("clusters", self._clusters())
        ctx.lead_with(summary(self.resolution))

    def _clusters(self) -> pl.DataFrame:
        r, ids = self.resolution, self.ids
        order = np.lexsort((r.members, r.cluster))  # member indices, by cluster then row
        rows = r.members[order]
        return pl.DataFrame({
            "cluster_id": pl.Series(r.cluster[order], dtype=pl.Int64),
            "id": ids.gather(order) if order.size else self._no_ids(),
            "input": pl.Series(np.where(rows < r.n_reference, "reference", "data").tolist(), dtype=pl.String),
            "kept": pl.Series(~self.removed[order], dtype=pl.Boolean),
            "size": pl.Series(r.size[order], dtype=pl.Int64),
            "similarity": pl.Series(self.similarity[order], dtype=pl.Float64),
        })
