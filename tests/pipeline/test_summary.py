"""The end-of-run summary (pipeline/summary.py): each step's headline figures."""

from __future__ import annotations

from pipeline.summary import headline


def test_headline_shows_what_a_step_found_not_how_it_was_partitioned():
    # The order a partitioned leakage audit records its stats in: the engine's figures come first.
    stats = {"partitions": 1, "shuffle_buckets": 16, "second_buckets": 1,
             "partition_profile": {"resumed": 0, "median_map_s": 0.07}, "test_items": 79, "train_rows": 708,
             "verdicts": {"clean": 42, "partial": 6, "contaminated": 31}, "seed": 42}
    assert headline(stats) == ["test_items 79", "train_rows 708", "verdicts {clean 42, partial 6, contaminated 31}"]
