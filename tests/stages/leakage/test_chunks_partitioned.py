"""Chunk-overlap and semantic evidence on the partitioned contract: the k best training chunks per test
chunk merge, so the audit finds the same for any partitioning of the training corpus."""

from __future__ import annotations

from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.executors import LocalExecutor
from pipeline.io import Dataset
from pipeline.stage import Context
from stages.text import tokenize


def audit_inputs(folder: Path, ids: bool = True) -> dict[str, Dataset]:
    """Pydoc paragraphs in two files of 15-row groups; test items: verbatim, upper-cased, shuffled, clean."""
    paragraphs = [p for t in sorted(topics) for p in topics[t].split("\n\n") if len(p.split()) > 30][:180]
    train = pl.DataFrame({"id": [f"d{i}" for i in range(len(paragraphs))], "text": paragraphs})
    if not ids:
        train = train.drop("id")
    folder.mkdir(parents=True, exist_ok=True)
    for k, part in enumerate((train[:80], train[80:])):
        pq.write_table(part.to_arrow(), folder / f"part-{k:05d}.parquet", row_group_size=15)
    rng = np.random.default_rng(0)
    words = [p.split()[:70] for p in paragraphs[7::23]]
    shuffled = [" ".join(rng.permutation(w)) for w in words]
    clean = [" ".join(topics[t].split()[:70]) for t in sorted(topics)[-5:]]
    texts = [" ".join(w) for w in words] + [" ".join(w).upper() for w in words] + shuffled + clean
    test = pl.DataFrame({"id": [f"t{i}" for i in range(len(texts))], "text": texts})
    return {"train": Dataset.from_parquet(folder), "test": Dataset.from_any(test)}


def run_audit(inputs: dict[str, Dataset], out: Path, executor, **params):
    from stages.leakage import LeakageAudit

    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(step_id="audit", seed=0, out_dir=out)
    stage = LeakageAudit(**{"ngram": False, "backend": "static", "chunk_tokens": 32, **params})
    executor.run_step(stage, ctx, inputs, out)
    sides = {name: pl.read_parquet(out / name / "*.parquet") for name in ctx.side_outputs}
    return pl.read_parquet(out / "*.parquet"), sides, ctx.stats


def same_findings(a, b) -> None:
    assert a[0].equals(b[0])
    for name in a[1]:
        assert a[1][name].equals(b[1][name]), name
    varying = {"timings_s", "chunk_pass_s", "ngram_mb_per_s", "partitions", "partition_profile"}
    assert {k: v for k, v in a[2].items() if k not in varying} == {k: v for k, v in b[2].items() if k not in varying}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Dataset]:
    return audit_inputs(tmp_path_factory.mktemp("audit"))


@pytest.fixture(scope="module")
def whole(inputs, tmp_path_factory):
    return run_audit(inputs, tmp_path_factory.mktemp("whole"), LocalExecutor(partition_bytes=1 << 40))


@pytest.mark.parametrize("size", [1, 15_000])
def test_chunk_and_semantic_evidence_are_the_same_for_any_partitioning(inputs, whole, tmp_path, size):
    split = run_audit(inputs, tmp_path / "split", LocalExecutor(partition_bytes=size))
    assert split[2]["partitions"] > 2 and whole[2]["partitions"] == 1
    same_findings(whole, split)
    findings = whole[0]
    n = len(inputs["test"].frame) - 5
    flagged = findings.head(n)
    assert (flagged["verdict"] != "clean").all()  # verbatim, upper-cased and word-shuffled copies
    assert (flagged["max_similarity"] >= 0.9).all()
    assert (flagged.head(2 * n // 3)["chunk_overlap_ratio"] >= 0.5).all()
    assert whole[2]["train_chunks_embedded"] == split[2]["train_chunks_embedded"] > 0


def test_a_corpus_without_ids_names_its_rows_by_corpus_row_in_any_partitioning(tmp_path):
    """Without an id column a training row is named by its corpus-wide row number, whatever partition it
    was read in (a partition-local number named a row of a later partition after a row of the first)."""
    inputs = audit_inputs(tmp_path / "in", ids=False)
    split = run_audit(inputs, tmp_path / "split", LocalExecutor(partition_bytes=1), ngram=True, n=8)
    whole = run_audit(inputs, tmp_path / "whole", LocalExecutor(partition_bytes=1 << 40), ngram=True, n=8)
    assert split[2]["partitions"] > 2
    same_findings(whole, split)
    named = split[1]["matches"]["train_id"]
    assert named.n_unique() > 10 and named.cast(pl.Int64).max() >= 80  # rows of the second file: corpus-wide
    paragraphs = pl.read_parquet(tmp_path / "in" / "*.parquet")["text"]
    norm = lambda s: " ".join(tokenize(pl.Series([s])).words.to_list())  # noqa: E731
    test = dict(zip([f"t{i}" for i in range(inputs["test"].frame.height)], inputs["test"].frame["text"]))
    for row in split[1]["matches"].filter(pl.col("kind") == "ngram").iter_rows(named=True):
        train_span = paragraphs[int(row["train_id"])][row["train_char_start"]:row["train_char_end"]]
        assert norm(train_span) == norm(test[row["test_id"]][row["test_char_start"]:row["test_char_end"]])


def test_a_partial_state_holds_no_training_tokens_or_test_vectors(inputs, tmp_path):
    """What a partition sends to the merge is the k best slots per test chunk: small, whatever the corpus."""
    import pickle

    from pipeline.partitioned import plan_partitions
    from stages.leakage import LeakageAudit

    stage = LeakageAudit(ngram=False, backend="static", chunk_tokens=32)
    ctx = Context(step_id="audit", seed=0, out_dir=tmp_path)
    broadcast = stage.broadcast(ctx, inputs)
    parts = plan_partitions(inputs["train"], 1)
    state = stage.map(parts[0], broadcast)
    chunks, k = broadcast["templates"][0].neighbours.item.size, stage.k
    found = state["evidence"][0]["found"]
    assert found is state["evidence"][1]["found"]  # the two kinds share one search per batch
    assert len(pickle.dumps(state["evidence"])) < 32 * chunks * k + 4096
