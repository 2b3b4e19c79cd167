"""Progress: plain timestamped lines into a log (not a terminal), nothing for quick steps, a notice line."""

from __future__ import annotations

import re

from pipeline import progress
from pipeline.progress import Progress, notice


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_log_lines_are_timestamped_with_rate_and_eta(monkeypatch, capsys):
    clock = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    bar = Progress("embed", total=1000)
    bar.update(10)  # the first two seconds stay silent
    assert capsys.readouterr().err == ""
    clock.now += 12
    bar.update(290)
    line = capsys.readouterr().err.strip()
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  embed: 300/1,000 rows \(25 rows/s, ETA 0:28\)$", line), line
    clock.now += 1
    bar.update(700)
    bar.close()  # the final count is printed once the step ends
    assert "1,000/1,000 rows" in capsys.readouterr().err


def test_quick_and_quiet_steps_print_nothing(monkeypatch, capsys):
    clock = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    quick = Progress("quick", total=10)
    quick.update(10)
    quick.close()
    quiet = Progress("quiet", total=10, quiet=True)
    clock.now += 60
    quiet.update(10)
    quiet.close()
    assert capsys.readouterr().err == ""


def test_notice_is_one_timestamped_line(capsys):
    notice("distilling the static table")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith("distilling the static table")
    notice("hidden", quiet=True)
    assert capsys.readouterr().err == ""


def test_embedding_reports_progress_per_group_of_model_batches():
    from stages.embedding import encode_with_stats

    seen = []
    texts = [f"text number {i}" for i in range(300)]
    vectors, stats = encode_with_stats(texts, backend="static", batch_size=2, on_progress=seen.append)
    assert vectors.shape[0] == 300 and sum(seen) == stats["computed"] == 300 and len(seen) == 3
