"""A deterministic sample of the training corpus, read once per audit, for statistics every batch must share.

A kind whose scores depend on corpus statistics (the paraphrase kind's BM25 document frequencies) cannot take
them from the batch at hand: batches follow the partitioning, so candidates would change with the partition
size and the executor. It takes them from this sample instead: the whole corpus when its size by the input's
metadata (all its columns, uncompressed) is at most `SAMPLE_BYTES`, else the first rows of `SAMPLE_PICKS`
partitions spread evenly over it, about `SAMPLE_BYTES` of text in all. The
partitions are cut as for the maps, from the input's metadata only, so the sample is the same whatever the
run's partition size, executor or machine.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from pipeline.io import Dataset
from pipeline.partitioned import plan_partitions

SAMPLE_BYTES = 8 << 20  # two map batches of text (`audit.MAP_BATCH_BYTES`)
SAMPLE_PICKS = 4


def train_sample(train: Dataset, columns: list[str], to_text: Callable[[pl.DataFrame], pl.Series],
                 budget: int = SAMPLE_BYTES) -> pl.Series:
    """About `budget` bytes of training text (`to_text` of batches of `columns`), the same for every run of
    the same input."""
    partitions = plan_partitions(train, max(budget // SAMPLE_PICKS, 1))
    if sum(p.nbytes for p in partitions) <= budget:
        picks, share = list(range(len(partitions))), None
    else:
        spread = np.linspace(0, len(partitions) - 1, SAMPLE_PICKS).round().astype(int)
        picks, share = sorted(set(spread.tolist())), budget // SAMPLE_PICKS
    texts = []
    for i in picks:
        taken = 0
        for batch in partitions[i].iter_batches(columns=columns):
            text = to_text(batch)
            if share is not None:
                sizes = np.cumsum(text.str.len_bytes().fill_null(0).to_numpy())
                text = text.head(max(int(np.searchsorted(sizes, share - taken, side="right")), 1))
                taken += int(text.str.len_bytes().sum() or 0)
            texts.append(text)
            if share is not None and taken >= share:
                break
    return pl.concat(texts) if texts else pl.Series("text", [], pl.String)
