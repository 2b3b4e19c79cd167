"""stages.factory_source: a factory's files and names, found without running the factory's code."""

from __future__ import annotations

import textwrap

import pytest

from pipeline.errors import ParamError
from stages.factory_source import check_factory, factory_sources
from stages.read_stream import ReadIterable

MARK = "open(__file__ + '.ran', 'w').close()\n"  # a module that leaves a trace when it runs


@pytest.fixture
def package(tmp_path, monkeypatch):
    """`mypkg`, whose __init__ re-exports `make_rows` from `mypkg.rows` (relative) and `other` from `mypkg.deep`
    through `mypkg.mid` (absolute), each module marking that it ran."""
    root = tmp_path / "mypkg"
    root.mkdir()
    (root / "__init__.py").write_text(MARK + "from .rows import make_rows\nfrom mypkg.mid import other as renamed\n")
    (root / "rows.py").write_text(MARK + "def make_rows(n=3):\n    yield from ({'id': str(i), 'text': 'one'} "
                                          "for i in range(n))\n")
    (root / "mid.py").write_text(MARK + "from .deep import other\n")
    (root / "deep.py").write_text(MARK + "def other():\n    return []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return root


def test_a_re_exported_name_is_followed_to_the_file_that_defines_it(package):
    assert factory_sources("mypkg:make_rows") == [package / "__init__.py", package / "rows.py"]
    assert factory_sources("mypkg:renamed") == [package / "__init__.py", package / "mid.py", package / "deep.py"]
    assert factory_sources("mypkg.rows:make_rows") == [package / "rows.py"]
    check_factory("mypkg:make_rows")
    assert not list(package.glob("*.ran"))  # nothing ran


def test_editing_the_defining_file_changes_the_fingerprint(package):
    stage = ReadIterable(factory="mypkg:make_rows")
    before = stage.fingerprint_extra()
    (package / "rows.py").write_text((package / "rows.py").read_text().replace("'one'", "'two'"))
    assert stage.fingerprint_extra() != before
    assert not list(package.glob("*.ran"))


def test_names_bound_in_any_top_level_statement_are_accepted(tmp_path):
    script = tmp_path / "many.py"
    script.write_text(textwrap.dedent("""\
        import sys
        for loop_rows in [list]:
            pass
        while not (walrus_rows := list):
            pass
        match sys.platform:
            case str() as match_rows:
                pass
        try:
            pass
        except* ValueError:
            pass
        else:
            trystar_rows = list
        def setup():
            global late_rows
            late_rows = list
        table = {}
        table["not_a_name"] = 1
        """))
    for name in ("loop_rows", "walrus_rows", "match_rows", "trystar_rows", "late_rows", "setup", "sys"):
        check_factory(f"{script}:{name}")
    with pytest.raises(ParamError, match="has no 'not_a_name'; it defines: late_rows, loop_rows, match_rows, "
                                         "setup, sys, table, trystar_rows, walrus_rows$"):
        check_factory(f"{script}:not_a_name")


def test_names_a_module_binds_at_run_time_are_left_to_the_run(tmp_path):
    script = tmp_path / "dynamic.py"
    script.write_text("globals()['made_rows'] = list\n")
    check_factory(f"{script}:made_rows")  # cannot be told without running it: not refused
    star = tmp_path / "star.py"
    star.write_text("from os.path import *\n")
    check_factory(f"{star}:join")
