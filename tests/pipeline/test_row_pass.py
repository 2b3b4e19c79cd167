"""Second passes over a partitioned stage's partitions (`pipeline.row_pass`): outputs written per partition give
the same rows in input order for any partition size, an output no partition gives a row to still has its columns,
and `gather_rows` reads chosen rows partition by partition."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from partition_stages import (
    SplitRows,
    logged_word_sets,
    shared_words,
    split_rows,
    texts_at,
    word_codes,
    word_sets_at,
)
from test_partitioned import corpus_files, run_step

from pipeline.executors import LocalExecutor
from pipeline.io import Dataset
from pipeline.partitioned import plan_partitions
from pipeline.row_pass import (
    concat_ragged,
    join_group,
    local_gather,
    plan_join,
    source_parts,
    source_values,
    take_ragged,
)
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


def join_pairs(data_rows: int) -> np.ndarray:
    """Pairs in no order: across and within partitions, reversed, a row with itself, a row in many pairs."""
    rng = np.random.default_rng(5)
    pairs = rng.integers(0, data_rows, size=(60, 2))
    return np.concatenate([pairs, [[7, 7], [data_rows - 1, 0], [3, 90], [90, 3], [3, 44]]])


@pytest.mark.parametrize("groups", [1, 2, 3, 100])
def test_a_join_plan_brings_each_group_the_rows_of_its_pairs_only(tmp_path, groups):
    data = corpus_files(tmp_path / "corpus")
    partitions = plan_partitions(data, 1)
    pairs = join_pairs(data.num_rows)
    plan = plan_join(partitions, pairs, groups)
    assert sorted(plan.order.tolist()) == list(range(len(pairs))) and len(plan.feeds) == min(groups, len(pairs))
    parts = [dict(zip((g for g, _ in s.dests), source_parts(source_values(word_sets_at, s, "text"), s)))
             for s in plan.sources]
    out = np.empty(len(pairs), np.int64)
    for g, feeds in enumerate(plan.feeds):
        mine = pairs[plan.order[plan.bounds[g]:plan.bounds[g + 1]]]
        received = [parts[s][g] for s in feeds]
        # A group gets every row its pairs name, each once, and nothing else.
        assert np.concatenate([p[0] for p in received] or [np.empty(0, np.int64)]).tolist() == np.unique(mine).tolist()
        out[plan.order[plan.bounds[g]:plan.bounds[g + 1]]] = join_group(shared_words, mine, received, None)
    texts = data.collect()["text"]
    assert out.tolist() == [np.intersect1d(word_codes(texts[int(a)]), word_codes(texts[int(b)])).size for a, b in pairs]
    with pytest.raises(ValueError, match="inside the partitioned input"):
        plan_join(partitions, np.array([[0, data.num_rows]]), groups)


def test_ragged_rows_concatenate_and_take_in_any_order():
    flat, offsets = concat_ragged([(np.array([1, 2, 3], np.uint64), np.array([0, 2, 3])),
                                   (np.array([], np.uint64), np.array([0, 0])),
                                   (np.array([4, 5], np.uint64), np.array([0, 1, 2]))])
    assert flat.tolist() == [1, 2, 3, 4, 5] and offsets.tolist() == [0, 2, 3, 3, 4, 5]
    taken, taken_offsets = take_ragged(flat, offsets, np.array([4, 2, 0, 0]))
    assert taken.tolist() == [5, 1, 2, 1, 2] and taken_offsets.tolist() == [0, 1, 1, 3, 5]


def test_a_later_join_reads_only_the_rows_an_earlier_one_did_not(tmp_path):
    data = corpus_files(tmp_path / "corpus")
    partitions = plan_partitions(data, 1)
    log = tmp_path / "reads.log"
    first, second = join_pairs(data.num_rows)[:30], join_pairs(data.num_rows)[20:]
    made = {}
    for source in plan_join(partitions, first, 2).sources:
        made[source.partition.index] = source_values(logged_word_sets, source, str(log))
    log.write_text("")
    for source in plan_join(partitions, second, 3).sources:
        held = made.get(source.partition.index)
        values = source_values(logged_word_sets, source, str(log), held)
        fresh = source_values(word_sets_at, source, "text")
        for got, want in zip(source_parts(values, source), source_parts(fresh, source)):
            assert all(np.array_equal(a, b) for a, b in zip(got, want))
        assert set(source.rows) <= set(values[0]) and values[0].tolist() == sorted(values[0].tolist())
        new = len(set(source.rows) - set(held[0] if held else []))
        made[source.partition.index] = values
        reads = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
        assert [n for p, n in reads if p == source.partition.index] == ([new] if new else [])
