"""Source stages (stages/sources.py) name the step, the parameter and the file of unreadable input, exit code 2."""

from __future__ import annotations

import pytest
from cli_failures import fails_cleanly


def test_non_utf8_text(tmp_path):
    d = tmp_path / "texts"
    d.mkdir()
    (d / "good.txt").write_text("plain words")
    (d / "latin1.txt").write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    text = f"name: bad\nseed: 0\nsteps:\n  - id: t\n    stage: read_text\n    params: {{path: '{d}'}}\n"
    fails_cleanly(tmp_path, text, "step 't' (stage 'read_text')", "parameter 'encoding'", "latin1.txt", "not valid utf-8 at byte 3")


@pytest.mark.parametrize("source,content,param", [
    ("read_jsonl", b'{"text": "ok"}\n{"text": \n', "path"),
    ("read_csv", b"id,body\n1,hello\n", "text_column"),
])
def test_source_errors_name_file_and_param(tmp_path, source, content, param):
    f = tmp_path / ("in.jsonl" if source == "read_jsonl" else "in.csv")
    f.write_bytes(content)
    text = f"name: bad\nseed: 0\nsteps:\n  - id: src\n    stage: {source}\n    params: {{path: '{f}'}}\n"
    fails_cleanly(tmp_path, text, "step 'src'", f"parameter '{param}'", str(f))


@pytest.mark.parametrize("params, param, words", [
    ("{encoding: bogus}", "encoding", "unknown encoding 'bogus'"),  # refused only when the step ran
    ("{glob: ''}", "glob", "is empty"),  # matched every file in the folder: a Parquet file was read as text
])
def test_read_text_refuses_an_unknown_encoding_or_an_empty_glob_at_validate(tmp_path, params, param, words):
    from cli_failures import refused_by_validate

    (tmp_path / "a.txt").write_text("plain words")
    message = refused_by_validate(tmp_path / "bad.yaml", f"""
name: bad
steps:
  - id: src
    stage: read_text
    params: {{path: '{tmp_path}', {params[1:-1]}}}
""")
    assert f"step 'src' (stage 'read_text'), parameter '{param}', file '{tmp_path / 'bad.yaml'}'" in message
    assert words in message
