"""The report templates compile once per machine: later processes load them from the library cache."""

from __future__ import annotations

import jinja2
import pytest

from stages import _report


@pytest.fixture
def fresh_environment(tmp_path, monkeypatch):
    """A cache folder of this test's own, and `render` building its environment again (as a new process would)."""
    monkeypatch.setenv("CORPUSFORGE_CACHE", str(tmp_path / "cache"))
    _report._environment.cache_clear()
    yield
    _report._environment.cache_clear()


def _render() -> str:
    return _report.render("index.html.j2", title="Reports", rows=[], runs=0)


def test_a_second_process_renders_from_the_compiled_templates(fresh_environment, monkeypatch):
    first = _render()
    entries = sorted(_report.template_cache_dir().glob("*.cache"))
    assert entries  # written by the first render
    _report._environment.cache_clear()

    def no_compiling(*args, **kwargs):
        raise AssertionError("a template was compiled again")

    monkeypatch.setattr(jinja2.Environment, "compile", no_compiling)
    assert _render() == first


def test_a_damaged_entry_or_an_unwritable_folder_means_compiling_as_without_a_cache(fresh_environment, tmp_path,
                                                                                   monkeypatch):
    first = _render()
    for entry in _report.template_cache_dir().glob("*.cache"):
        entry.write_bytes(entry.read_bytes()[:20])  # cut short, past jinja2's header
    _report._environment.cache_clear()
    assert _render() == first
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("CORPUSFORGE_CACHE", str(blocked))
    _report._environment.cache_clear()
    assert _render() == first


def test_compiled_templates_are_never_read_from_a_folder_others_can_write_to(fresh_environment, monkeypatch):
    # They are code: a team's shared cache folder (group-writable) must not hand one member's code to another.
    first = _render()
    folder = _report.template_cache_dir()
    assert folder.stat().st_mode & 0o777 == 0o700  # made private
    folder.chmod(0o770)
    _report._environment.cache_clear()
    compiled = []
    real = jinja2.Environment.compile
    monkeypatch.setattr(jinja2.Environment, "compile", lambda self, *a, **k: compiled.append(1) or real(self, *a, **k))
    assert _render() == first
    assert compiled  # compiled again, the entries there not read
