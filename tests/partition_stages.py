"""Test-only partitioned stages: counts of a vocabulary's words over a corpus, and the first row of each word
(a stage with a shuffle), each with a way to fail once.

VocabularyCounts' merge is associative but not commutative (it keeps the partitions' row ranges in order), so a
merge out of input order would show in the output.
"""

from __future__ import annotations

import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.errors import PipelineError
from pipeline.io import Dataset
from pipeline.partitioned import Partition, PartitionedStage
from pipeline.row_pass import RowPass
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


class FirstRows(PartitionedStage):
    """Test stage with a shuffle: the first row each word occurs in, words grouped into `buckets` by hash.

    Each map sends a word's first row within its partition to the word's bucket; a reducer takes
    the earliest over partitions and asserts its parts arrive in input order. The merged state is
    only the partitions' row ranges, so the words reach `finish` through the reducers alone. With
    `second` > 0 the reducers' words go on to a second round, by first letter; each second-round reducer
    asserts its parts arrive in first-round bucket order.

    Parameters:
        buckets: reducers
        second: reducers of a second round (0: none)
        refuse_bucket: a first-round bucket whose reducer refuses (a PipelineError), or -1
        fail_marker: a file; the first map of partition `fail_at` creates it and fails (a killed driver)
        fail_at: the partition index that fails once
    """

    name = "test_partitioned_first_rows"
    inputs = ("data",)
    partition_input = "data"

    def __init__(self, buckets: int = 3, fail_marker: str | None = None, fail_at: int = 0, second: int = 0,
                 refuse_bucket: int = -1):
        self.buckets = buckets
        self.second = second
        self.refuse_bucket = refuse_bucket
        self.fail_marker = fail_marker
        self.fail_at = fail_at

    @classmethod
    def example(cls):
        return {}, {"data": pl.DataFrame({"text": ["the cat", "a cat", "the end"]})}

    def map(self, partition: Partition, broadcast: None) -> dict:
        if self.fail_marker and partition.index == self.fail_at and not Path(self.fail_marker).exists():
            Path(self.fail_marker).touch()
            raise RuntimeError("planted failure")
        first: dict[str, int] = {}
        row = partition.base
        for batch in partition.iter_batches(7, columns=["text"]):
            for text in batch.get_column("text").to_list():
                for word in text.lower().split():
                    first.setdefault(word, row)
                row += 1
        return {"first": first, "ranges": [(partition.base, partition.num_rows)]}

    def merge(self, a: dict, b: dict) -> dict:
        return {"ranges": a["ranges"] + b["ranges"]}

    def shuffle_buckets(self, broadcast: None) -> int:
        return self.buckets

    def split(self, value: dict, broadcast: None) -> tuple[dict, list]:
        parts: list[dict[str, int]] = [{} for _ in range(self.buckets)]
        for word, row in value["first"].items():
            parts[zlib.crc32(word.encode()) % self.buckets][word] = row
        return {"ranges": value["ranges"]}, parts

    def reduce(self, bucket: int, parts: list, broadcast: None) -> dict[str, int]:
        if bucket == self.refuse_bucket:
            raise PipelineError(f"bucket {bucket} refused")
        first: dict[str, int] = {}
        for part in parts:
            for word, row in part.items():
                assert first.get(word, -1) < row, "reduced out of input order"
                first.setdefault(word, row)
        return first

    def second_buckets(self, broadcast: None) -> int:
        return self.second

    def split_reduced(self, bucket: int, result: dict[str, int], broadcast: None) -> list:
        parts: list[tuple[int, dict[str, int]]] = [(bucket, {}) for _ in range(self.second)]
        for word, row in result.items():
            parts[ord(word[0]) % self.second][1][word] = row
        return parts

    def reduce_second(self, bucket: int, parts: list, broadcast: None) -> dict[str, int]:
        assert [b for b, _ in parts] == list(range(self.buckets)), "second round out of bucket order"
        assert all(ord(w[0]) % self.second == bucket for _, p in parts for w in p)
        return {w: r for _, part in parts for w, r in part.items()}

    def shuffled(self, state: dict | None, results: list) -> dict:
        return {"ranges": state["ranges"] if state else [], "first": {w: r for part in results for w, r in part.items()}}

    def finish(self, ctx: Context, state: dict, broadcast: None, inputs: dict[str, Dataset]) -> pl.DataFrame:
        ctx.record("rows_seen", sum(n for _, n in state["ranges"]))
        words = sorted(state["first"])
        return pl.DataFrame({"word": words, "first_row": [state["first"][w] for w in words]}, schema={"word": pl.String, "first_row": pl.Int64})


def first_rows(texts: list[str]) -> pl.DataFrame:
    """What `FirstRows` should give, in one plain loop."""
    first: dict[str, int] = {}
    for row, text in enumerate(texts):
        for word in text.lower().split():
            first.setdefault(word, row)
    words = sorted(first)
    return pl.DataFrame({"word": words, "first_row": [first[w] for w in words]}, schema={"word": pl.String, "first_row": pl.Int64})


class SplitRows(PartitionedStage):
    """Test stage whose outputs are a second pass (`RowPass`): rows whose text has a vocabulary word are
    the table, the others the side output `without`, each with its corpus-wide row number.

    The map only counts rows; the decision is made per row in the pass, from the payload the driver
    hands each partition (its row range), so a pass run anywhere must give the same rows in order.
    """

    name = "test_partitioned_split_rows"
    inputs = ("data", "vocab")
    partition_input = "data"

    def side_output_names(self):
        return ("without",)

    @classmethod
    def example(cls):
        return {}, {"data": pl.DataFrame({"text": ["the cat", "a dog"]}), "vocab": pl.DataFrame({"word": ["cat"]})}

    def broadcast(self, ctx: Context, inputs: dict[str, Dataset]) -> frozenset[str]:
        return frozenset(inputs["vocab"].collect().get_column("word").to_list())

    def map(self, partition: Partition, broadcast: frozenset[str]) -> int:
        return partition.num_rows

    def merge(self, a: int, b: int) -> int:
        return a + b

    def finish(self, ctx: Context, state: int | None, broadcast: frozenset[str], inputs: dict[str, Dataset]):
        ctx.record("rows_seen", state or 0)
        return _VocabularyRows(broadcast, inputs["data"].lazy().head(0).collect().schema)


class _VocabularyRows(RowPass):
    outputs = ("", "without")

    def __init__(self, vocab: frozenset[str], schema: pl.Schema):
        self.vocab, self.schema = vocab, schema

    def payload(self, partition: Partition) -> int:
        return partition.base

    def rows(self, partition: Partition, payload: int, output: str):
        row = payload
        for batch in partition.iter_batches(7):
            has = pl.Series([bool(self.vocab & set(t.lower().split())) for t in batch.get_column("text").to_list()])
            numbered = batch.with_columns(row=pl.int_range(row, row + batch.height, dtype=pl.Int64))
            row += batch.height
            yield numbered.filter(has if not output else ~has)

    def empty(self, output: str) -> pl.DataFrame:
        return pl.DataFrame(schema=self.schema).with_columns(row=pl.lit(None, pl.Int64))

    def done(self, ctx: Context) -> None:
        ctx.record("vocabulary", sorted(self.vocab))


def split_rows(frame: pl.DataFrame, vocab: set[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """What `SplitRows` should give, in one plain pass."""
    numbered = frame.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
    has = pl.Series([bool(vocab & set(t.lower().split())) for t in frame.get_column("text").to_list()])
    cols = [*frame.columns, "row"]
    return numbered.filter(has).select(cols), numbered.filter(~has).select(cols)


def texts_at(partition: Partition, rows, column: str) -> list[tuple[int, str]]:
    """A `gather_rows` function: (corpus-wide row, text) of some rows of one partition, read where it is."""
    frame = pl.concat(list(partition.iter_batches(7, columns=[column])))
    return [(partition.base + int(r), frame[column][int(r)]) for r in rows]


def word_sets_at(partition: Partition, rows, column: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """A `join_rows` rows function: each row's distinct words as sorted CRC-32 codes, one ragged piece.
    The column "refuse" refuses partition 1 (a bad row there)."""
    if column == "refuse":
        if partition.index == 1:
            raise PipelineError("refusing partition 1 (test)")
        column = "text"
    frame = pl.concat(list(partition.iter_batches(7, columns=[column])))
    sets = [word_codes(frame[column][int(r)]) for r in rows]
    offsets = np.cumsum([0] + [len(s) for s in sets])
    return [(np.concatenate(sets) if sets else np.empty(0, np.uint64), offsets)]


def word_codes(text: str) -> np.ndarray:
    return np.unique(np.array([zlib.crc32(w.encode()) for w in text.split()], np.uint64))


def shared_words(flat: np.ndarray, offsets: np.ndarray, pairs: np.ndarray, _extra) -> np.ndarray:
    """A `join_rows` pair function: how many distinct words the two rows of each pair share."""
    return np.array([np.intersect1d(flat[offsets[a]:offsets[a + 1]], flat[offsets[b]:offsets[b + 1]]).size
                     for a, b in pairs], np.int64)


def logged_word_sets(partition: Partition, rows, log: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """`word_sets_at` that appends "partition rows" to the file `log` first: which rows were read, and where."""
    with open(log, "a") as f:
        f.write(f"{partition.index} {len(rows)}\n")
    return word_sets_at(partition, rows, "text")
