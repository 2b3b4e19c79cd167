"""The label pass of label_noise as a partitioned map: what each row contributes, merged in input order.

Both modes need the same per-row facts before they can choose anything: the row's class index and
the digest of its id (flip stores the id's flip hash directly). A map reads only the label and id
columns of its partition; the merge keeps partitions' arrays as a list in input order (concatenated
once, in `finish`), so merging costs nothing and the merged arrays are exactly those of one pass.
The state is 12 bytes a row: exact per-class counts need every row's hash in one place. A frame
already in memory costs less: where its labels are 0..K-1 and its ids Int64, the state is views
of its columns (dilute multiplies the ids into their digests chunk by chunk, in its hash loop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from pipeline.errors import InputDataError
from pipeline.partitioned import Partition
from stages.noise.counts import keyed_chunked
from stages.noise.rows import batch_rows, class_index, digests


@dataclass
class LabelScan:
    """Per-row class index and hash (flip: keyed flip hash; dilute: id digest, or integer ids' words),
    plus the largest integer id."""

    class_idx: list[np.ndarray] = field(default_factory=list)
    hashes: list[np.ndarray] = field(default_factory=list)
    max_id: int | None = None

    def merge(self, later: LabelScan) -> LabelScan:
        """This state's rows, then `later`'s: associative, and a merge in input order is one pass's arrays."""
        ids = [m for m in (self.max_id, later.max_id) if m is not None]
        return LabelScan(self.class_idx + later.class_idx, self.hashes + later.hashes, max(ids) if ids else None)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(class index per row, hash per row), for the whole input."""
        if len(self.class_idx) == 1:
            return self.class_idx[0], self.hashes[0]
        idx = np.concatenate(self.class_idx) if self.class_idx else np.zeros(0, dtype=np.int32)
        h = np.concatenate(self.hashes) if self.hashes else np.zeros(0, dtype=np.uint64)
        self.class_idx, self.hashes = [idx], [h]  # the parts are copied into one array: free them now
        return idx, h


def scan_partition(stage: Any, partition: Partition, classes: pl.Series, flip_key: int | None, label: str,
                   integer_ids: bool) -> LabelScan:
    """One partition's class indices and hashes, reading only the label and id columns.

    Dilute with integer ids keeps the ids' words (`stages._hashing.id_words`): their digest is
    word * _GOLDEN, multiplied in cache by the hash loop. A partition held in memory whose ids need
    no per-byte hashing is one batch, and its indices and words are views of the frame where the
    labels and ids allow (labels 0..K-1, Int64 ids): no pass, no copy. Otherwise batches are
    bounded by bytes and copied into the state's two arrays, allocated once.
    """
    columns = [stage.label_column] + ([stage.id_column] if stage.id_column else [])
    words = flip_key is None and integer_ids
    state = LabelScan()

    def scan(batch: pl.DataFrame, offset: int) -> tuple[np.ndarray, np.ndarray]:
        idx = class_index(batch[stage.label_column], classes)
        digest = digests(stage, batch, offset, label, words=words)
        if flip_key is not None:
            digest = keyed_chunked(digest, flip_key, out=digest)  # a fresh array: hashed in place
        if integer_ids and batch.height:
            top = int(batch[stage.id_column].max())
            state.max_id = top if state.max_id is None else max(state.max_id, top)
        return idx, digest

    frame = partition.frame
    if frame is not None and (not stage.id_column or frame.schema[stage.id_column].is_integer()):
        (_, (start, stop)), = partition.pieces
        idx, digest = scan(frame.select(columns).slice(start, stop - start), partition.base)
        state.class_idx, state.hashes = [idx], [digest]
        return state
    class_idx = np.empty(partition.num_rows, dtype=np.int32)
    hashes = np.empty(partition.num_rows, dtype=np.uint64)
    done = 0
    rows = partition.num_rows if frame is not None else batch_rows(partition)
    for batch in partition.iter_batches(max(rows, 1), columns=columns):
        idx, digest = scan(batch, partition.base + done)
        class_idx[done : done + batch.height] = idx
        hashes[done : done + batch.height] = digest
        done += batch.height
    if done != partition.num_rows:
        raise InputDataError(f"read {done} rows of a partition whose metadata states {partition.num_rows}",
                             file=label)
    state.class_idx, state.hashes = [class_idx], [hashes]
    return state
