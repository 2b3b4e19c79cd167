"""near_duplicate_rate: the share of a corpus a dedup_minhash step would remove (a collapse metric)."""

from __future__ import annotations

import polars as pl

from stages.dedup import DedupMinhash, near_duplicate_clusters, near_duplicate_rate
from stages.dedup.planted import planted_corpus, real_documents


def test_rate_of_distinct_copied_and_identical_corpora():
    docs = real_documents(limit=50)
    assert near_duplicate_rate(docs) == 0.0
    assert near_duplicate_rate(docs + docs[:10]) == 10 / 60
    assert near_duplicate_rate(["same text here"] * 8) == 7 / 8
    assert near_duplicate_rate([]) == 0.0


def test_rate_matches_the_stage():
    corpus = planted_corpus(n_sources=30, n_controls=30, seed=4, documents=real_documents(limit=60))
    stats = DedupMinhash().execute(corpus).stats
    assert near_duplicate_rate(corpus["text"]) == stats["rows_removed"] / corpus.height


def test_blank_texts_are_their_own_clusters():
    labels = near_duplicate_clusters(pl.Series(["a b c d e f", None, "", "a b c d e f"]))
    assert labels.tolist() == [0, 1, 2, 0]
