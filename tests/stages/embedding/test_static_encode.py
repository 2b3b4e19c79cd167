"""The static backend's piece-wise encoder (stages/embedding/static_encode.py) is model2vec's own encode, bit for bit."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from embedding_texts import PARAGRAPHS

import stages.text
from stages.embedding import encode_texts
from stages.embedding.models import load_static_model
from stages.embedding.static_encode import encode_static

# Texts where a cut in the wrong place would change the ids: code, accents the normaliser strips, CJK it
# pads, control characters it deletes (\v, \f, \x1c, \x85 join their neighbours), Unicode spaces it splits
# on, a word over WordPiece's 100-character limit (unknown, dropped), emoji, and empty or blank texts.
AWKWARD = [
    "def f(x):\n\treturn x**2 + g(y)[0] // 3  # comment_with_underscores",
    "Café naïve résumé ÉCOLE Ångström façade",
    "中文字符和English混合，标点。日本語のテキスト",
    "a\x0bb c\x0cd e\x1cf g\x85h i\u2028j k\u2029l m\x00n o\ufffdp",
    "non\xa0breaking\u2003em\u3000ideographic\u202fnarrow",
    "x" * 150 + " short " + "ab" * 60,
    "emoji 🙂👍🏽 and ‘curly’ “quotes” — dashes… ellipsis",
    "",
    "   \t\n  ",
    "!!!???...,,,;;;::: ((([[[{{{}}}]]])))",
]


@pytest.fixture()
def static(monkeypatch):
    where = Path(os.environ.get("CORPUSFORGE_MODEL_CACHE", Path.home() / ".cache" / "corpusforge" / "static-models"))
    monkeypatch.setenv("CORPUSFORGE_MODEL_CACHE", str(where))
    return load_static_model()


def _model2vec(static, texts):
    return np.asarray(static.encode(texts, max_length=None, normalize=True, use_multiprocessing=False), np.float32)


def test_awkward_texts_match_model2vec_bit_for_bit(static):
    ours = encode_static(static, AWKWARD, normalize=True)
    np.testing.assert_array_equal(ours, _model2vec(static, AWKWARD))
    assert not ours[7].any() and not ours[8].any(), "texts without tokens stay zero vectors, as in model2vec"
    assert "Café" in static._corpusforge_piece_ids, "distinct pieces are remembered on the model"
    np.testing.assert_array_equal(encode_static(static, AWKWARD[::-1], normalize=True), ours[::-1])


def test_real_prose_and_source_code_match_model2vec_bit_for_bit(static):
    source = inspect.getsource(stages.text)
    texts = PARAGRAPHS[:300] + [source[i:i + 400] for i in range(0, len(source), 200)]
    np.testing.assert_array_equal(encode_static(static, texts, normalize=True), _model2vec(static, texts))
    raw = encode_static(static, texts[:20], normalize=False)
    expected = np.asarray(static.encode(texts[:20], max_length=None, normalize=False, use_multiprocessing=False))
    np.testing.assert_array_equal(raw, expected)


def test_the_static_backend_uses_it_only_without_truncation(static):
    texts = PARAGRAPHS[:10]
    np.testing.assert_array_equal(encode_texts(texts, backend="static"), _model2vec(static, texts))
    cut = encode_texts(texts, backend="static", max_seq_length=8)
    expected = np.asarray(static.encode(texts, max_length=8, normalize=True, use_multiprocessing=False), np.float32)
    np.testing.assert_array_equal(cut, expected)
    assert not np.array_equal(cut, encode_texts(texts, backend="static")), "truncation reaches model2vec"


def test_word_windows_match_model2vec_on_the_joined_texts_bit_for_bit(static):
    """Chunks embedded from their words (each distinct word split once) are model2vec's vectors of the
    chunk texts, on awkward text (accents, CJK, control characters, a word over WordPiece's limit) and code."""
    from stages.embedding import encode_static_word_windows
    from stages.text import token_windows, tokenize, window_texts

    source = inspect.getsource(stages.text)
    tok = tokenize(pl.Series(AWKWARD + PARAGRAPHS[:50] + [source[:20_000]]))
    assert type(tok._words).__name__ == "_Mixed"  # ASCII spans and non-ASCII words: strings made on demand
    for size, step in ((64, 32), (8, 3), (1, 1)):
        _, starts, lengths = token_windows(tok, size, step)
        from_tokens = encode_static_word_windows(tok, starts, lengths)  # first: before any word string is made
        expected = _model2vec(static, window_texts(tok.words, starts, lengths))
        np.testing.assert_array_equal(from_tokens, expected)
        np.testing.assert_array_equal(encode_static_word_windows(tok.words, starts, lengths), expected)
    assert encode_static_word_windows(tok.words, starts[:0], lengths[:0]).shape == (0, static.dim)
