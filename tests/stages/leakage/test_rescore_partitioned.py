"""The paraphrase kind on the partitioned contract: its BM25 weights come from one sample of the corpus
(`stages/leakage/sample.py`), not from each batch, so its candidates, scores and verdicts are the same for any
partitioning of the training corpus, and the audit runs partitioned with it."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from test_chunks_partitioned import audit_inputs, run_audit, same_findings

from pipeline.executors import LocalExecutor
from pipeline.io import Dataset
from stages.leakage import LeakageAudit
from stages.leakage.sample import train_sample


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Dataset]:
    return audit_inputs(tmp_path_factory.mktemp("audit"))


@pytest.mark.parametrize("alone", [False, True], ids=["with-chunk-pass", "alone"])
def test_paraphrase_evidence_is_the_same_for_any_partitioning(inputs, tmp_path, alone):
    params = {"evidence": ["paraphrase"], "candidates": 4, "report_items": 3,
              **({"chunk_overlap": False, "semantic": False} if alone else {})}
    assert LeakageAudit(**params).partitionable()
    whole = run_audit(inputs, tmp_path / "whole", LocalExecutor(partition_bytes=1 << 40), **params)
    split = run_audit(inputs, tmp_path / "split", LocalExecutor(partition_bytes=1), **params)
    assert whole[2]["partitions"] == 1 and split[2]["partitions"] > 2
    same_findings(whole, split)
    # The verbatim items own their passages (their upper-cased and shuffled copies name them as owner), score
    # above the threshold and above every clean control.
    findings, n = whole[0], inputs["test"].num_rows - 5
    copies = findings.head(n)
    owners = copies.filter(pl.col("paraphrase_owner").is_null())
    assert owners.height == n // 3 and set(copies["paraphrase_owner"].drop_nulls()) <= set(owners["test_id"])
    assert (owners["paraphrase_score"] >= owners["paraphrase_threshold"]).all()
    assert owners["paraphrase_score"].min() > findings.tail(5)["paraphrase_score"].max()
    assert whole[2]["paraphrase_pairs_rescored"] == split[2]["paraphrase_pairs_rescored"] > 0


def test_the_sample_is_the_whole_corpus_when_small_and_a_spread_of_partitions_when_large(inputs):
    text = inputs["train"].collect()["text"]
    columns, to_text = ["text"], lambda b: b.get_column("text")
    assert train_sample(inputs["train"], columns, to_text).equals(text)
    budget = int(text.str.len_bytes().sum()) // 3
    sample = train_sample(inputs["train"], columns, to_text, budget)
    assert budget * 0.7 <= sample.str.len_bytes().sum() <= budget * 1.3
    rows = text.is_in(sample.implode()).arg_true()
    assert rows.min() == 0 and rows.max() > 0.8 * text.len()  # from the first partition to the last
    assert sample.equals(train_sample(inputs["train"], columns, to_text, budget))


def test_candidates_and_their_scores_do_not_depend_on_the_batch_boundaries(inputs):
    """Batches of 10 rows or of 7 (as other partitionings cut them): the same kept chunks, the same BM25 scores."""
    from stages.leakage import TestSide, TrainBatch
    from stages.leakage.rescore import ParaphraseEvidence
    from stages.text import tokenize

    corpus = inputs["train"].collect()["text"]
    texts = inputs["test"].collect()["text"]
    audit = LeakageAudit(ngram=False, chunk_overlap=False, semantic=False, evidence=["paraphrase"], candidates=4)
    side = TestSide(texts=texts, tokens=tokenize(texts))
    kinds = []
    for rows in (10, 7):
        kind = ParaphraseEvidence(audit, side, {"train_sample": corpus})
        for lo in range(0, len(corpus), rows):
            kind.add_batch(TrainBatch(texts=corpus[lo : lo + rows], tokens=tokenize(corpus[lo : lo + rows]), base=lo))
        kinds.append(kind.found)
    for generator in ("dense", "lexical"):
        a, b = getattr(kinds[0], generator), getattr(kinds[1], generator)
        assert (a.doc >= 0).all() and np.array_equal(a.doc, b.doc) and np.array_equal(a.start, b.start)
        assert np.allclose(a.sim, b.sim, rtol=1e-6, atol=1e-6)
