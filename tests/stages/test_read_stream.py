"""`read_iterable` streams from a generator, an IterableDataset or a local datasets script, one batch at a time."""

from __future__ import annotations

import textwrap
from pydoc_data.topics import topics

import polars as pl
import pytest

from pipeline.errors import InputDataError, ParamError
from pipeline.stage import Context
from stages.read_stream import ReadIterable

PULLED = {"rows": 0}
NAMES = sorted(topics)


def counted_topics(repeat: int = 1):
    """Every pydoc topic `repeat` times, counting how many rows the reader has pulled so far."""
    for r in range(repeat):
        for name in NAMES:
            PULLED["rows"] += 1
            yield {"doc": f"{name}#{r}", "body": topics[name]}


def twice_the_same_ids():
    for _ in range(2):
        for name in NAMES[:6]:
            yield {"id": name, "text": topics[name]}


def texts_after_nulls(nulls: int, rows: int = 10):
    """`rows` rows whose first `nulls` texts are null."""
    for i, name in enumerate(NAMES[:rows]):
        yield {"id": name, "text": None if i < nulls else topics[name]}


def one_text():
    return topics["lambda"]  # a string, not rows: its characters were read as rows of a column 'column_0'


def rows_with(bad: object, at: int = 1):
    """Three rows of text but for row `at`, which is `bad`: a whole row, or a dict with that text."""
    for i, name in enumerate(NAMES[:3]):
        yield (bad if not isinstance(bad, int) else {"id": name, "text": bad}) if i == at else {"id": name, "text": topics[name]}


def iterable_dataset(limit: int):
    import datasets

    return datasets.IterableDataset.from_generator(
        lambda: ({"id": n, "text": topics[n]} for n in NAMES[:limit]))


def test_reads_one_batch_at_a_time(tmp_path):
    PULLED["rows"] = 0
    stage = ReadIterable(factory="test_read_stream:counted_topics", kwargs={"repeat": 50}, text_column="body",
                         id_column="doc", batch_rows=16)
    batches = stage.run(Context(step_id="read", seed=0, out_dir=tmp_path))
    first = next(batches)
    assert first.height == 16 and first["id"][0] == f"{NAMES[0]}#0"
    assert PULLED["rows"] <= 17 < 50 * len(NAMES)  # one batch pulled, not the corpus
    rest = list(batches)
    assert sum(b.height for b in rest) + 16 == 50 * len(NAMES)


def test_whole_run_keeps_every_row_in_order():
    out = ReadIterable(factory="test_read_stream:counted_topics", text_column="body", id_column="doc",
                       batch_rows=7).apply()
    assert out["id"].to_list() == [f"{n}#0" for n in NAMES]
    assert out["text"].to_list() == [topics[n] for n in NAMES]


def test_iterable_dataset_and_limit():
    out = ReadIterable(factory="test_read_stream:iterable_dataset", kwargs={"limit": 30}, batch_rows=8,
                       limit=20).apply()
    assert out["id"].to_list() == NAMES[:20]


def test_local_datasets_script_is_streamed_without_the_hub(tmp_path):
    pl.DataFrame({"id": NAMES, "text": [topics[n] for n in NAMES]}).write_ndjson(tmp_path / "topics.jsonl")
    script = tmp_path / "topics_script.py"
    script.write_text(textwrap.dedent('''
        import json
        import datasets

        class Topics(datasets.GeneratorBasedBuilder):
            """A datasets script over a local JSON Lines file (no download)."""

            def _info(self):
                return datasets.DatasetInfo(features=datasets.Features(
                    {"id": datasets.Value("string"), "text": datasets.Value("string")}))

            def _split_generators(self, dl_manager):
                path = self.config.data_files["train"][0]
                return [datasets.SplitGenerator(name="train", gen_kwargs={"path": path})]

            def _generate_examples(self, path):
                with open(path, encoding="utf-8") as fh:
                    for i, line in enumerate(fh):
                        yield i, json.loads(line)
    '''))
    stage = ReadIterable(factory=f"{script}:Topics", kwargs={"data_files": str(tmp_path / "topics.jsonl")},
                         batch_rows=10)
    result = stage.execute()
    assert result.table["id"].to_list() == NAMES
    assert result.stats["rows_streamed"] == len(NAMES)


def test_a_batch_of_null_texts_is_read_as_nulls_and_a_factory_of_no_text_is_refused():
    # The first batch holds only nulls (type Null on its own); later batches have text.
    out = ReadIterable(factory="test_read_stream:texts_after_nulls", kwargs={"nulls": 5}, batch_rows=5).apply()
    assert out["text"].to_list() == [None] * 5 + [topics[n] for n in NAMES[5:10]]
    with pytest.raises(InputDataError, match=r"column 'text' holds only nulls \(all 10 rows\)"):
        ReadIterable(factory="test_read_stream:texts_after_nulls", kwargs={"nulls": 10}, batch_rows=5).apply()


def test_bad_factories_and_duplicate_ids():
    with pytest.raises(ParamError, match="expects 'module:function'"):
        ReadIterable(factory="no_colon").apply()
    with pytest.raises(ParamError, match="has no 'nope'; it defines: .*counted_topics"):
        ReadIterable(factory="test_read_stream:nope").apply()
    with pytest.raises(InputDataError, match="ids are not unique"):
        ReadIterable(factory="test_read_stream:twice_the_same_ids", batch_rows=4).apply()
    with pytest.raises(ParamError, match="must return an iterable of rows .dicts., got str") as err:
        ReadIterable(factory="test_read_stream:one_text").apply()
    assert err.value.param == "factory"


def test_validating_and_fingerprinting_run_none_of_the_factory_s_code(tmp_path):
    marker = tmp_path / "ran"
    script = tmp_path / "rows.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n\n"
                      "def rows(n=3):\n    yield from ({'id': str(i), 'text': 'x'} for i in range(n))\n")
    stage = ReadIterable(factory=f"{script}:rows", kwargs={"n": 4})
    stage.validate()
    first = stage.fingerprint_extra()
    assert not marker.exists()
    script.write_text(script.read_text() + "# changed\n")
    assert stage.fingerprint_extra() != first  # the source is still what the fingerprint covers
    assert stage.apply().height == 4 and marker.exists()  # running the step runs it, as documented


def test_factory_names_are_checked_from_the_source(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def rows(:\n")
    with pytest.raises(ParamError, match="does not parse: .* at line 1"):
        ReadIterable(factory=f"{broken}:rows").validate()
    script = tmp_path / "some.py"
    script.write_text("import json\ntry:\n    from os import sep as made\nexcept ImportError:\n    pass\n"
                      "def rows():\n    yield {'id': 'a', 'text': 'b'}\n")
    for name in ("rows", "json", "made"):
        ReadIterable(factory=f"{script}:{name}").validate()
    with pytest.raises(ParamError, match="has no 'nope'; it defines: json, made, rows"):
        ReadIterable(factory=f"{script}:nope").validate()
    with pytest.raises(ParamError, match="no module named 'stages.no_such_module'"):
        ReadIterable(factory="stages.no_such_module:rows").validate()
    ReadIterable(factory="stages.read_stream:pydoc_topics").validate()


def test_a_factory_that_is_no_function_or_takes_other_kwargs_is_refused():
    with pytest.raises(ParamError, match="'json:__doc__' is a str, not a function"):
        ReadIterable(factory="json:__doc__").apply()
    with pytest.raises(ParamError, match="parameter 'kwargs'.*unexpected keyword argument 'limt'"):
        ReadIterable(factory="stages.read_stream:pydoc_topics", kwargs={"limt": 3}).apply()


@pytest.mark.parametrize("bad, param, says", [(5, "text_column", "row 1: field 'text' holds 5, not a string"),
                                              (["x"], "factory", "row 1 is a list, not a dict")])
def test_a_text_that_is_no_string_or_a_row_that_is_no_dict_is_refused_naming_the_row(bad, param, says):
    # A number beside string texts was read as its digits ("5"); a row that was no dict failed inside polars.
    with pytest.raises(InputDataError, match=says) as refused:
        ReadIterable(factory="test_read_stream:rows_with", kwargs={"bad": bad}).apply()
    assert refused.value.param == param
