"""The Python builder: Stage objects and in-memory frames give the YAML run's rows and fingerprints."""

from __future__ import annotations

import tempfile

import numpy as np
import polars as pl
import pytest
from conftest import write_config

import pipeline
from pipeline.builder import PipelineBuilder
from pipeline.errors import ParamError, PipelineError
from pipeline.runner import read_manifest, run_pipeline
from stages.dedup.exact import DedupExact
from stages.labelled_corpora import SklearnDigits
from stages.noise import LabelNoise
from stages.noise_arrays import dilute, flip_labels
from stages.sources import PythonDocs
from stages.transforms import LengthFilter, Split

YAML = """
name: built
seed: 5
steps:
  - id: docs
    stage: python_docs
    params: {granularity: paragraph, min_chars: 200}
  - id: prose
    stage: length_filter
    inputs: docs
    params: {min_words: 40}
  - id: split
    stage: split
    inputs: prose
    params: {fractions: {train: 0.9, test: 0.1}}
  - id: labels
    stage: select
    inputs: LABELS
  - id: noisy
    stage: label_noise
    inputs: labels
    params: {mode: flip, rate: 0.2}
"""


def _builder(frame: pl.DataFrame) -> PipelineBuilder:
    p = PipelineBuilder("built", seed=5)
    docs = p.add("docs", PythonDocs(granularity="paragraph", min_chars=200))
    prose = p.add("prose", LengthFilter(min_words=40), docs)
    p.add("split", Split(fractions={"train": 0.9, "test": 0.1}), prose)
    labels = p.add_frame("labels", frame)
    p.add("noisy", LabelNoise(mode="flip", rate=0.2), labels)
    return p


def test_builder_with_an_in_memory_frame_matches_the_yaml_run(tmp_path):
    digits = SklearnDigits(limit=300).apply()
    digits.write_parquet(tmp_path / "labels.parquet")
    config = write_config(tmp_path / "built.yaml", YAML.replace("LABELS", str(tmp_path / "labels.parquet")))
    from_yaml = run_pipeline(config, workdir=tmp_path / "yaml")
    built = _builder(pl.read_parquet(tmp_path / "labels.parquet")).run(workdir=tmp_path / "code")
    assert [s.id for s in built.steps] == [s.id for s in from_yaml.steps]
    for step in from_yaml.steps:
        yaml_dir, code_dir = tmp_path / "yaml" / "built" / step.id, tmp_path / "code" / "built" / step.id
        assert pipeline.load(code_dir).collect().equals(pipeline.load(yaml_dir).collect()), step.id
        assert read_manifest(code_dir)["output"] == read_manifest(yaml_dir)["output"], step.id
        if step.id != "labels":  # the one step whose input is a file at another path
            assert built.step(step.id).fingerprint == step.fingerprint, step.id
    # partition_profile holds timings and memory of the partitioned pass, which vary run to run.
    stats = [{k: v for k, v in read_manifest(tmp_path / side / "built" / "noisy")["stats"].items()
              if k != "partition_profile"} for side in ("code", "yaml")]
    assert stats[0] == stats[1]


def test_same_frame_is_cached_and_a_changed_frame_reruns_what_depends_on_it(tmp_path):
    digits = SklearnDigits(limit=200).apply()
    first = _builder(digits).run(workdir=tmp_path)
    assert set(first.ran) == {"docs", "prose", "split", "labels", "noisy"}
    assert set(_builder(digits.clone()).run(workdir=tmp_path).cached) == set(first.ran)
    changed = _builder(digits.head(150))
    frames = sorted(p.name for p in (tmp_path / "built" / "_inputs").iterdir())
    assert {s.id: s.action for s in changed.plan(workdir=tmp_path)} == {
        "docs": "cached", "prose": "cached", "split": "cached", "labels": "run", "noisy": "after"}
    # The plan wrote nothing into the run folder (it left the new frame under _inputs/, which no run had written).
    assert sorted(p.name for p in (tmp_path / "built" / "_inputs").iterdir()) == frames
    assert {s.id: s.action for s in _builder(digits).plan(workdir=tmp_path)}["labels"] == "cached"
    assert set(changed.run(workdir=tmp_path).ran) == {"labels", "noisy"}
    assert pipeline.load(tmp_path / "built" / "noisy").collect().height == 150


def test_frames_passed_straight_to_a_step_and_arrow_tables(tmp_path):
    digits = SklearnDigits(limit=100).apply()
    p = PipelineBuilder("direct", seed=1)
    p.add("noisy", LabelNoise(mode="flip", rate=0.3), data=digits.to_arrow())
    report = p.run(workdir=tmp_path)
    assert report.ran == ["noisy.data", "noisy"]
    expected = LabelNoise(mode="flip", rate=0.3).apply(digits, seed=1)
    assert pipeline.load(tmp_path / "direct" / "noisy").collect().equals(expected)


def test_library_calls_leave_no_temporary_folders(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    digits = SklearnDigits(limit=200).apply()
    docs = PythonDocs(granularity="paragraph").apply()
    LengthFilter(min_words=20).apply(docs)
    Split(fractions={"train": 0.5, "test": 0.5}).execute(docs, seed=0)
    LabelNoise(mode="flip", rate=0.2).execute(digits, seed=0)
    y = digits["label"].to_numpy()
    flip_labels(y, rate=0.2, details=True)
    dilute(np.stack(digits["pixels"].to_numpy()), y, alpha=1)
    _builder(digits).run(workdir=tmp_path / "runs")
    assert list(scratch.iterdir()) == []


def test_frame_digest_is_content_not_chunking():
    from pipeline.builder import frame_digest

    docs = PythonDocs(granularity="paragraph").apply()
    pieces = pl.concat([docs.head(7), docs.slice(7, 300), docs.tail(docs.height - 307)], rechunk=False)
    assert pieces.to_arrow().column("text").num_chunks == 3
    assert frame_digest(pieces.to_arrow(), batch_rows=100) == frame_digest(docs.to_arrow(), batch_rows=100)
    changed = docs.with_columns(pl.when(pl.col("id") == docs["id"][500]).then(pl.lit("x")).otherwise("text")
                                .alias("text"))
    assert frame_digest(changed.to_arrow()) != frame_digest(docs.to_arrow())


def test_a_bad_name_or_seed_is_refused_before_any_frame_is_written(tmp_path):
    """`run` writes frames under `<workdir>/<name>` before the config is parsed: '../x' wrote outside the workdir."""
    workdir = tmp_path / "runs"
    with pytest.raises(ParamError, match="parameter 'name'.*'../escaped'"):
        PipelineBuilder("../escaped").add("a", LengthFilter(), pl.DataFrame({"text": ["a"]}))
    with pytest.raises(ParamError, match="parameter 'seed'"):
        PipelineBuilder("ok", seed=-1)
    assert not (tmp_path / "escaped").exists() and not workdir.exists()


def test_add_refuses_unknown_or_doubled_inputs_and_taken_step_ids():
    frame = pl.DataFrame({"id": ["a"], "text": ["one two"]})
    p = PipelineBuilder("refusals")
    with pytest.raises(PipelineError, match="step 'x': unknown input 'dta'; 'length_filter' takes inputs: data"):
        p.add("x", LengthFilter(), dta=frame)
    with pytest.raises(PipelineError, match="input 'data' is given twice"):
        p.add("x", LengthFilter(), frame, data=frame)
    p.add("x", LengthFilter(), frame)
    with pytest.raises(PipelineError, match="step id 'x' is already taken"):
        p.add("x", LengthFilter(min_words=2), "x")
    with pytest.raises(PipelineError, match="step id 'x.data' is already taken"):
        p.add_frame("x.data", frame)
    assert [s["id"] for s in p._steps] == ["x.data", "x"]


def test_a_value_that_is_no_table_is_refused_naming_the_step_and_leaves_no_half_step():
    p = PipelineBuilder("refusals")
    frame = pl.DataFrame({"text": ["one"]})
    with pytest.raises(PipelineError, match=r"step 'y.reference': the frame \(dict\) cannot be read as a table"):
        p.add("y", DedupExact(), frame, {"text": ["no"]})
    assert p._steps == [] and p._frames == {}


def test_none_for_an_optional_input_leaves_it_out_and_for_a_required_one_is_refused(tmp_path):
    docs = pl.DataFrame({"id": ["a", "b"], "text": ["one two", "one two"]})
    p = PipelineBuilder("optional")
    p.add("dedup", DedupExact(), docs, reference=None)
    assert "reference" not in p.to_config(tmp_path)["steps"][-1]["inputs"]
    assert pipeline.load(p.run(workdir=tmp_path, quiet=True).steps[-1].path).collect()["id"].to_list() == ["a"]
    with pytest.raises(PipelineError, match=r"step 'x.data': the frame \(NoneType\) cannot be read as a table"):
        p.add("x", LengthFilter(), None)


def test_a_column_of_python_objects_is_refused_not_written_as_pointers():
    objects = pl.DataFrame({"text": ["a"], "meta": pl.Series([object()], dtype=pl.Object)})
    with pytest.raises(PipelineError, match="step 'x.data': the frame's column 'meta' holds Python objects"):
        PipelineBuilder("objects").add("x", LengthFilter(), objects)
