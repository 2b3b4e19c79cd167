"""The leakage report's duplicates section (stages/leakage/duplicates.py): a dedup step upstream of the audit."""

from __future__ import annotations

import json
from pydoc_data.topics import topics

import polars as pl
import pytest

from pipeline.errors import InputDataError
from pipeline.runner import run_pipeline
from stages.leakage import LeakageAudit


def _corpora(tmp_path):
    names = sorted(topics)
    train = pl.DataFrame({"id": [f"t{i}" for i in range(30)], "text": [topics[n] for n in names[:30]]})
    leaked = train["text"][3]
    # Test items: a verbatim copy of a training document (leaked), and clean passages of other topics.
    test = pl.DataFrame({"id": ["leaked", "c1", "c2"], "text": [leaked, topics[names[50]], topics[names[60]]]})
    train.write_parquet(tmp_path / "train.parquet")
    test.write_parquet(tmp_path / "test.parquet")


CONFIG = """
name: dup
seed: 0
steps:
  - {{id: train, stage: read_corpus, params: {{path: {root}/train.parquet}}}}
  - {{id: test, stage: read_corpus, params: {{path: {root}/test.parquet}}}}
  - id: decontaminated
    stage: dedup_exact
    inputs: {{data: train, reference: test}}
  - id: audit
    stage: leakage_audit
    inputs: {{train: train, test: test, duplicates: "decontaminated:removed"}}
    params: {{chunk_overlap: false, semantic: false}}
"""


def test_audit_reports_what_an_upstream_dedup_step_removed(tmp_path):
    _corpora(tmp_path)
    config = tmp_path / "dup.yaml"
    config.write_text(CONFIG.format(root=tmp_path))
    run_pipeline(str(config), workdir=tmp_path / "runs", quiet=True)
    step = tmp_path / "runs" / "dup" / "audit"
    dup = json.loads((step / "_manifest.json").read_text())["stats"]["duplicates"]
    assert dup["step"] == "decontaminated (dedup_exact)"
    assert dup["removed_rows"] == 1 and dup["stats"]["rows_removed"] == 1 and dup["stats"]["rows_in"] == 30
    assert dup["test_items_matched"] == 1 and dup["test_items_matched_and_flagged"] == 1
    assert dup["examples"]["rows"][0][:3] == ["t3", "leaked", "reference"]
    assert dup["clusters_listed"] == 1
    html, md = (step / "report.html").read_text(), (step / "report.md").read_text()
    assert "<h2>Duplicates (step decontaminated (dedup_exact))</h2>" in html
    assert "of which this audit flags <b>1</b>" in html
    assert "## Duplicates (step decontaminated (dedup_exact))" in md and "| t3 | leaked | reference |" in md


def test_duplicates_input_must_be_a_removed_side_output():
    train = pl.DataFrame({"id": ["a"], "text": ["some words " * 20]})
    with pytest.raises(InputDataError, match="input 'duplicates' lacks column 'cluster_id'"):
        LeakageAudit(chunk_overlap=False, semantic=False).execute(train=train, test=train, duplicates=train)


def test_side_output_folders_are_found_in_either_run_layout(tmp_path):
    from pipeline.io import Dataset
    from stages.leakage.duplicates import _side_dirs

    for side, step, clusters in (("near/removed", "near", "near/clusters"), ("near@removed", "near", "near@clusters")):
        folder = tmp_path / side
        folder.mkdir(parents=True)
        pl.DataFrame({"x": [1]}).write_parquet(folder / "part-0.parquet")
        assert _side_dirs(Dataset.from_parquet(folder)) == (tmp_path / step, tmp_path / clusters)
    assert _side_dirs(Dataset(frame=pl.DataFrame({"x": [1]}), label="frame")) == (None, None)
