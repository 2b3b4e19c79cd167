"""BM25 lexical candidates over the text core's tokens (stages/leakage/lexical.py)."""

from __future__ import annotations

import numpy as np
import polars as pl

from stages.leakage.lexical import bm25_top, bm25_weights, query_terms
from stages.text import tokenize


def _chunks(texts: list[str]):
    tok = tokenize(pl.Series(texts, dtype=pl.String))
    return tok, tok.offsets[:-1].astype(np.int64), tok.counts.astype(np.int64)


def test_rare_shared_words_outrank_common_ones():
    filler = "the of and a to in is that it for on was with as"
    texts = [f"{filler} {filler} the treaty of ghent ended the war of 1812",  # rare words of the query
             f"{filler} {filler} {filler}",  # only common words
             "cotton tariffs and the planters of the south were angry about duties"]
    tok, starts, lengths = _chunks(texts)
    query = query_terms(tokenize(pl.Series(["Which treaty ended the war of 1812 with the British?"])))
    scores, top = bm25_top(bm25_weights(query, tok.hashes, starts, lengths), tok.hashes, starts, lengths, k=2)
    # The runner-up shares more words ("the", "of", "with"), but words most chunks hold weigh little.
    assert top[0, 0] == 0 and scores[0, 0] > 3 * scores[0, 1]


def test_k_larger_than_the_chunks_and_blocks_agree_with_one_pass(monkeypatch):
    import stages.leakage.lexical as lexical

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words, 40)) for _ in range(50)]
    tok, starts, lengths = _chunks(texts)
    weights = bm25_weights(query_terms(tokenize(pl.Series(texts[:5]))), tok.hashes, starts, lengths)
    whole = bm25_top(weights, tok.hashes, starts, lengths, k=7)
    monkeypatch.setattr(lexical, "BLOCK", 8)
    blocked = bm25_top(weights, tok.hashes, starts, lengths, k=7)
    assert np.array_equal(whole[1], blocked[1]) and np.allclose(whole[0], blocked[0])
    assert (whole[1][:, 0] == np.arange(5)).all()  # each text is its own best match
    scores, top = bm25_top(weights, tok.hashes, starts[:3], lengths[:3], k=10)
    assert top.shape == (5, 3)


def test_a_chunk_scores_the_same_in_any_batch_under_one_sample_weights():
    """Weights from one sample, not from the batch: the candidates do not depend on where batches are cut."""
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(400)]
    texts = [" ".join(rng.choice(words, 30)) for _ in range(60)]
    tok, starts, lengths = _chunks(texts)
    weights = bm25_weights(query_terms(tokenize(pl.Series(texts[::7]))), tok.hashes, starts[:20], lengths[:20])
    whole_s, whole_i = bm25_top(weights, tok.hashes, starts, lengths, k=60)
    part_s, part_i = bm25_top(weights, tok.hashes, starts[25:], lengths[25:], k=35)
    for q in range(whole_s.shape[0]):
        in_part = whole_i[q] >= 25
        assert np.array_equal(whole_i[q][in_part], part_i[q] + 25)
        assert np.allclose(whole_s[q][in_part], part_s[q])
