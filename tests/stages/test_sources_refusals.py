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


@pytest.mark.parametrize(("source", "record", "shown"), [
    ("read_jsonl", "5", "holds 5,"), ("read_jsonl", "true", "holds true,"), ("read_jsonl", "[1, 2]", "holds [1, 2],"),
    ("read_corpus", '{"a": 1}', 'holds {"a": 1},'),
    ("read_jsonl", '5, "text": "a later string"', "holds 5,"),  # a key given twice: polars reads the first
])
def test_a_json_text_field_that_is_not_a_string_is_refused_with_its_line(tmp_path, source, record, shown):
    # Read as the string of its JSON ("5", "true", "[1, 2]") beside string texts: a document no one wrote.
    f = tmp_path / "in.jsonl"
    f.write_text(f'{{"id": "a", "text": "a real document", "meta": {{"text": 1}}}}\n{{"id": "b", "text": null}}\n'
                 f'{{"id": "c"}}\n{{"id": "d", "text": {record}}}\n')
    text = f"name: bad\nseed: 0\nsteps:\n  - id: src\n    stage: {source}\n    params: {{path: '{f}'}}\n"
    proc = fails_cleanly(tmp_path, text, f"step 'src' (stage '{source}'), parameter 'text_column', file '{f}'",
                         f"line 4: field 'text' {shown} not a string")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("escape", ["\\u00e9", "\\u00E9"])
def test_a_non_ascii_text_field_name_written_escaped_is_checked_too(tmp_path, escape):
    # Python's json.dumps (ensure_ascii, its default) writes the key "t\u00e9xt" for "téxt", and polars reads
    # it as that field: a number there became the text "5" unchecked.
    from pipeline.errors import InputDataError
    from stages.sources import ReadJsonl

    f = tmp_path / "in.jsonl"
    f.write_text('{"id": "a", "téxt": "a real document"}\n{"id": "b", "t' + escape + 'xt": 5}\n')
    with pytest.raises(InputDataError, match="line 2: field 't\u00e9xt' holds 5, not a string"):
        ReadJsonl(path=str(f), text_column="téxt").apply()


def test_null_or_missing_json_texts_are_still_read_as_null_and_nested_text_fields_are_not_checked(tmp_path):
    from stages.sources import ReadJsonl

    f = tmp_path / "in.jsonl"
    f.write_text('{"id": "a", "text": "doc", "meta": {"text": 1}}\n{"id": "b", "text": null}\n{"id": "c"}\n')
    assert ReadJsonl(path=str(f)).apply()["text"].to_list() == ["doc", None, None]


@pytest.mark.parametrize("source", ["read_parquet", "read_corpus"])
def test_a_text_column_of_nulls_only_is_refused_whatever_its_type_and_some_nulls_are_read(tmp_path, source):
    # A String column of nulls only was read as null documents, while one of type Null was refused at run time
    # only, with "cast it to a string first" (which makes it the former).
    import polars as pl
    from cli_failures import refused_by_validate

    from pipeline.errors import InputDataError
    from stages.read_corpus import ReadCorpus
    from stages.sources import ReadParquet

    stage = {"read_parquet": ReadParquet, "read_corpus": ReadCorpus}[source]
    typed, strings, some = (tmp_path / f"{name}.parquet" for name in ("typed", "strings", "some"))
    pl.DataFrame({"id": ["a", "b"], "body": [None, None]}).write_parquet(typed)
    pl.DataFrame({"id": ["a", "b"], "body": [None, None]}, schema={"id": pl.String, "body": pl.String}).write_parquet(
        strings)
    pl.DataFrame({"id": ["a", "b"], "body": ["words", None]}).write_parquet(some)
    config = f"name: bad\nsteps:\n  - id: src\n    stage: {source}\n    params: {{path: '{typed}', text_column: body}}\n"
    message = refused_by_validate(tmp_path / "c.yaml", config)
    assert f"step 'src' (stage '{source}'), parameter 'text_column', file '{typed}'" in message, message
    assert "column 'body' holds only nulls (type Null): no row has a text to read" in message
    with pytest.raises(InputDataError, match=r"column .body. holds only nulls \(all 2 rows\)") as err:
        stage(path=str(strings), text_column="body").apply()
    assert (err.value.param, err.value.file) == ("text_column", str(strings))
    assert stage(path=str(some), text_column="body").apply()["text"].to_list() == ["words", None]
