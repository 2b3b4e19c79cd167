"""near_duplicate_rate: the share of a corpus a dedup_minhash step would remove (a collapse metric)."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.errors import InputDataError, ParamError
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


PAIR = ["the cat sat on the mat today", "the cat sat on the mat todya"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"unit": "words"}, r"parameter 'unit': expects 'word' \| 'char', got 'words'"),
    ({"unit": "Word"}, r"parameter 'unit': expects 'word' \| 'char', got 'Word'"),
    ({"normalization": "foo"}, r"parameter 'normalization': expects 'none' \| 'whitespace' \| 'full', got 'foo'"),
    ({"unit": "char", "normalization": "foo"}, r"parameter 'normalization': expects"),
    ({"ngram": 2.5}, r"parameter 'ngram': expects int, got 2.5 \(float\)"),
])
def test_settings_are_checked_as_the_stage_checks_them(kwargs, message):
    """A typo used to mean character shingles (unit='words' gave 0.5 where 'word' gives 0.0)."""
    with pytest.raises(ParamError, match=message):
        near_duplicate_rate(PAIR, **kwargs)
    with pytest.raises(ParamError, match=message):
        DedupMinhash(**kwargs)


def test_texts_that_are_not_a_list_of_strings_are_refused():
    with pytest.raises(TypeError, match=r"texts must be a list of strings, got str"):
        near_duplicate_rate("the quick brown fox jumps over the lazy dog " * 3)
    with pytest.raises(InputDataError, match=r"texts\[0\] is int, not a string"):
        near_duplicate_rate([1, 2])
    with pytest.raises(InputDataError, match=r"texts is a Series of Int64, not of strings"):
        near_duplicate_rate(pl.Series([1, 2]))
    with pytest.raises(InputDataError, match=r"texts\[1\] holds a lone surrogate '\\ud800' at character 8"):
        near_duplicate_rate([PAIR[0], PAIR[1][:8] + "\ud800"])
    assert near_duplicate_rate([None, PAIR[0], PAIR[0]]) == 1 / 3
