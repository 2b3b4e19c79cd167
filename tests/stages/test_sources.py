"""Sources turn real files into the id + text shape, with stable unique ids and clear failures."""

from __future__ import annotations

import json
from pydoc_data.topics import topics

import polars as pl
import pytest

from pipeline.errors import InputDataError, ParamError
from stages.sources import PythonDocs, PythonStdlib, ReadCsv, ReadHfDataset, ReadJsonl, ReadParquet, ReadText

NAMES = sorted(topics)[:12]


@pytest.fixture
def docs() -> pl.DataFrame:
    return pl.DataFrame({"doc": [f"d{i}" for i in range(len(NAMES))], "body": [topics[n] for n in NAMES],
                         "topic": NAMES})


def test_parquet_folder_keeps_columns_and_ids(tmp_path, docs):
    d = tmp_path / "pq"
    d.mkdir()
    docs.head(6).write_parquet(d / "a.parquet")
    docs.tail(6).write_parquet(d / "b.parquet")
    out = ReadParquet(path=str(d), text_column="body").apply()
    assert out.columns == ["id", "doc", "text", "topic"] and out.height == 12
    assert out["id"].to_list()[:2] == ["a.parquet:0", "a.parquet:1"] and out["id"][6] == "b.parquet:0"
    by_col = ReadParquet(path=str(d / "*.parquet"), text_column="body", id_column="doc").apply()
    assert by_col["id"].to_list() == docs["doc"].to_list()


def test_jsonl_csv_text_sources(tmp_path, docs):
    jl = tmp_path / "docs.jsonl"
    jl.write_text("".join(json.dumps({"id": d, "text": t}) + "\n" for d, t in zip(docs["doc"], docs["body"])))
    out = ReadJsonl(path=str(jl)).apply()
    assert out["id"].to_list() == docs["doc"].to_list() and out["text"].to_list() == docs["body"].to_list()
    csv = tmp_path / "docs.csv"
    docs.write_csv(csv)
    out = ReadCsv(path=str(csv), text_column="body", id_column="doc").apply()
    assert out["text"].to_list() == docs["body"].to_list()
    tdir = tmp_path / "texts"
    tdir.mkdir()
    for name in NAMES[:3]:
        (tdir / f"{name}.txt").write_text(topics[name])
    files = ReadText(path=str(tdir)).apply()
    assert files.height == 3 and files["id"][0] == f"{NAMES[0]}.txt"
    lines = ReadText(path=str(tdir), unit="line").apply()
    expected = sum(1 for n in NAMES[:3] for line in topics[n].splitlines() if line.strip())
    assert lines.height == expected and lines["id"].is_unique().all()


def test_hf_dataset_on_disk(tmp_path, docs):
    import datasets

    datasets.Dataset.from_polars(docs).save_to_disk(str(tmp_path / "hf"))
    out = ReadHfDataset(path=str(tmp_path / "hf"), text_column="body", id_column="doc").apply()
    assert out["id"].to_list() == docs["doc"].to_list()
    datasets.DatasetDict({"train": datasets.Dataset.from_polars(docs)}).save_to_disk(str(tmp_path / "hfd"))
    with pytest.raises(ParamError, match="split"):
        ReadHfDataset(path=str(tmp_path / "hfd"), text_column="body").apply()


def test_duplicate_ids_and_missing_text_column(tmp_path, docs):
    f = tmp_path / "dup.parquet"
    docs.with_columns(pl.lit("same").alias("doc")).write_parquet(f)
    with pytest.raises(InputDataError, match="not unique"):
        ReadParquet(path=str(f), text_column="body", id_column="doc").apply()
    with pytest.raises(InputDataError, match="no column 'content'"):
        ReadParquet(path=str(f), text_column="content").apply()


def test_embedded_corpora_are_real_text():
    topics_df = PythonDocs().apply()
    assert topics_df.height == len(topics) and topics_df["id"].is_unique().all()
    paras = PythonDocs(granularity="paragraph", min_chars=200).apply()
    assert paras.height > 300 and paras["text"].str.len_chars().min() >= 200
    src = PythonStdlib(limit=20).apply()
    assert src.height == 20 and src["text"].str.contains("import|def |class ").sum() >= 15
    assert src["id"].str.ends_with(".py").all()


def test_text_lines_break_only_at_newlines_and_a_bom_is_not_text(tmp_path):
    # A form feed (page break in GNU docs, Python sources) or U+2028 inside a line split it in two and
    # numbered every later line wrong; the BOM an editor wrote became the first document's first character.
    (tmp_path / "f.txt").write_bytes("\ufeffone\x0cstill one\r\ntwo\u2028same\nthree\n".encode())
    lines = ReadText(path=str(tmp_path), unit="line").apply()
    assert lines["id"].to_list() == ["f.txt:1", "f.txt:2", "f.txt:3"]
    assert lines["text"].to_list() == ["one\x0cstill one", "two\u2028same", "three"]
    assert ReadText(path=str(tmp_path)).apply()["text"][0].startswith("one")


def test_stdlib_module_of_a_package_init_is_the_package():
    # json/__init__.py was module 'json.__init__', a name nothing imports.
    out = PythonStdlib().apply()
    modules = dict(zip(out["id"], out["module"]))
    assert modules["json/__init__.py"] == "json" and modules["json/decoder.py"] == "json.decoder"
    assert not any(m.endswith("__init__") for m in out["module"])


def test_read_text_names_a_glob_s_files_by_their_path_from_its_folder(tmp_path):
    # Bare file names made a/x.txt and b/x.txt one id, refused with a hint about an 'id' column it does not have.
    for part in ("a", "b"):
        (tmp_path / part).mkdir()
        (tmp_path / part / "x.txt").write_text(part)
    assert ReadText(path=str(tmp_path / "*" / "x.txt")).apply()["id"].to_list() == ["a/x.txt", "b/x.txt"]
