"""`Stage.execute` / `apply` from training code: a wrong call is refused in one line naming the input or parameter
(a PipelineError), never by a raw conversion error or by silently using the other of two tables."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import polars as pl
import pytest

from pipeline.errors import InputDataError, ParamError, PipelineError
from pipeline.stage import Stage
from stages.dedup.exact import DedupExact
from stages.transforms import LengthFilter

DOCS = pl.DataFrame({"id": ["a", "b"], "text": ["one two three", "four"]})


@pytest.mark.parametrize("value, kind", [(None, "NoneType"), (5, "int"), ({"text": ["a"]}, "dict"),
                                         (pd.DataFrame({"text": ["a", 1]}), "DataFrame")])
def test_a_value_that_is_no_table_names_the_input(value, kind):
    with pytest.raises(InputDataError, match=rf"stage 'length_filter': input 'data' \({kind}\) cannot be read as a "
                                             "table.*pass a polars, Arrow or pandas table"):
        LengthFilter().apply(value)


def test_a_misspelt_input_is_named_not_reported_as_missing():
    with pytest.raises(InputDataError, match="unknown input 'dta'; 'length_filter' takes inputs: data"):
        LengthFilter().apply(dta=DOCS)


def test_an_input_given_twice_or_too_many_inputs_are_refused():
    with pytest.raises(InputDataError, match="input 'data' is given twice"):
        LengthFilter(min_words=2).apply(DOCS, data=DOCS.head(0))
    with pytest.raises(InputDataError, match=r"takes 1 input\(s\) \(data\), got 2 positionally"):
        LengthFilter().apply(DOCS, DOCS)


def test_a_workdir_that_is_a_file_or_not_a_path_is_refused(tmp_path):
    taken = tmp_path / "report.txt"
    taken.write_text("mine")
    with pytest.raises(ParamError, match="parameter 'workdir'.*is a file"):
        LengthFilter().execute(DOCS, workdir=taken)
    with pytest.raises(ParamError, match=r"parameter 'workdir': expects a folder path \(str or Path\), got 5"):
        LengthFilter().execute(DOCS, workdir=5)
    assert taken.read_text() == "mine"


def test_none_for_an_optional_input_leaves_it_out():
    docs = pl.DataFrame({"id": ["a", "b"], "text": ["one two", "one two"]})
    assert DedupExact().apply(docs, reference=None)["id"].to_list() == ["a"]
    with pytest.raises(InputDataError, match=r"input 'data' \(NoneType\) cannot be read as a table"):
        DedupExact().apply(None, reference=docs)


def test_a_required_package_that_is_missing_is_named_before_running():
    class NeedsAPackage(Stage):
        """Test stage: needs a package that is not installed; run would fail deep inside with ImportError."""

        requires = ("no_such_package_corpusforge",)

        def run(self, ctx, data):
            import no_such_package_corpusforge  # noqa: F401

    with pytest.raises(PipelineError, match="needs the Python package 'no_such_package_corpusforge'.*pip install"):
        NeedsAPackage().apply(DOCS)


def test_a_run_that_returns_no_table_says_what_run_must_return():
    class ForgetsToReturn(Stage):
        """Test stage: its run returns None (a stage author's slip); was "'NoneType' object is not iterable"."""

        def run(self, ctx, data):
            data.collect()

    with pytest.raises(TypeError, match="run\\(\\) returned a NoneType; return a polars DataFrame"):
        ForgetsToReturn().apply(DOCS)


def test_checking_required_packages_imports_none_of_them():
    # execute checks `requires` up front; importing them cost the n-gram audit faiss's import (25 ms of a ~0.8 s
    # audit) although only the chunk and semantic kinds use it.
    code = ("import sys, polars as pl\nfrom stages.leakage import LeakageAudit\n"
            "t = pl.DataFrame({'id': ['a', 'b'], 'text': [' '.join(str(i) for i in range(20)), 'a b c d e f g h']})\n"
            "LeakageAudit(n=8, chunk_overlap=False, semantic=False).apply(train=t, test=t)\n"
            "print('faiss' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
