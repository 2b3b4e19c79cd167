"""stdlib_docstrings: real labelled text from the standard library, no download."""

import pytest

from pipeline.errors import ParamError
from stages.stdlib_docstrings import StdlibDocstrings


def test_docstrings_are_labelled_by_package_and_capped():
    table = StdlibDocstrings(packages=["json", "email", "logging"], min_chars=80, max_per_package=40).apply()
    counts = dict(table.group_by("label").len().iter_rows())
    assert set(counts) == {"json", "email", "logging"}
    assert all(0 < n <= 40 for n in counts.values())
    assert table["text"].str.len_chars().min() >= 80
    assert table["id"].is_unique().all()
    assert table.filter(table["label"] == "json")["text"].str.contains("JSON").any()


def test_unknown_package_names_the_param():
    with pytest.raises(ParamError, match="packages"):
        StdlibDocstrings(packages=["json", "no_such_package"]).validate()
