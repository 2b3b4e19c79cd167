"""The leakage report's word diff for near-copies (stages/leakage/report.py + stages/_report/diff.py)."""

from __future__ import annotations

from pydoc_data.topics import topics

import polars as pl

from stages.leakage import LeakageAudit
from stages.leakage.report import aligned_window, near_copy_diff


def test_aligned_window_and_near_copy_diff():
    test = "alpha beta gamma delta"
    train = "prefix words here alpha beta GAMMA delta then more words"
    start = train.index("beta")
    assert aligned_window(test, train, (6, 16), (start, start + 10)) == "alpha beta GAMMA delta"
    assert near_copy_diff(test, train, (6, 16), (start, start + 10)) is None  # identical (case aside): no diff
    edited = train.replace("GAMMA", "omega")
    assert near_copy_diff(test, edited, (6, 16), (start, start + 10)) == [
        ("equal", "alpha beta"), ("delete", "gamma"), ("insert", "omega"), ("equal", "delta")]
    assert near_copy_diff(test, "entirely other words", (None, None), (None, None)) is None  # not a near-copy
    assert near_copy_diff(test, "", (0, 4), (0, 4)) is None


def test_aligned_window_keeps_a_word_the_span_ends_inside():
    # The match stops before the final "." ("access" of "access."): the window is one slice of the
    # training text, so a verbatim copy is not shown as a diff of "access." against "access .".
    test = "get total control over attribute access."
    train = "Intro words. " + test + " Later text."
    start = train.index("get")
    span = (start, start + len(test) - 1)
    assert aligned_window(test, train, (0, len(test) - 1), span) == test
    assert near_copy_diff(test, train, (0, len(test) - 1), span) is None
    # More words before the test span than the training text has: the window starts at the text's start.
    assert aligned_window("one two three four five", "two three four five six", (19, 23), (15, 19)) == (
        "two three four five")


def test_report_shows_a_word_diff_for_an_edited_copy(tmp_path):
    names = sorted(topics)
    train = pl.DataFrame({"id": names[:20], "text": [topics[n] for n in names[:20]]})
    words = " ".join(topics[names[5]].split()[30:130]).split()
    words[20], words[60] = "CHANGEDWORD", "OTHERWORD"  # two edits: n-grams still match around them
    test = pl.DataFrame({"id": ["edited", "clean"], "text": [" ".join(words), " ".join(topics[names[40]].split()[:100])]})
    result = LeakageAudit(chunk_overlap=False, semantic=False).execute(train=train, test=test, workdir=tmp_path)
    assert result.table.filter(pl.col("test_id") == "edited")["verdict"][0] != "clean"
    html = (tmp_path / "report.html").read_text()
    md = (tmp_path / "report.md").read_text()
    assert '<div class="diff">' in html
    assert "<del>CHANGEDWORD</del>" in html and "<del>OTHERWORD</del>" in html
    assert "~~CHANGEDWORD~~" in md
