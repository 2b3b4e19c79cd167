"""bench.run_all rewrites the generated tables of a report but keeps the hand-written notes below its marker."""

from bench import run_all


def _record(value: float) -> dict:
    return {"module": "noise", "scale": "quick", "started_at": "2026-11-30T00:00:00+00:00", "status": "ok",
            "error": None, "wall_s": 1.0, "machine": {"cpu": "x", "cores": 2, "memory_gib": 1, "gpu": "none",
                                                      "os": "Linux", "python": "3.11"},
            "rows": [{"benchmark": "noise", "case": "flip", "metric": "s", "value": value, "ratio": 1.0}]}


def test_rerender_keeps_hand_written_notes_and_replaces_tables(tmp_path):
    header = {"scale": "quick", "modules": ["noise"], "versions": {}, "date": "2026-11-30",
              "machine": _record(0)["machine"]}
    notes = "## held-out figures\n\nWritten by a person -- kept verbatim.\n"
    report = tmp_path / "results.md"
    report.write_text(run_all.render({"noise": _record(1.5)}, header, notes))
    kept = run_all.read_notes(report)
    assert kept.strip() == notes.strip()

    report.write_text(run_all.render({"noise": _record(2.5)}, header, kept))
    text = report.read_text()
    assert text.count("Written by a person -- kept verbatim.") == 1
    assert "| flip | s | 2.5 |" in text and "| flip | s | 1.5 |" not in text
    assert run_all.read_previous(report)["noise"]["rows"][0]["value"] == 2.5
    assert text.index(run_all.NOTES_MARK) < text.index("held-out figures") < text.rindex(run_all.DATA_MARK)


def test_report_without_marker_has_no_notes(tmp_path):
    report = tmp_path / "results.md"
    report.write_text("# an old report\n\nno marker here\n")
    assert run_all.read_notes(report) == ""
    assert run_all.read_notes(tmp_path / "missing.md") == ""
