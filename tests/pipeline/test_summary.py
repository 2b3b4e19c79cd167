"""The end-of-run summary (pipeline/summary.py): each step's headline figures."""

from __future__ import annotations

from pipeline.summary import artefact_paths, headline


def test_headline_shows_what_a_step_found_not_how_it_was_partitioned():
    # The order a partitioned leakage audit records its stats in: the engine's figures come first.
    stats = {"partitions": 1, "shuffle_buckets": 16, "second_buckets": 1,
             "partition_profile": {"resumed": 0, "median_map_s": 0.07}, "test_items": 79, "train_rows": 708,
             "verdicts": {"clean": 42, "partial": 6, "contaminated": 31}, "seed": 42}
    assert headline(stats) == ["test_items 79", "train_rows 708", "verdicts {clean 42, partial 6, contaminated 31}"]


def test_a_report_page_comes_before_the_figures_it_shows(tmp_path):
    names = ["corpus-curves.png", "curves.png", "metric-vocab_size.png", "report.md", "report.html", "data.json"]
    manifest = {"artefacts": [{"name": n} for n in names], "side_outputs": {"points": {}}}
    paths = [p.name for p in artefact_paths(tmp_path / "report", manifest)]
    assert paths == ["report.html", "report.md", "corpus-curves.png", "curves.png", "metric-vocab_size.png",
                     "data.json", "report@points"]
