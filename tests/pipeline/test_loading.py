"""Reading a run's outputs from Python (pipeline.load, load_dataset): the library round trip."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import write_config
from engine_config import CONFIG

import pipeline


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "eng.yaml", CONFIG)


def test_library_api_roundtrip(config, tmp_path):
    from stages.transforms import LengthFilter, Split

    docs = pl.DataFrame({"id": ["a", "b", "c"], "text": ["one two three", "one", "four five six seven"]})
    kept = LengthFilter(min_words=3).apply(docs)
    assert kept["id"].to_list() == ["a", "c"]
    result = Split(fractions={"train": 2 / 3, "test": 1 / 3}).execute(docs, seed=3)
    assert result.side_outputs["train"].height == 2 and result.side_outputs["test"].height == 1
    assert LengthFilter(min_words=3).get_params() == {"min_chars": 0, "max_chars": None, "min_words": 3,
                                                      "text_column": "text"}
    work = tmp_path / "runs"
    pipeline.run_pipeline(config, workdir=work)
    lf = pipeline.load(work / "eng" / "split")
    assert isinstance(lf, pl.LazyFrame)
    hf = pipeline.load_dataset(work / "eng" / "split")
    assert hf.num_rows == 50 and hf.column_names == ["id", "text", "topic", "split"]
    assert hf[0]["id"] == lf.collect()["id"][0]
    assert hf.cache_files, "the datasets.Dataset must be backed by a memory-mapped file"


def test_a_run_folder_or_workdir_is_not_read_as_one_table(config, tmp_path):
    # Read whole, a run folder is every step's rows together (docs and the filtered docs: both schemas agree).
    work = tmp_path / "runs"
    pipeline.run_pipeline(config, workdir=work)
    with pytest.raises(pipeline.PipelineError, match="is a run folder, not a step: name one of its steps .*split"):
        pipeline.load(work / "eng")
    with pytest.raises(pipeline.PipelineError, match=r"is a workdir of runs \(eng\)"):
        pipeline.load_dataset(work)


def test_a_bare_name_that_does_not_exist_is_refused_naming_it(tmp_path, monkeypatch):
    # `pipeline.load("split")` from a folder without it: ValueError "PosixPath('.') has an empty name".
    from pipeline import load
    from pipeline.errors import InputDataError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputDataError, match="nosuch .*does not exist"):
        load("nosuch")


def test_load_dataset_expands_home_in_cache_dir_and_refuses_one_it_cannot_make(tmp_path, monkeypatch):
    table = tmp_path / "t.parquet"
    pl.DataFrame({"id": ["a"], "text": ["one"]}).write_parquet(table)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert pipeline.load_dataset(table, cache_dir="~/arrow")["id"] == ["a"]
    assert list((tmp_path / "home" / "arrow").glob("*.arrow")) and not (tmp_path / "~").exists()
    with pytest.raises(pipeline.ParamError, match="parameter 'cache_dir': cannot make the folder .*t.parquet"):
        pipeline.load_dataset(table, cache_dir=table)
    with pytest.raises(pipeline.ParamError, match=r"parameter 'cache_dir': expects a folder path \(str or Path\)"):
        pipeline.load_dataset(table, cache_dir=5)
