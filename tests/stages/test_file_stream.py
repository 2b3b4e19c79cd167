"""File sources stream in bounded batches with the rows and types of reading each file whole.

Batches are forced small (a few KB) so every file is cut many times: JSON Lines whose fields change
type or first appear late, CSV with quoted newlines and doubled quotes, multi-row-group Parquet,
each plain, gzip and zstd. The reference is what the sources did before streaming: read each file
whole, concatenate with `diagonal_relaxed`, normalise. Text is real (standard-library docstrings).
"""

from __future__ import annotations

import gzip
import json
import pydoc
import subprocess
import sys

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, run_cli, write_config

import stages.file_stream as file_stream
from pipeline.errors import InputDataError, ParamError
from pipeline.writing import write_table
from stages.formats import detect, read_frame
from stages.read_corpus import ReadCorpus
from stages.sources import ReadCsv, ReadJsonl, ReadParquet, normalise

TEXTS = [line for line in pydoc.render_doc(json, renderer=pydoc.plaintext).splitlines() if line.strip()][:600]


def _compress(data: bytes, compression: str | None) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        sink = pa.BufferOutputStream()
        out = pa.CompressedOutputStream(sink, "zstd")
        out.write(data)
        out.flush()
        out.close()
        return sink.getvalue().to_pybytes()
    return data


def _jsonl(n_late: int = 0) -> bytes:
    rows = []
    for i, text in enumerate(TEXTS):
        row = {"text": text, "n": i if i < 400 else i + 0.5, "line": i}
        if i >= len(TEXTS) - n_late:
            row["late"] = f"field {i}"  # a field that only the last rows have
        rows.append(json.dumps(row))
    return ("\n".join(rows) + "\n").encode()


def _csv() -> bytes:
    frame = pl.DataFrame({"doc": [f"d{i}" for i in range(len(TEXTS))],
                          "text": [f'{t}\nsecond line, "quoted" {i}' if i % 7 == 0 else t for i, t in enumerate(TEXTS)],
                          "score": [i / 3 for i in range(len(TEXTS))]})
    return frame.write_csv().encode()


def _whole(files, fmt, **kw) -> pl.DataFrame:
    """The sources before streaming: every file read whole, concatenated, normalised."""
    frames = [read_frame(f, fmt if not isinstance(fmt, str) else detect(f), **kw) for f in files]
    df = pl.concat(frames, how="diagonal_relaxed")
    names = [f.name for f in files]
    ids = pl.Series("id", [f"{n}:{i}" for n, fr in zip(names, frames) for i in range(fr.height)], dtype=pl.String)
    return normalise(df, text_column="text", id_column=None, default_ids=ids, label="x")


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(file_stream, "STREAM_BATCH_BYTES", 4096)


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_jsonl_streams_the_same_rows_and_types(tmp_path, small_batches, compression):
    files = []
    for k, late in enumerate((0, 5)):
        f = tmp_path / f"part{k}.jsonl{'.gz' if compression == 'gzip' else '.zst' if compression == 'zstd' else ''}"
        f.write_bytes(_compress(_jsonl(late), compression))
        files.append(f)
    expected = _whole(files, "auto")
    stage = ReadJsonl(path=str(tmp_path))
    batches = list(stage.run(None))
    assert len(batches) > 10  # really cut into many batches
    got = pl.concat(batches)
    assert got.schema == expected.schema and got.equals(expected)
    assert got.schema["n"] == pl.Float64 and got["late"].null_count() == got.height - 5


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_a_jsonl_file_starting_with_a_byte_order_mark_reads_as_without(tmp_path, small_batches, compression):
    # A UTF-8 BOM (Windows editors) failed the whole file: "cannot read as jsonl (... at character 0 ('ï'))".
    from stages.read_corpus import ReadCorpus

    plain, marked = tmp_path / "plain", tmp_path / "marked"
    for folder, head in ((plain, b""), (marked, b"\xef\xbb\xbf")):
        folder.mkdir()
        suffix = ".jsonl.gz" if compression else ".jsonl"
        (folder / f"docs{suffix}").write_bytes(_compress(head + _jsonl(0), compression))
    expected = pl.concat(list(ReadJsonl(path=str(plain)).run(None)))
    assert pl.concat(list(ReadJsonl(path=str(marked)).run(None))).equals(expected)
    assert ReadCorpus(path=str(marked)).apply().equals(ReadCorpus(path=str(plain)).apply())


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_csv_with_quoted_newlines_streams_the_same_rows(tmp_path, small_batches, compression):
    f = tmp_path / "docs.csv"
    f.write_bytes(_compress(_csv(), compression))
    expected = _whole([f], "auto")
    batches = list(ReadCsv(path=str(f), id_column="doc").run(None))
    assert len(batches) > 5
    got = pl.concat(batches)
    assert got.drop("id").equals(expected.drop("id", "doc")) and got["id"].to_list() == expected["doc"].to_list()
    assert got["text"].str.contains('"quoted"').sum() == sum(1 for i in range(len(TEXTS)) if i % 7 == 0)


def test_parquet_streams_by_row_groups(tmp_path, small_batches):
    f = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": TEXTS, "n": list(range(len(TEXTS)))}), f, row_group_size=50)
    batches = list(ReadParquet(path=str(f)).run(None))
    assert len(batches) > 5
    assert pl.concat(batches).equals(_whole([f], "auto"))


def test_a_file_below_the_batch_size_writes_the_same_bytes_as_before(tmp_path):
    f = tmp_path / "docs.jsonl.zst"
    f.write_bytes(_compress(_jsonl(3), "zstd"))
    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir()
    after.mkdir()
    write_table(_whole([f], "auto"), before)
    write_table(ReadCorpus(path=str(f)).run(_Ctx()), after)
    assert (before / "part-00000.parquet").read_bytes() == (after / "part-00000.parquet").read_bytes()


class _Ctx:
    def record(self, key, value):
        pass


def test_ids_repeated_across_batches_are_named(tmp_path, small_batches):
    rows = [json.dumps({"id": f"doc{i % 300}", "text": t}) for i, t in enumerate(TEXTS)]
    (tmp_path / "dup.jsonl").write_text("\n".join(rows) + "\n")
    stage = ReadJsonl(path=str(tmp_path / "dup.jsonl"))
    with pytest.raises(InputDataError, match=r"ids are not unique, e.g. \['doc0', 'doc1', 'doc2'\]"):
        list(stage.run(None))


def test_a_truncated_gzip_mid_stream_is_one_error(tmp_path, small_batches):
    data = _compress(_jsonl() * 4, "gzip")
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputDataError, match="corrupt or truncated gzip data"):
        list(ReadJsonl(path=str(tmp_path / "cut.jsonl.gz")).run(None))


def test_validate_checks_the_readers_of_sources(tmp_path):
    """Sources declare their columns: a reader asking for a column no source makes fails at validate."""
    pl.DataFrame({"doc": ["a", "b"], "body": ["one text", "two texts"], "lang": ["en", "en"]}).write_csv(
        tmp_path / "c.csv")
    config = write_config(tmp_path / "p.yaml", f"""
name: declared
steps:
  - id: docs
    stage: python_docs
  - id: short
    stage: length_filter
    inputs: docs
    params: {{text_column: body}}
  - id: csv
    stage: read_csv
    params: {{path: {tmp_path / 'c.csv'}, text_column: body, id_column: doc}}
  - id: pick
    stage: select
    inputs: csv
    params: {{columns: [text, title]}}
""")
    proc = run_cli("validate", str(config))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "short" in proc.stderr and "'body'" in proc.stderr and "'topic'" in proc.stderr
    config.write_text(config.read_text().replace("{text_column: body}", "{min_words: 1}"))
    proc = run_cli("validate", str(config))
    assert proc.returncode == 2 and "'title'" in proc.stderr and "['id', 'text', 'lang']" in proc.stderr, proc.stderr


def test_peak_memory_does_not_grow_with_the_file(tmp_path):
    """Peak RSS of a process streaming a JSONL file 8x larger stays within a margin of the 1x run."""
    line = json.dumps({"text": " ".join(TEXTS[:40])}) + "\n"
    unit = 4 << 20
    for name, size in (("one", unit), ("eight", 8 * unit)):
        with open(tmp_path / f"{name}.jsonl", "w") as fh:
            fh.write(line * (size // len(line)))
    script = (
        "import sys, resource, stages.file_stream as fs\n"
        "fs.STREAM_BATCH_BYTES = 1 << 20\n"
        "from stages.sources import ReadJsonl\n"
        "rows = sum(b.height for b in ReadJsonl(path=sys.argv[1]).run(None))\n"
        "print(rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    peaks = {}
    for name in ("one", "eight"):
        out = subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{name}.jsonl")], cwd=REPO,
                             capture_output=True, text=True, timeout=300, check=True).stdout.split()
        peaks[name] = int(out[1]) * 1024
    # The whole 32 MB file read at once would add at least its size (twice: bytes and frame).
    assert peaks["eight"] - peaks["one"] < 16 << 20, peaks


def test_a_categorical_text_column_is_read_as_strings_and_declared_so():
    # `pipeline validate` counts Categorical as text; the run refused it ("holds Categorical, not text").
    from stages.file_stream import normalise, normalised_schema

    frame = pl.DataFrame({"id": ["a", "b"], "body": ["one text", "two"]}).with_columns(pl.col("body").cast(pl.Categorical))
    out = normalise(frame, text_column="body", id_column="id", default_ids=None, label="f.parquet")
    assert out.schema["text"] == pl.String and out["text"].to_list() == ["one text", "two"]
    assert normalised_schema(dict(frame.schema), "body", "id")["text"] == pl.String


@pytest.mark.parametrize("stage", [ReadCsv, ReadCorpus])
def test_a_csv_column_typed_by_its_first_rows_can_be_given_its_type(tmp_path, small_batches, stage):
    # Integers for 10,000 rows, then text: the stream was refused with polars' ten-line parse error (its advice,
    # infer_schema_length and schema_overrides, no parameter of the stage), with no way to read the file.
    f = tmp_path / "codes.csv"
    f.write_text("text,code\n" + "".join(f"w,{i}\n" for i in range(10_000)) + "w,n/a\n")
    with pytest.raises(InputDataError) as refused:
        stage(path=str(f)).apply()
    assert str(refused.value).splitlines() == [
        f"parameter 'schema_overrides', file '{f}': column 'code' holds 'n/a', which is no Int64 (its type, inferred "
        "from the first 10,000 rows); set schema_overrides: {code: String} (or another type) to read the column as "
        "that type"]
    read = stage(path=str(f), schema_overrides={"code": "String"}).apply()
    assert read.schema["code"] == pl.String and read["code"].to_list() == [str(i) for i in range(10_000)] + ["n/a"]
    assert stage(path=str(f), schema_overrides={"code": "string"}).output_schema({})["code"] == pl.String


def test_schema_overrides_refuses_an_unknown_type_or_column_and_a_value_that_does_not_fit(tmp_path):
    f = tmp_path / "codes.csv"
    f.write_text("text,code\nw,007\nv,12\n")
    assert ReadCsv(path=str(f), schema_overrides={"code": "String"}).apply()["code"].to_list() == ["007", "12"]
    with pytest.raises(ParamError, match="column 'code': unknown type 'Text'; types are: String, Int64"):
        ReadCsv(path=str(f), schema_overrides={"code": "Text"}).apply()
    with pytest.raises(ParamError, match=r"names column 'cod', which no CSV file has; CSV columns are: \['code', "):
        ReadCorpus(path=str(f), schema_overrides={"cod": "String"}).apply()
    with pytest.raises(InputDataError, match="column 'text' holds 'w', which is no Int64 .its type, given in schema_overrides."):
        ReadCsv(path=str(f), schema_overrides={"text": "Int64"}).apply()
