"""Library calls that write artefacts (a report, an index) without `workdir` leave no temporary
folder behind: the artefacts live in a folder owned by the result, which goes with it, or move to a
folder the caller owns (`keep_artefacts`). With `workdir`, the caller's folder keeps them."""

from __future__ import annotations

import gc
import subprocess
import sys
import tempfile
import textwrap

import polars as pl
import pytest

from pipeline.errors import ParamError, PipelineError
from pipeline.registry import STAGES
from pipeline.stage import Context, Stage

DOCS = pl.DataFrame({"id": ["a", "b", "c"], "text": ["one two", "three four five", "six"]})


@pytest.fixture
def reporting_stage():
    class WritesArtefacts(Stage):
        """Test stage: passes its input through, writes a report and a side table."""

        name = "test_execute_artefacts"

        def side_output_names(self):
            return ("short",)

        def run(self, ctx: Context, data):
            ctx.artefact_path("report.html").write_text("<p>three rows</p>")
            ctx.write_side_output("short", data.collect().head(1))
            return data.collect()

    yield WritesArtefacts
    STAGES.pop("test_execute_artefacts", None)


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_artefacts_live_as_long_as_the_result(reporting_stage, scratch):
    result = reporting_stage().execute(DOCS)
    assert result.artefacts == ["report.html"]
    assert (result.artefact_dir / "report.html").read_text() == "<p>three rows</p>"
    assert result.side_outputs["short"].height == 1
    del result
    gc.collect()
    assert list(scratch.iterdir()) == []


def test_with_block_and_close_remove_the_folder_at_once(reporting_stage, scratch):
    with reporting_stage().execute(DOCS) as result:
        assert (result.artefact_dir / "report.html").exists()
    assert not result.artefact_dir.exists() and list(scratch.iterdir()) == []
    reporting_stage().apply(DOCS)  # apply keeps only the table
    gc.collect()
    assert list(scratch.iterdir()) == []


def test_keep_artefacts_moves_them_where_the_caller_says(reporting_stage, scratch, tmp_path):
    result = reporting_stage().execute(DOCS)
    kept = result.keep_artefacts(tmp_path / "mine")
    assert result.artefact_dir == kept and (kept / "report.html").read_text() == "<p>three rows</p>"
    del result
    gc.collect()
    assert (kept / "report.html").exists() and list(scratch.iterdir()) == []


def test_a_workdir_is_the_callers_and_is_kept(reporting_stage, scratch, tmp_path):
    result = reporting_stage().execute(DOCS, workdir=tmp_path / "out")
    del result
    gc.collect()
    assert (tmp_path / "out" / "report.html").exists() and list(scratch.iterdir()) == []


def test_a_failing_stage_leaves_no_folder(scratch):
    class Fails(Stage):
        """Test stage: writes an artefact, then fails."""

        name = "test_execute_fails"

        def run(self, ctx: Context, data):
            ctx.artefact_path("half.html").write_text("half")
            raise RuntimeError("stage failed")

    try:
        with pytest.raises(RuntimeError):
            Fails().execute(DOCS)
        assert list(scratch.iterdir()) == []
    finally:
        STAGES.pop("test_execute_fails", None)


def test_a_script_that_exits_holding_a_result_leaves_nothing(tmp_path):
    """The real leakage audit writes report.html and report.md; the script ends without cleaning up."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    script = textwrap.dedent("""
        import polars as pl
        from stages.leakage import LeakageAudit
        texts = [f"the quick brown fox number {i} jumps over the lazy dog again and again" for i in range(20)]
        train = pl.DataFrame({"id": [f"t{i}" for i in range(20)], "text": texts})
        test = pl.DataFrame({"id": ["q0", "q1"], "text": [texts[3], "nothing like the training text at all here"]})
        result = LeakageAudit(n=8).execute(train=train, test=test)
        assert (result.artefact_dir / "report.html").exists(), result.artefacts
        print(result.artefact_dir)
    """)
    env = {"TMPDIR": str(scratch), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": ":".join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().startswith(str(scratch))
    assert list(scratch.iterdir()) == []


def test_a_workdir_with_a_tilde_is_in_the_home_folder(reporting_stage, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    reporting_stage().execute(DOCS, workdir="~/out")
    assert (tmp_path / "home" / "out" / "report.html").exists() and not (tmp_path / "~").exists()


def test_keep_artefacts_refuses_to_overwrite_the_callers_files(reporting_stage, scratch, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("MY OWN REPORT")
    with reporting_stage().execute(DOCS) as result:
        with pytest.raises(ParamError, match=r"parameter 'folder': '.*mine' already holds report.html; pass "
                                             r"overwrite=True to replace it, or another folder"):
            result.keep_artefacts(mine)
        assert (mine / "report.html").read_text() == "MY OWN REPORT"
        assert result.keep_artefacts(mine, overwrite=True) == mine
    assert (mine / "report.html").read_text() == "<p>three rows</p>"


def test_keep_artefacts_into_a_file_is_a_clear_error(reporting_stage, scratch, tmp_path):
    (tmp_path / "a_file").write_text("x")
    with reporting_stage().execute(DOCS) as result, pytest.raises(ParamError, match=r"'.*a_file' is a file"):
        result.keep_artefacts(tmp_path / "a_file")


def test_a_workdir_holding_a_folder_named_like_a_side_output(reporting_stage, tmp_path):
    (tmp_path / "out" / "short").mkdir(parents=True)
    with pytest.raises(PipelineError, match=r"side output 'short' would be written to '.*out/short', which already "
                                            r"exists; pass an empty workdir, or remove it"):
        reporting_stage().execute(DOCS, workdir=tmp_path / "out")


def test_files_already_in_the_callers_workdir_are_not_artefacts(tmp_path):
    """keep_artefacts moved every file of the workdir, the caller's own notes too; a rewritten report still counts."""
    class Reports(Stage):
        """Test stage: writes one report."""

        def run(self, ctx: Context, data):
            ctx.artefact_path("report.html").write_text("<p>new</p>")
            return data.collect()

    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("mine")
    (workdir / "report.html").write_text("<p>old</p>")
    result = Reports().execute(DOCS, workdir=workdir)
    assert result.artefacts == ["report.html"]
    result.keep_artefacts(tmp_path / "kept")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["report.html"]
    assert (workdir / "notes.txt").read_text() == "mine"


def test_keeping_the_artefacts_where_they_already_are_keeps_them(reporting_stage, scratch, tmp_path):
    """keep_artefacts(workdir, overwrite=True) removed each file, then moved it onto itself: FileNotFoundError, lost."""
    result = reporting_stage().execute(DOCS, workdir=tmp_path / "work")
    assert result.keep_artefacts(tmp_path / "work", overwrite=True) == tmp_path / "work"
    assert (tmp_path / "work" / "report.html").read_text() == "<p>three rows</p>"
    temporary = reporting_stage().execute(DOCS)
    folder = temporary.artefact_dir
    temporary.keep_artefacts(folder)
    del temporary
    gc.collect()
    assert (folder / "report.html").exists()  # the caller keeps it: no longer removed with the result


def test_a_failed_call_leaves_the_callers_workdir_as_it_was(tmp_path):
    """A call that failed after writing a side output left its folder in the caller's workdir, and every later call
    was refused ("side output 'short' would be written to ..., which already exists")."""
    class FailsAfterItsSideOutput(Stage):
        """Test stage: writes a report and a side table, then fails (a bad row it meets late)."""

        def side_output_names(self):
            return ("short",)

        def run(self, ctx: Context, data):
            ctx.artefact_path("report.html").write_text("<p>half</p>")
            ctx.write_side_output("short", data.collect().head(1))
            raise PipelineError("row 3 is bad")

    (tmp_path / "notes.txt").write_text("mine")
    for _ in range(2):  # the second call fails as the first did, not on the first one's leftovers
        with pytest.raises(PipelineError, match="row 3 is bad"):
            FailsAfterItsSideOutput().execute(DOCS, workdir=tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name != "_checkpoint") == ["notes.txt"]  # resumes from it
    assert (tmp_path / "notes.txt").read_text() == "mine"
