"""The text side of dedup: in-order shingle hashes (what signatures read) against the text core's n-grams."""

from __future__ import annotations

from pydoc_data.topics import topics

import numpy as np
import polars as pl
import pytest

from stages.dedup.shingles import shingle_hashes, shingle_sets
from stages.text import ngram_hashes, tokenize

TEXTS = [topics[t][:600] for t in sorted(topics)[:12]] + ["", "one", "two words", None, "Four words, at most!"]


@pytest.mark.parametrize("n", [1, 3, 5])
def test_shingle_hashes_are_each_texts_ngrams_in_order_and_short_texts_whole(n):
    texts = pl.Series(TEXTS * 3, dtype=pl.String)
    values, offsets = shingle_hashes(texts, "word", n, "full")
    assert offsets.size == len(texts) + 1 and offsets[-1] == values.size
    for i, text in enumerate(texts.to_list()):
        tok = tokenize([text], stable=True)
        own = values[offsets[i] : offsets[i + 1]]
        if tok.counts[0] >= n:  # its n-grams, in text order, repeats kept
            assert own.tolist() == ngram_hashes(tok.hashes, tok.counts, n)[0].tolist()
        else:  # one shingle of the whole text when it has 1..n-1 words, none when it has no word
            assert own.size == (1 if tok.counts[0] else 0)
    # The same shingles as the distinct sets that verification reads.
    sets, set_offsets = shingle_sets(texts, "word", n, "full")
    for i in range(len(texts)):
        mine = np.unique(values[offsets[i] : offsets[i + 1]])
        assert mine.tolist() == sets[set_offsets[i] : set_offsets[i + 1]].tolist()
