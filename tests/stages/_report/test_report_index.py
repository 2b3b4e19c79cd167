"""The run index (stages/_report/index.py) and the word diff (stages/_report/diff.py)."""

from __future__ import annotations

import json

from stages._report.diff import diff_ratio, word_diff
from stages._report.index import find_reports, write_run_index


def _step(workdir, run, step, stage, files, stats=None):
    d = workdir / run / step
    d.mkdir(parents=True)
    (d / "_manifest.json").write_text(json.dumps({"step": step, "stage": stage, "stats": stats or {}}))
    for name in files:
        (d / name).write_text(f"<p>{run}/{step}/{name}</p>")
    return d


def test_index_links_every_report_of_every_run_and_skips_hidden_and_reportless(tmp_path):
    _step(tmp_path, "quickstart", "audit", "leakage_audit", ["report.html", "report.md"], {"test_items": 55})
    _step(tmp_path, "collapse", "report", "collapse_report", ["report.html"])
    _step(tmp_path, "collapse", "gen", "generations", [])  # no report: not listed
    _step(tmp_path, ".trash", "old", "leakage_audit", ["report.html"])  # hidden folder: not listed
    path = write_run_index(tmp_path)
    html = path.read_text()
    assert path == tmp_path / "index.html"
    for href in ("quickstart/audit/report.html", "quickstart/audit/report.md", "collapse/report/report.html"):
        assert f'href="{href}"' in html
    assert ".trash" not in html and "collapse/gen" not in html
    assert "test_items 55" in html  # headline stats from the step's manifest
    rows = find_reports(tmp_path)
    assert {(r["run"], r["step"]) for r in rows} == {("quickstart", "audit"), ("collapse", "report")}
    assert "<script" not in html and "http" not in html  # one local file, nothing fetched


def test_index_headline_shows_an_audits_verdicts(tmp_path):
    # An audit records four scalars before its verdicts; the index showed the scalars and never the verdicts.
    stats = {"partitions": 1, "test_items": 2, "train_rows": 1, "train_mb": 19.332, "verdicts":
             {"clean": 1, "partial": 0, "contaminated": 1}, "common_ngrams_ignored": 0, "seed": 0}
    _step(tmp_path, "h", "audit", "leakage_audit", ["report.html"], stats)
    assert find_reports(tmp_path)[0]["headline"] == (
        "test_items 2; train_rows 1; train_mb 19.33; verdicts {clean 1, partial 0, contaminated 1}")


def test_index_is_not_written_without_reports(tmp_path):
    assert write_run_index(tmp_path) is None
    assert write_run_index(tmp_path / "missing") is None
    assert not (tmp_path / "index.html").exists()


def test_word_diff_marks_only_the_changed_words():
    runs = word_diff("the quick brown fox jumps over the lazy dog", "The quick red fox jumps over the dog today")
    assert runs == [("equal", "the quick"), ("delete", "brown"), ("insert", "red"), ("equal", "fox jumps over the"),
                    ("delete", "lazy"), ("equal", "dog"), ("insert", "today")]
    assert 0.7 < diff_ratio(runs) < 0.9
    assert diff_ratio(word_diff("a b c", "a b c")) == 1.0
    assert diff_ratio(word_diff("a b c", "x y z")) == 0.0
    assert word_diff("", "") == []


def test_index_replaces_a_planted_link_without_writing_through_it(tmp_path):
    _step(tmp_path / "work", "r", "audit", "leakage_audit", ["report.html"])
    victim = tmp_path / "victim.html"
    victim.write_text("precious")
    (tmp_path / "work" / "index.html").symlink_to(victim)
    path = write_run_index(tmp_path / "work")
    assert victim.read_text() == "precious" and not path.is_symlink() and "r/audit/report.html" in path.read_text()
