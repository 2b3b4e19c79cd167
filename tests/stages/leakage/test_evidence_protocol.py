"""The evidence protocol: a kind defined in a test file alone appears in findings and reports; partial
states over separate shards of the training corpus merge into exactly the one-pass result."""

from __future__ import annotations

from pydoc_data.topics import topics

import numpy as np
import polars as pl
import pytest

from stages.leakage import (
    EVIDENCE_KINDS,
    Evidence,
    LeakageAudit,
    Resolved,
    Score,
    TestSide,
    TrainBatch,
    register_evidence,
)
from stages.leakage.evidence import SPAN_COLUMNS
from stages.text import text_hash, tokenize

TOPICS = sorted(topics)[:30]


class ExactTextEvidence(Evidence):
    """Toy kind: the whole normalised test text equals a whole training document."""

    kind = "exact_text"
    columns = {"exact_text_match": pl.Float64}
    scores = (Score("exact_text_match", "whole-text match (toy evidence)", "whole-text match"),)
    sort_column = "exact_text_match"

    def __init__(self, audit, test: TestSide, shared):
        super().__init__(audit, test, shared)
        self.test_hashes = text_hash(test.texts)
        self.doc = np.full(test.n_items, -1, np.int64)

    def add_batch(self, batch: TrainBatch) -> None:
        hashes = text_hash(batch.texts)
        for item in np.flatnonzero(np.isin(self.test_hashes, hashes)):
            if self.doc[item] < 0:
                self.doc[item] = batch.base + int(np.flatnonzero(hashes == self.test_hashes[item])[0])

    def merge(self, other: Evidence) -> None:
        self.doc = np.where(self.doc >= 0, self.doc, other.doc)

    def candidate_docs(self) -> np.ndarray:
        return np.unique(self.doc[self.doc >= 0])

    def resolve(self) -> Resolved:
        items = np.arange(self.test.n_items, dtype=np.int64)
        return Resolved(pl.DataFrame({"item": items, "exact_text_match": (self.doc >= 0).astype(np.float64)}))

    def verdict(self):
        return pl.col("exact_text_match") >= 1.0, pl.lit(False)


@pytest.fixture
def toy_kind():
    register_evidence(ExactTextEvidence)
    yield ExactTextEvidence
    EVIDENCE_KINDS.pop(ExactTextEvidence.kind)


@pytest.fixture(scope="module")
def train() -> pl.DataFrame:
    return pl.DataFrame({"id": TOPICS, "text": [topics[t] for t in TOPICS]})


def test_toy_evidence_kind_from_a_test_file_reaches_findings_and_reports(toy_kind, train, tmp_path):
    test = pl.DataFrame({"id": ["copy", "other"], "text": [topics[TOPICS[4]].upper(), "nothing like the docs"]})
    result = LeakageAudit(ngram=False, chunk_overlap=False, semantic=False, evidence=["exact_text"]).execute(
        train=train, test=test, workdir=tmp_path)
    findings = result.table
    assert findings["exact_text_match"].to_list() == [1.0, 0.0]
    assert findings["verdict"].to_list() == ["contaminated", "clean"]
    html = next(tmp_path.rglob("report.html")).read_text()
    md = next(tmp_path.rglob("report.md")).read_text()
    assert "whole-text match" in html and "exact_text_match" in md and "passes = exact_text" in md


def _first_token_spans(items: np.ndarray, docs: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"item": items, "doc": docs, "span_tokens": 1, "test_tok_start": 0, "train_tok_start": 0},
                        schema=SPAN_COLUMNS)


class NearMissEvidence(ExactTextEvidence):
    """Toy kind run first: a best span for every item (in training document 0) and never a flag."""

    kind = "near_miss"
    columns = {"near_miss": pl.Float64}
    scores = (Score("near_miss", "near miss (toy evidence)", "near miss"),)
    sort_column = "near_miss"

    def candidate_docs(self) -> np.ndarray:
        return np.array([0])

    def resolve(self) -> Resolved:
        items = np.arange(self.test.n_items, dtype=np.int64)
        return Resolved(pl.DataFrame({"item": items, "near_miss": 0.0}),
                        best=_first_token_spans(items, np.zeros(items.size, np.int64)))

    def verdict(self):
        return pl.lit(False), pl.lit(False)


class SpannedExactEvidence(ExactTextEvidence):
    """The toy whole-text kind, with its match as the item's best span."""

    kind = "spanned_exact"
    columns = {"spanned_exact_match": pl.Float64}
    scores = (Score("spanned_exact_match", "whole-text match with span (toy evidence)", "spanned match"),)
    sort_column = "spanned_exact_match"

    def resolve(self) -> Resolved:
        items = np.arange(self.test.n_items, dtype=np.int64)
        hit = self.doc >= 0
        return Resolved(pl.DataFrame({"item": items, "spanned_exact_match": hit.astype(np.float64)}),
                        best=_first_token_spans(items[hit], self.doc[hit]))

    def verdict(self):
        return pl.col("spanned_exact_match") >= 1.0, pl.lit(False)


def test_an_item_s_evidence_is_from_a_kind_that_flagged_it(train):
    # The first kind with a span was shown, even one that did not flag the item: a chunk kind's near miss in an
    # unrelated document stood as the evidence of an item only the paraphrase kind had flagged.
    register_evidence(NearMissEvidence)
    register_evidence(SpannedExactEvidence)
    try:
        test = pl.DataFrame({"id": ["copy", "other"], "text": [topics[TOPICS[4]], "nothing like the docs"]})
        findings = LeakageAudit(ngram=False, chunk_overlap=False, semantic=False,
                                evidence=["near_miss", "spanned_exact"]).execute(train=train, test=test).table
    finally:
        EVIDENCE_KINDS.pop(NearMissEvidence.kind)
        EVIDENCE_KINDS.pop(SpannedExactEvidence.kind)
    assert findings["verdict"].to_list() == ["contaminated", "clean"]
    assert findings["evidence_kind"].to_list() == ["spanned_exact", "near_miss"]  # unflagged: the first span still
    assert findings["train_id"].to_list() == [TOPICS[4], TOPICS[0]]


def test_unknown_evidence_kind_is_a_param_error():
    from pipeline.errors import ParamError

    with pytest.raises(ParamError, match="evidence"):
        LeakageAudit(evidence=["no_such_kind"]).validate()


def _evidences(audit: LeakageAudit, test: pl.DataFrame):
    texts = test["text"]
    side = TestSide(texts=texts, tokens=tokenize(texts))
    shared: dict = {}
    return side, [cls(audit, side, shared) for cls in audit.evidence_classes() if audit.enabled(cls)]


def _feed(evidences, texts: pl.Series, base: int) -> None:
    batch = TrainBatch(texts=texts, tokens=tokenize(texts), base=base)
    for ev in evidences:
        ev.add_batch(batch)


def test_partial_states_of_two_shards_merge_into_the_one_pass_result(train):
    rng = np.random.default_rng(3)
    passages = [" ".join(topics[t].split()[20:100]) for t in TOPICS[::3]]
    test = pl.DataFrame({"id": [f"t{i}" for i in range(len(passages))],
                         "text": [p if i % 2 else " ".join(rng.permutation(p.split())) for i, p in enumerate(passages)]})
    audit = LeakageAudit(n=8, k=3, batch_rows=7)
    texts = train["text"]
    _, whole = _evidences(audit, test)
    for lo in range(0, len(texts), 7):
        _feed(whole, texts[lo : lo + 7], lo)
    _, first = _evidences(audit, test)
    _, second = _evidences(audit, test)
    for lo in range(0, len(texts), 7):
        _feed(first if lo < 14 else second, texts[lo : lo + 7], lo)
    for mine, theirs in zip(first, second):
        mine.merge(theirs)
    for one_pass, merged in zip(whole, first):
        a, b = one_pass.resolve(), merged.resolve()
        assert a.per_item.sort("item").equals(b.per_item.sort("item")), one_pass.kind
        order = ["item", "doc", "test_tok_start", "train_tok_start"]
        assert a.best.sort(order).equals(b.best.sort(order)), one_pass.kind
        assert a.matches.height == b.matches.height > 0, one_pass.kind
        assert np.array_equal(one_pass.candidate_docs(), merged.candidate_docs())


def test_audit_searches_an_existing_index_step_instead_of_embedding_the_corpus(train, tmp_path):
    from pipeline.io import Dataset
    from stages.embedding import Embed
    from stages.retrieval import BuildIndex, Chunk

    chunks = Chunk(size=48, overlap=16, tokenizer="whitespace").apply(train)
    vectors = Embed(backend="static").apply(chunks)
    BuildIndex(id_column="chunk_id", doc_column="doc_id", keep_columns=["text"], backend="static").execute(
        vectors, workdir=tmp_path / "index")
    passage = " ".join(topics[TOPICS[7]].split()[10:90])
    test = pl.DataFrame({"id": ["copy", "other"], "text": [passage, "a sentence about nothing in the corpus at all"]})
    result = LeakageAudit(ngram=False, k=3).execute(train=train, test=test, index=Dataset.from_parquet(tmp_path / "index"),
                                                   workdir=tmp_path / "audit")
    findings = result.table
    assert findings["verdict"].to_list()[0] == "contaminated"
    source = " ".join(topics[findings["train_id"][0]].split())  # pydoc topics repeat each other: any copy counts
    assert " ".join(passage.split()[20:40]) in source
    # Indexed chunks are cut elsewhere than the audit's own windows: overlap, not cosine, carries this one.
    assert findings["chunk_overlap_ratio"][0] > 0.5 and findings["max_similarity"][0] > findings["max_similarity"][1]
    assert findings["verdict"][1] == "clean"
    assert result.stats["train_chunks_embedded"] == vectors.height  # the index's chunks, none embedded here
