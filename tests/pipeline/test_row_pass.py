"""Second passes over a partitioned stage's partitions (`pipeline.row_pass`): outputs written per partition give
the same rows in input order for any partition size, an output no partition gives a row to still has its columns,
and `gather_rows` reads chosen rows partition by partition."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from partition_stages import SplitRows, split_rows, texts_at
from test_partitioned import corpus_files, run_step

from pipeline.executors import LocalExecutor
from pipeline.io import Dataset
from pipeline.partitioned import plan_partitions
from pipeline.row_pass import local_gather
from pipeline.row_pass import split_rows as split_by_partition


@pytest.mark.parametrize("partition_bytes", [1, 9_000, 1 << 40])
def test_the_pass_gives_every_output_in_input_order_for_any_partition_size(tmp_path, partition_bytes):
    data = corpus_files(tmp_path / "corpus")
    vocab = {"class", "return"}
    table, sides, stats = run_step(SplitRows(), {"data": data, "vocab": Dataset.from_any(pl.DataFrame({"word": sorted(vocab)}))},
                                   tmp_path / "out", LocalExecutor(partition_bytes=partition_bytes))
    with_word, without = split_rows(data.collect(), vocab)
    assert with_word.height > 0 and without.height > 0
    assert table.equals(with_word) and sides["without"].equals(without)
    assert stats["rows_seen"] == data.num_rows and stats["vocabulary"] == sorted(vocab)  # done() ran once, after


def test_an_output_without_rows_keeps_its_columns(tmp_path):
    data = corpus_files(tmp_path / "corpus")
    table, sides, _ = run_step(SplitRows(), {"data": data, "vocab": Dataset.from_any(pl.DataFrame({"word": ["zzzz"]}))},
                               tmp_path / "out", LocalExecutor(partition_bytes=1))
    assert table.height == 0 and table.columns == ["id", "text", "row"]
    assert sides["without"].height == data.num_rows


def test_gather_rows_reads_chosen_rows_partition_by_partition_in_input_order(tmp_path):
    data = corpus_files(tmp_path / "corpus")
    partitions = plan_partitions(data, 1)
    rows = np.array([0, 3, 19, 20, 21, 77, data.num_rows - 1])
    pieces = split_by_partition(partitions, rows)
    holding = sorted({p.index for p in partitions for r in rows if p.base <= r < p.base + p.num_rows})
    assert [p.index for p, _ in pieces] == holding and len(holding) < len(partitions)
    assert np.concatenate([p.base + local for p, local in pieces]).tolist() == rows.tolist()
    gathered = [pair for part in local_gather(partitions)(texts_at, rows, "text") for pair in part]
    texts = data.collect()["text"]
    assert gathered == [(int(r), texts[int(r)]) for r in rows]
    with pytest.raises(ValueError, match="sorted row numbers"):
        split_by_partition(partitions, np.array([5, 2]))
    with pytest.raises(ValueError, match="sorted row numbers"):
        split_by_partition(partitions, np.array([data.num_rows]))
