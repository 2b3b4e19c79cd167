"""`dedup_exact`: rows whose texts are equal after normalisation are one cluster; one row is kept.

The first pass keeps a 64-bit hash per row (8 bytes, never the text); the hashes are shuffled by
their top bits to 16 reducers (the partitioned contract's shuffle), where rows with equal hashes
become pairs. Two different texts share a hash with probability about n**2 / 2**65 (1e-8 at a million
rows), the same trade every hash-based dedup (datatrove, NeMo Curator) makes.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import polars as pl

from pipeline.stage import Context
from stages.dedup.base import Broadcast, Scan, TextDedupStage
from stages.dedup.shingles import text_hashes
from stages.dedup.shuffle import band_parts

HASH_BUCKET_BITS = 4
HASH_BUCKETS = 1 << HASH_BUCKET_BITS


class DedupExact(TextDedupStage):
    """Remove rows whose text equals an earlier-kept row's after normalisation (within data, or against `reference`).

    Writes the kept rows; side outputs `removed` (each removed row with cluster_id, duplicate_of,
    duplicate_of_input, similarity, reason) and `clusters` (every member of every duplicate cluster).
    With a `reference` input, data rows equal to a reference row are removed too (e.g. test items
    in a training set); reference rows are never removed.

    Parameters:
        text_column: column holding the text
        id_column: column identifying rows (named in the side outputs; used by keep='lowest_id')
        normalization: 'none' (bytes), 'whitespace' (runs of whitespace folded) or 'full' (case, punctuation, NFKC)
        keep: which row of a cluster stays: 'first' (input order), 'longest', 'lowest_id' or 'column'
        keep_column: with keep='column', the number, boolean, date, time or Enum whose best value wins (e.g. a quality score; nulls lose, NaN is refused)
        keep_descending: with keep='column', True keeps the highest value, False the lowest
        within_data: with a reference, also remove duplicates within data (False: only rows duplicating the reference)
    """

    name = "dedup_exact"
    reason = "exact duplicate"

    def __init__(
        self,
        text_column: str = "text",
        id_column: str = "id",
        normalization: Literal["none", "whitespace", "full"] = "whitespace",
        keep: Literal["first", "longest", "lowest_id", "column"] = "first",
        keep_column: str | None = None,
        keep_descending: bool = True,
        within_data: bool = True,
    ):
        self.text_column = text_column
        self.id_column = id_column
        self.normalization = normalization
        self.keep = keep
        self.keep_column = keep_column
        self.keep_descending = keep_descending
        self.within_data = within_data

    def validate(self) -> None:
        self.validate_keep()

    def batch_features(self, batch: pl.DataFrame, label: str) -> np.ndarray:
        texts = self.texts(batch, label)
        return text_hashes(texts, self.normalization)

    # The hashes are shuffled by their top bits to HASH_BUCKETS reducers (on Ray workers, not the driver),
    # each with the rows they name; a reducer's groups of equal hashes come back as pairs. Equal hashes
    # always meet in one bucket, and a reducer holds 1/HASH_BUCKETS of the corpus's hashes.

    def shuffle_buckets(self, broadcast: Broadcast) -> int:
        return HASH_BUCKETS

    def split(self, scan: Scan, broadcast: Broadcast) -> tuple[Scan, list[tuple[np.ndarray, np.ndarray]]]:
        """(the scan with no features left, per bucket: (rows, hashes) of this scan's rows in it, in row order)."""
        features, scan.features = scan.features, []
        hashes = np.concatenate(features) if features else np.empty(0, np.uint64)
        return scan, band_parts(hashes[:, None], HASH_BUCKETS, scan.first_row)

    def duplicate_pairs(self, ctx: Context, scan: Scan) -> tuple[np.ndarray, Any]:
        ctx.record("normalization", self.normalization)
        found = [pairs for pairs in scan.shuffled or [] if len(pairs)]
        return (np.concatenate(found) if found else np.empty((0, 2), np.int64)), None

    @classmethod
    def example(cls):
        import pydoc_data.topics as topics

        texts = [text[:400] for _, text in sorted(topics.topics.items())[:5]]
        texts += [texts[0], "  " + texts[2].replace(" ", "  ")]
        return {"normalization": "whitespace"}, {"data": pl.DataFrame({"id": range(len(texts)), "text": texts})}

