"""A partitioned stage whose outputs are a second pass over its partitions (`pipeline.row_pass`): the same rows,
in input order, for any partition size; an output no partition gives a row to still has its columns."""

from __future__ import annotations

import polars as pl
import pytest
from partition_stages import SplitRows, split_rows
from test_partitioned import corpus_files, run_step

from pipeline.executors import LocalExecutor
from pipeline.io import Dataset


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
