"""A test-only partitioned stage: counts of a vocabulary's words over a corpus, with a way to fail once.

Its merge is associative but not commutative (it keeps the partitions' row ranges in order), so a
merge out of input order would show in the output.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl

from pipeline.io import Dataset
from pipeline.partitioned import Partition, PartitionedStage
from pipeline.stage import Context


class VocabularyCounts(PartitionedStage):
    """Test stage: how often each word of `vocab` occurs in `data`'s text.

    Parameters:
        fail_marker: a file; the first map of partition `fail_at` creates it and fails (a killed driver)
        fail_at: the partition index that fails once
    """

    name = "test_partitioned_vocabulary_counts"
    inputs = ("data", "vocab")
    partition_input = "data"

    def __init__(self, fail_marker: str | None = None, fail_at: int = 0):
        self.fail_marker = fail_marker
        self.fail_at = fail_at

    @classmethod
    def example(cls):
        data = pl.DataFrame({"text": ["the cat and the hat", "a class of its own", "the end"]})
        return {}, {"data": data, "vocab": pl.DataFrame({"word": ["the", "class"]})}

    def broadcast(self, ctx: Context, inputs: dict[str, Dataset]) -> frozenset[str]:
        return frozenset(inputs["vocab"].collect().get_column("word").to_list())

    def map(self, partition: Partition, broadcast: frozenset[str]) -> dict:
        if self.fail_marker and partition.index == self.fail_at and not Path(self.fail_marker).exists():
            Path(self.fail_marker).touch()
            raise RuntimeError("planted failure")
        counts: Counter = Counter()
        for batch in partition.iter_batches(7, columns=["text"]):
            for text in batch.get_column("text").to_list():
                counts.update(w for w in text.lower().split() if w in broadcast)
        return {"counts": counts, "ranges": [(partition.base, partition.num_rows)]}

    def merge(self, a: dict, b: dict) -> dict:
        last_base, last_rows = a["ranges"][-1]
        assert b["ranges"][0][0] == last_base + last_rows, "merged out of input order"
        return {"counts": a["counts"] + b["counts"], "ranges": a["ranges"] + b["ranges"]}

    def finish(self, ctx: Context, state: dict, broadcast: frozenset[str], inputs: dict[str, Dataset]) -> pl.DataFrame:
        ctx.record("rows_seen", sum(n for _, n in state["ranges"]))
        words = sorted(broadcast)
        return pl.DataFrame({"word": words, "count": [state["counts"].get(w, 0) for w in words]})
