"""Labelled corpora that ship with installed packages: scikit-learn digits and Debian fortunes."""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from pipeline.errors import ParamError, PipelineError
from stages.labelled_corpora import (
    FORTUNES_DIR_ENV,
    Fortunes,
    SklearnDigits,
    fortune_categories,
    fortunes_dir,
    fortunes_installed,
    read_fortunes,
)

needs_fortunes = pytest.mark.skipif(
    not fortunes_installed(), reason="needs the Debian fortunes: apt-get install fortunes fortunes-min"
)


def test_digits_are_64_pixel_images_with_ten_labels():
    table = SklearnDigits().apply()
    assert table.height == 1797
    assert table.schema == pl.Schema({"id": pl.Int64, "pixels": pl.List(pl.Float32), "label": pl.Int64})
    assert (table["pixels"].list.len() == 64).all()
    assert sorted(table["label"].unique().to_list()) == list(range(10))
    assert table["id"].is_unique().all()
    assert SklearnDigits(limit=100).apply().equals(table.head(100))
    with pytest.raises(ParamError, match="limit"):
        SklearnDigits.from_params({"limit": 0})


@needs_fortunes
def test_fortunes_are_labelled_by_category_with_stable_ids():
    table = Fortunes(categories=["science", "food"], max_per_category=50).apply()
    assert table.columns == ["id", "text", "label"]
    assert dict(table.group_by("label").len().iter_rows()) == {"science": 50, "food": 50}
    assert table["id"].is_unique().all()
    assert table["id"][0] == "science/0"
    assert not table["text"].str.contains("\x08").any()  # overstrike backspaces are resolved
    assert (table["text"].str.len_chars() > 0).all()
    everything = Fortunes(min_per_category=100).execute()
    assert everything.table["label"].n_unique() == len(everything.stats["categories"])
    assert min(everything.stats["categories"].values()) >= 100


@needs_fortunes
def test_overstruck_underlines_read_as_plain_text():
    items = read_fortunes(fortunes_dir() / "science")
    dragons = next(t for t in items if "Neantical Nillity" in t)
    assert "with what does exist." in dragons


@needs_fortunes
def test_unknown_category_names_the_choices():
    with pytest.raises(ParamError, match="unknown categor") as err:
        Fortunes(categories=["sciense"]).apply()
    assert err.value.param == "categories"
    assert "science" in str(err.value)
    assert "science" in fortune_categories()


def test_negative_counts_are_refused_when_built():
    for param in ("min_per_category", "max_per_category"):
        with pytest.raises(ParamError) as err:
            Fortunes.from_params({param: -1})
        assert err.value.param == param


def test_missing_fortunes_package_says_what_to_install(tmp_path):
    with pytest.raises(PipelineError, match="apt-get install fortunes fortunes-min"):
        Fortunes(directory=str(tmp_path / "no-such-dir")).apply()


@needs_fortunes
def test_fortunes_read_from_another_directory(tmp_path):
    shutil.copy(fortunes_dir() / "goedel", tmp_path / "goedel")
    table = Fortunes(directory=str(tmp_path)).apply()
    assert set(table["label"]) == {"goedel"}
    assert table.height == len(read_fortunes(tmp_path / "goedel"))


def test_an_empty_fortunes_folder_counts_as_not_installed(tmp_path, monkeypatch):
    monkeypatch.setenv(FORTUNES_DIR_ENV, str(tmp_path))
    assert not fortunes_installed()
    with pytest.raises(PipelineError, match="no fortune files in .*apt-get install fortunes fortunes-min"):
        Fortunes().apply()


def test_fortune_files_in_the_debian_format_are_read_from_the_env_folder(tmp_path, monkeypatch):
    """The reader, without the Debian package: a fortune file written from pydoc text, with overstrikes."""
    from pydoc_data.topics import topics

    items = [topics[k].strip() for k in ("assert", "pass", "del")]
    underlined = "".join(f"_\b{c}" for c in "bold")
    (tmp_path / "pydoc").write_text("\n%\n".join([*items, f"a {underlined} word"]) + "\n%\n")
    (tmp_path / "pydoc.dat").write_bytes(b"index")
    monkeypatch.setenv(FORTUNES_DIR_ENV, str(tmp_path))
    table = Fortunes().apply()
    assert table["label"].to_list() == ["pydoc"] * 4
    assert table["text"].to_list() == [*items, "a bold word"]
