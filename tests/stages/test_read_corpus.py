"""Real corpus formats, written from real text (standard-library sources), read by `read_corpus`."""

from __future__ import annotations

import gzip
import json
import shutil

import polars as pl
import pyarrow as pa
import pytest
from cli_failures import refused_by_validate

from pipeline.errors import InputDataError, ParamError, PipelineError
from stages.formats import FileFormat, detect
from stages.read_corpus import ReadCorpus
from stages.sources import PythonStdlib, ReadCsv, ReadHfDataset, ReadJsonl


@pytest.fixture(scope="module")
def corpus() -> pl.DataFrame:
    """Forty standard-library modules: real text with quotes, commas and newlines in every row."""
    return PythonStdlib(limit=40).apply().select("id", "text", "module")


def _gzip(src, dst):
    dst.write_bytes(gzip.compress(src.read_bytes()))
    return dst


def _zstd(src, dst):
    with pa.CompressedOutputStream(str(dst), "zstd") as out:
        out.write(src.read_bytes())
    return dst


def _same(out: pl.DataFrame, corpus: pl.DataFrame) -> None:
    assert out["id"].to_list() == corpus["id"].to_list()
    assert out["text"].to_list() == corpus["text"].to_list()


def test_compressed_jsonl_and_csv(tmp_path, corpus):
    corpus.write_ndjson(tmp_path / "c.jsonl")
    corpus.write_csv(tmp_path / "c.csv")
    for path in (_gzip(tmp_path / "c.jsonl", tmp_path / "c.jsonl.gz"), _zstd(tmp_path / "c.jsonl", tmp_path / "c.jsonl.zst"),
                 _gzip(tmp_path / "c.csv", tmp_path / "c.csv.gz"), _zstd(tmp_path / "c.csv", tmp_path / "c.csv.zst")):
        assert path.stat().st_size < (tmp_path / "c.jsonl").stat().st_size / 2  # really compressed
        _same(ReadCorpus(path=str(path)).apply(), corpus)
    _same(ReadJsonl(path=str(tmp_path / "c.jsonl.zst")).apply(), corpus)
    _same(ReadCsv(path=str(tmp_path / "c.csv.gz")).apply(), corpus)
    result = ReadCorpus(path=str(tmp_path / "c.jsonl.gz")).execute()
    assert result.stats["formats"] == {"jsonl+gzip": 1}


def test_folders_of_csv_or_jsonl_and_parquet_globs(tmp_path, corpus):
    for folder, write, ext in (("csvs", "write_csv", "csv"), ("jsonls", "write_ndjson", "jsonl"),
                               ("pq", "write_parquet", "parquet")):
        (tmp_path / folder / "sub").mkdir(parents=True)
        getattr(corpus.head(15), write)(tmp_path / folder / f"a.{ext}")
        getattr(corpus.slice(15, 15), write)(tmp_path / folder / "sub" / f"b.{ext}")
        getattr(corpus.tail(10), write)(tmp_path / folder / f"c.{ext}")
        (tmp_path / folder / "_SUCCESS").write_text("")  # bookkeeping files are never data
    expected = pl.concat([corpus.head(15), corpus.tail(10), corpus.slice(15, 15)])  # a, c, sub/b
    for folder in ("csvs", "jsonls"):
        _same(ReadCorpus(path=str(tmp_path / folder)).apply(), expected)
    _same(ReadCorpus(path=str(tmp_path / "pq" / "**" / "*.parquet")).apply(), expected)


def test_format_told_from_content_when_the_extension_is_missing_or_wrong(tmp_path, corpus):
    corpus.write_ndjson(tmp_path / "c.jsonl")
    corpus.write_parquet(tmp_path / "c.parquet")
    corpus.write_csv(tmp_path / "c.csv")
    cases = {
        "shard-0001": (_zstd(tmp_path / "c.jsonl", tmp_path / "shard-0001"), FileFormat("jsonl", "zstd")),
        "data.json": (shutil.copy(tmp_path / "c.jsonl", tmp_path / "data.json"), FileFormat("jsonl", None)),
        "table.csv": (shutil.copy(tmp_path / "c.parquet", tmp_path / "table.csv"), FileFormat("parquet", None)),
        "export": (_gzip(tmp_path / "c.csv", tmp_path / "export"), FileFormat("csv", "gzip")),
        "notes.gz": (_gzip(tmp_path / "c.jsonl", tmp_path / "notes.gz"), FileFormat("jsonl", "gzip")),
        "export.parquet": (shutil.copy(tmp_path / "c.csv", tmp_path / "export.parquet"), FileFormat("csv", None)),
    }
    for name, (path, expected) in cases.items():
        assert detect(path) == expected, name
        _same(ReadCorpus(path=str(path)).apply(), corpus)


def test_saved_datasetdict_with_path_colon_split(tmp_path, corpus):
    import datasets

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_polars(corpus.head(30)),
                               "test": datasets.Dataset.from_polars(corpus.tail(10))})
    dd.save_to_disk(str(tmp_path / "dd"))
    _same(ReadCorpus(path=f"{tmp_path / 'dd'}:test").apply(), corpus.tail(10))
    _same(ReadCorpus(path=str(tmp_path / "dd"), split="train").apply(), corpus.head(30))
    _same(ReadHfDataset(path=f"{tmp_path / 'dd'}:train").apply(), corpus.head(30))


def test_unknown_split_names_the_available_ones(tmp_path, corpus):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_polars(corpus.head(5)),
                          "validation": datasets.Dataset.from_polars(corpus.tail(5))}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ParamError, match="no split 'test'; available splits: train, validation") as err:
        ReadCorpus(path=f"{tmp_path / 'dd'}:test").apply()
    assert err.value.param == "split"
    with pytest.raises(ParamError, match="choose a split: train, validation"):
        ReadCorpus(path=str(tmp_path / "dd")).apply()


def test_corrupt_gzip_and_unknown_formats_are_refused_clearly(tmp_path, corpus):
    corpus.write_ndjson(tmp_path / "c.jsonl")
    data = _gzip(tmp_path / "c.jsonl", tmp_path / "c.jsonl.gz").read_bytes()
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputDataError, match="corrupt or truncated gzip data") as err:
        ReadCorpus(path=str(tmp_path / "cut.jsonl.gz")).apply()
    assert "cut.jsonl.gz" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "image.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(InputDataError, match="cannot tell what this file holds .*Parquet, JSON Lines, CSV"):
        ReadCorpus(path=str(tmp_path / "image.bin")).apply()
    with pytest.raises(ParamError, match="unknown format 'xml'; supported: auto, parquet, jsonl, csv, text"):
        ReadCorpus(path=str(tmp_path / "c.jsonl"), format="xml").apply()


@pytest.mark.parametrize("name, fmt", [("c.jsonl", "parquet"), ("cut.parquet", "auto"), ("cut.parquet", "parquet")])
def test_a_file_that_is_not_parquet_is_refused_by_validate(tmp_path, corpus, name, fmt):
    """`format: parquet` on JSON Lines, or a Parquet file cut short, failed as ArrowInvalid (exit 1, a 'bug')."""
    corpus.write_ndjson(tmp_path / "c.jsonl")
    corpus.write_parquet(tmp_path / "whole.parquet")
    data = (tmp_path / "whole.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[:100] + data[-8:])  # PAR1 at both ends, the rest missing
    config = (f"name: bad\nseed: 0\nsteps:\n  - id: r\n    stage: read_corpus\n"
              f"    params: {{path: '{tmp_path / name}', format: {fmt}}}\n")
    message = refused_by_validate(tmp_path / "c.yaml", config)
    assert f"step 'r' (stage 'read_corpus'), parameter 'path', file '{tmp_path / name}': cannot read as parquet (" \
        in message


def test_a_damaged_parquet_page_is_refused_when_read(tmp_path):
    """A sound footer passes `validate`; a page that does not decode is refused naming the file, when read."""
    pl.DataFrame({"id": [str(i) for i in range(400)], "text": ["words " * 8] * 400}).write_parquet(
        tmp_path / "p.parquet", compression="uncompressed", row_group_size=100)
    data = bytearray((tmp_path / "p.parquet").read_bytes())
    data[len(data) // 2: len(data) // 2 + 2000] = b"A" * 2000
    (tmp_path / "p.parquet").write_bytes(bytes(data))
    with pytest.raises(InputDataError, match="cannot read as parquet") as err:
        ReadCorpus(path=str(tmp_path / "p.parquet"), format="parquet").apply()
    assert err.value.param == "path" and "p.parquet" in err.value.file


def test_relative_paths_name_the_directory_they_were_resolved_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamError) as err:
        ReadCorpus(path="corpus/missing.jsonl.gz").apply()
    assert f"corpus/missing.jsonl.gz (resolved from {tmp_path})" in str(err.value)


def test_an_empty_jsonl_file_has_no_rows_not_one_empty_text(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_bytes(b"\n\n")
    for name in ("empty.jsonl", "blank.jsonl"):
        assert detect(tmp_path / name).format == "jsonl"
        with pytest.raises(InputDataError, match="the source has no rows"):  # as format='jsonl' says
            ReadCorpus(path=str(tmp_path / name)).apply()
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n')
    assert ReadCorpus(path=str(tmp_path)).apply()["id"].to_list() == ["b.jsonl:0"]  # the empty files add nothing


def test_a_lone_surrogate_escape_in_jsonl_is_refused_with_its_line(tmp_path):
    """polars reads "\\ud800" with no low half as NUL; a pair (json.dumps' escape of an emoji) or an escaped
    backslash before it is fine."""
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "ok \\ud83d\\ude00"}\n{"text": "a\\\\ud800 literal"}\n{"text": "abc\\ud800def"}\n')
    with pytest.raises(InputDataError, match=r"s.jsonl': line 3: a lone surrogate escape \\ud800 \(half of a "
                                             r"pair, not valid Unicode; it would be read as NUL\)"):
        ReadCorpus(path=str(path)).apply()
    path.write_text('{"text": "ok \\ud83d\\ude00"}\n{"text": "a\\\\ud800 literal"}\n')
    assert ReadCorpus(path=str(path)).apply()["text"].to_list() == ["ok \U0001F600", "a\\ud800 literal"]


def test_duplicate_ids_in_the_inputs_own_id_column_get_advice_that_works(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(InputDataError, match=r"ids are not unique.*a column named 'id' is the id even with "
                                             r"id_column unset; .*rename or drop 'id'"):
        ReadCorpus(path=str(path)).apply()
    keyed = tmp_path / "keyed.jsonl"
    keyed.write_text('{"key": "k", "text": "x"}\n{"key": "k", "text": "y"}\n')
    with pytest.raises(InputDataError, match=r"pass id_column naming a unique column, or leave it out"):
        ReadCorpus(path=str(keyed), id_column="key").apply()


def test_a_run_folder_is_refused_not_read_as_one_corpus(tmp_path, corpus):
    # Read whole, a run folder is its steps and side outputs together: docs and split@train as one corpus.
    import pipeline

    config = {"name": "r", "seed": 0, "steps": [
        {"id": "docs", "stage": "read_corpus", "params": {"path": str(tmp_path / "c.jsonl")}},
        {"id": "split", "stage": "split", "inputs": "docs"}]}
    corpus.write_ndjson(tmp_path / "c.jsonl")
    pipeline.run_pipeline(config, workdir=tmp_path / "runs", quiet=True)
    with pytest.raises(PipelineError, match="is a run folder, not a step: name one of its steps \\(docs, split\\)") as err:
        ReadCorpus(path=str(tmp_path / "runs" / "r")).apply()
    assert err.value.param == "path"
    assert ReadCorpus(path=str(tmp_path / "runs" / "r" / "docs")).apply().height == corpus.height


def test_a_json_array_or_a_pretty_printed_object_named_json_is_refused_not_read_as_one_text(tmp_path):
    records = [{"id": "1", "text": "hello there"}, {"id": "2", "text": "bye now"}]
    (tmp_path / "array.json").write_text(json.dumps(records))
    (tmp_path / "pretty.jsonl").write_text(json.dumps(records[0], indent=2) + "\n")
    for name in ("array.json", "pretty.jsonl"):
        with pytest.raises(InputDataError, match=r"is named as JSON but is not JSON Lines.*jq -c") as err:
            ReadCorpus(path=str(tmp_path / name)).apply()
        assert err.value.param == "path" and name in str(err.value)
    one = ReadCorpus(path=str(tmp_path / "array.json"), format="text").apply()  # asked for: one document
    assert one["text"].to_list() == [json.dumps(records)]


def test_integers_beyond_64_bits_are_read_as_decimals_parquet_can_store(tmp_path):
    """A uint64 hash in JSON Lines or CSV was read as Int128, which no Parquet writer takes (exit 1)."""
    (tmp_path / "h.jsonl").write_text('{"text": "a", "h": 18446744073709551615}\n{"text": "b", "h": -3}\n')
    (tmp_path / "h.csv").write_text("text,h\na,18446744073709551615\nb,-3\n")
    (tmp_path / "wide.jsonl").write_text(f'{{"text": "a", "h": {10**38}}}\n')  # 39 digits: beyond Decimal(38, 0)
    for name in ("h.jsonl", "h.csv"):
        out = ReadCorpus(path=str(tmp_path / name)).apply()
        assert out.schema["h"] == pl.Decimal(38, 0)
        assert out.to_arrow().column("h").to_pylist() == [2**64 - 1, -3]
    assert ReadCorpus(path=str(tmp_path / "h.csv")).output_schema({})["h"] == pl.Decimal(38, 0)
    with pytest.raises(InputDataError, match="column 'h' holds an integer of more than 38 digits"):
        ReadCorpus(path=str(tmp_path / "wide.jsonl")).apply()


def test_a_folder_holding_a_run_folder_is_refused_not_read_with_the_runs_outputs(tmp_path):
    # `path: data` over data/raw/ and data/runs/: every step's Parquet was read as corpus rows too.
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "c.jsonl").write_text('{"text": "a real document"}\n')
    step = tmp_path / "data" / "runs" / "study" / "docs"
    step.mkdir(parents=True)
    pl.DataFrame({"id": ["x"], "text": ["a step's output"]}).write_parquet(step / "part-00000.parquet")
    (step.parent / "_run.json").write_text("{}")
    with pytest.raises(ParamError, match=r"holds the run folder '.*runs/study', whose step outputs would be read"):
        ReadCorpus(path=str(tmp_path / "data")).apply()
    assert ReadCorpus(path=str(tmp_path / "data" / "raw")).apply()["text"].to_list() == ["a real document"]


def test_plain_text_among_table_files_is_refused_not_read_as_a_document(tmp_path):
    # A downloaded dataset's folder: data/*.parquet beside README.md. The README was one more row of the corpus.
    (tmp_path / "data").mkdir()
    pl.DataFrame({"text": ["doc one", "doc two"]}).write_parquet(tmp_path / "data" / "train-00000.parquet")
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# My dataset\n")
    with pytest.raises(ParamError, match=r"holds parquet files and plain text \(README.md\).*glob: '\*\*/\*.parquet'"):
        ReadCorpus(path=str(tmp_path)).apply()
    out = ReadCorpus(path=str(tmp_path), glob="**/*.parquet").apply()
    assert out["text"].to_list() == ["doc one", "doc two"]


def test_json_lines_in_another_encoding_are_refused_as_json_lines_naming_the_encoding(tmp_path):
    (tmp_path / "latin1.jsonl").write_bytes('{"text": "café"}\n'.encode("latin-1"))
    assert detect(tmp_path / "latin1.jsonl").format == "jsonl"  # not "a JSON array or an object over lines"
    with pytest.raises(InputDataError, match=r"cannot read as jsonl \(.*UTF-8"):
        ReadCorpus(path=str(tmp_path / "latin1.jsonl")).apply()


def test_a_file_that_is_not_utf8_is_refused_saying_how_to_convert_it(tmp_path):
    # An Excel CSV in cp1252 read "cannot read as csv (invalid utf-8 sequence)" and nothing about what to do.
    (tmp_path / "excel.csv").write_bytes("id,text\n1,café au lait\n".encode("cp1252"))
    (tmp_path / "notes.txt").write_bytes("café".encode("cp1252"))
    for name in ("excel.csv", "notes.txt"):
        with pytest.raises(InputDataError, match=r"the file is not UTF-8: convert it first, e\.g\. iconv"):
            ReadCorpus(path=str(tmp_path / name)).apply()


def test_a_text_files_bom_is_not_part_of_its_text(tmp_path):
    # JSON Lines and CSV dropped a UTF-8 BOM, a text file kept it: the same text saved by two editors
    # was two different documents.
    (tmp_path / "bom.txt").write_bytes("\ufeffsame text\n".encode())
    assert ReadCorpus(path=str(tmp_path / "bom.txt")).apply()["text"].to_list() == ["same text\n"]


def test_csv_lines_ending_in_a_lone_carriage_return_are_refused_not_read_as_no_rows(tmp_path):
    # The CSV reader does not split at a lone \r: every row went into the header and the file was
    # refused as "the source has no rows".
    (tmp_path / "mac.csv").write_bytes(b"id,text\r1,a\r2,b\r")
    with pytest.raises(InputDataError, match=r"lone carriage return") as refused:
        ReadCorpus(path=str(tmp_path / "mac.csv")).apply()
    assert refused.value.param == "path" and "mac.csv" in str(refused.value)
    (tmp_path / "mac.csv").write_bytes(b"id,text\r\n1,a\r\n")  # \r\n is fine
    assert ReadCorpus(path=str(tmp_path / "mac.csv")).apply()["text"].to_list() == ["a"]



@pytest.mark.parametrize("id_column, rows, says", [
    ("k", ['{"id": "a", "k": 1, "text": "x"}', '{"id": "b", "k": 2, "text": "y"}'], "also has a column 'id'"),
    ("text", ['{"text": "x"}', '{"text": "y"}'], "names the text column"),
    ("tags", ['{"tags": ["p"], "text": "x"}', '{"tags": ["q"], "text": "y"}'], r"holds List\(String\), not ids")])
def test_an_id_column_that_cannot_name_rows_is_refused_in_one_line(tmp_path, id_column, rows, says):
    # Each failed inside polars (exit 1): a second 'id' column, a text column left with no text, a list cast
    # to a string.
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(InputDataError, match=says) as refused:
        ReadCorpus(path=str(path), id_column=id_column).apply()
    assert refused.value.param == "id_column"


def test_files_of_one_name_under_a_glob_get_distinct_ids(tmp_path):
    # Named by their bare file name, a/x.txt and b/x.txt were both 'x.txt:0': two rows, one id.
    for part in ("a", "b"):
        (tmp_path / part).mkdir()
        (tmp_path / part / "x.jsonl").write_text(f'{{"text": "{part}"}}\n')
    out = ReadCorpus(path=str(tmp_path / "**" / "*.jsonl")).apply()
    assert out["id"].to_list() == ["a/x.jsonl:0", "b/x.jsonl:0"]
    assert ReadCorpus(path=str(tmp_path / "a" / "x.jsonl")).apply()["id"].to_list() == ["x.jsonl:0"]
