"""Word tokenisation: normalised, hashed tokens of a whole batch at once.

The byte path and the token hash are in `byte_spans.py`, the tokens' character offsets in `char_offsets.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from stages.text.byte_spans import (
    _candidate_spans,
    _Mixed,
    _mostly_another_script,
    _span_strings,
    _Spans,
    _splice,
    _spliced,
    _string_buffers,
    _wide_spans,
    span_hashes,
)
from stages.text.normalize import as_series

# A word is a run of letters, combining marks, digits and underscores. The Rust class used by polars and the
# code-point classifier that recovers character offsets (`str.isalnum` or a mark) select the same characters
# (Unicode L*, M*, N*), so they agree token for token. Marks are part of words: Devanagari's or Arabic's vowel signs
# and a decomposed accent (e + U+0301) split a word at each one, and NFKC then could not fold "cafe\u0301" into "café".
WORD_REGEX = r"[\p{L}\p{M}\p{N}_]+"
# Whitespace-separated words (what a person counts as "words" in a length filter).
WHITESPACE_WORD_REGEX = r"\S+"
# Words and single punctuation marks: the unit of the synthetic n-gram model and corpus metrics, so
# a generated document re-tokenises into exactly the tokens that were sampled.
WORD_PUNCT_REGEX = r"\w+|[^\w\s]"
Split = Literal["word", "whitespace", "word_punct"]
SPLIT_REGEX = {"word": WORD_REGEX, "whitespace": WHITESPACE_WORD_REGEX, "word_punct": WORD_PUNCT_REGEX}


class Tokens:
    """Normalised word tokens of a batch of documents, flattened: `hashes[offsets[d]:offsets[d+1]]`.

    `words` (the token strings) is built on first use: the audit's training side needs only the
    hashes and counts, and putting the strings of mixed ASCII / non-ASCII batches back in row order
    costs as much as tokenising them.
    """

    def __init__(self, words: pl.Series | _Spans | _Mixed, hashes: np.ndarray, counts: np.ndarray):
        self._words = words
        self.hashes = hashes  # uint64, one per token
        self.counts = counts  # int64 tokens per document
        self._distinct: tuple[np.ndarray, pl.Series] | None = None

    @property
    def words(self) -> pl.Series:
        """Normalised token strings, flat (in the order of `hashes`)."""
        if not isinstance(self._words, pl.Series):
            self._words = self._words.series()
        return self._words

    def distinct_words(self) -> tuple[np.ndarray, pl.Series]:
        """(each token's index among the distinct words, the distinct words in first-seen order).

        Found from the hashes, so only the distinct words' strings are made: a batch repeats each word
        about ten times, and embedding its chunks from their words (the static table) needs each word
        once, where making every token's string was a tenth of the full audit's CPU. Equal hashes are
        taken for equal words, as the n-gram evidence takes them.
        """
        if self._distinct is None:
            index = pc.dictionary_encode(pa.array(self.hashes)).indices.to_numpy().astype(np.int64)
            # Dictionary order is first-seen order: a word's first token is where the running maximum grows.
            seen = np.maximum.accumulate(index) if index.size else index
            first = np.flatnonzero(np.diff(seen, prepend=-1) > 0)
            self._distinct = (index, self.words_at(first))
        return self._distinct

    def words_at(self, positions: np.ndarray) -> pl.Series:
        """`words.gather(positions)` for ascending positions, making only those strings when `words` is not built."""
        if isinstance(self._words, pl.Series):
            return self._words.gather(positions)
        return self._words.strings_at(np.asarray(positions, np.int64))

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def __getstate__(self) -> dict:
        return {"words": self.words, "hashes": self.hashes, "counts": self.counts}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["words"], state["hashes"], state["counts"])


def split_words(texts: pl.Series | Sequence[str | None], split: Split = "word") -> pl.Series:
    """Per text, its tokens as a list column (no normalisation); nulls give empty lists."""
    return as_series(texts).str.extract_all(SPLIT_REGEX[split])


def count_words(texts: pl.Series | Sequence[str | None], split: Split = "whitespace") -> pl.Series:
    """Per text, how many tokens `split_words` would give, without materialising them."""
    return as_series(texts).str.count_matches(SPLIT_REGEX[split])


def token_table(texts: pl.Series | Sequence[str | None], split: Split = "word_punct") -> pl.DataFrame:
    """One row per token: `doc` (row index of the text) and `token` (as written), in reading order."""
    return (
        pl.DataFrame({"token": split_words(texts, split)})
        .with_row_index("doc")
        .explode("token")
        .drop_nulls("token")
    )


def token_ids(tokens: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Dense int64 ids of tokens and the sorted vocabulary they index (a hash join, not a string sort)."""
    vocab = tokens.unique().sort()
    lookup = pl.DataFrame({"token": vocab, "id": np.arange(len(vocab), dtype=np.int64)})
    ids = pl.DataFrame({"token": tokens}).join(lookup, on="token", how="left", maintain_order="left")["id"]
    return ids.to_numpy(), vocab


def token_hashes(words: pl.Series, stable: bool = True) -> np.ndarray:
    """uint64 hash of each token string: `span_hashes` of its UTF-8 bytes (~20 ns a token).

    The hash is defined in this project (NumPy, explicit little-endian), so it is the same on every
    machine and library version and its values are pinned by the tests (stored dedup signatures
    depend on them). `stable` is kept for callers of the earlier API, where False chose polars'
    version-dependent hash: both now give the same, stable values.
    """
    data, offsets = _string_buffers(words)
    return span_hashes(data, offsets[:-1], np.diff(offsets))


def tokenize(texts: pl.Series | pa.Array | Sequence[str | None], stable: bool = False) -> Tokens:
    """Split on non-word characters, lower-case, NFKC-normalise and hash every token, vectorised.

    The tokens are the words of `normalize(texts, "full")`: runs of WORD_REGEX in the text, each
    lower-cased, then (if it is not ASCII) NFKC-normalised and lower-cased again. Every text takes a
    NumPy byte path (`_candidate_spans`): a run of ASCII word bytes and non-ASCII bytes is a candidate.
    A candidate of ASCII bytes only is one token, hashed from the text's own bytes (ASCII lower-casing
    cannot change what is a word character): most of any corpus, web text with a curly quote or an
    accent here and there included. Only candidates holding non-ASCII bytes are cut into words by the
    defining regex path, so a text's one non-ASCII character no longer sends all of it there (3x
    slower); a batch mostly in another script takes that path whole. See `token_hashes` for `stable`.

    `texts` may be an Arrow array as read from Parquet: large strings without nulls are read in their own
    buffers, not copied back out of polars (the 31.5 MB leakage benchmark's 8 batches: 12.6 -> 1.7 ms).
    """
    arrow = texts if isinstance(texts, pa.Array) and texts.type == pa.large_string() and not texts.null_count else None
    series = as_series(pl.Series("text", texts) if isinstance(texts, pa.Array) else texts)
    size = series.str.len_bytes().sum()
    if _mostly_another_script(size, size - series.str.len_chars().sum()):
        flat, counts = _unicode_words(series)
        return Tokens(flat, token_hashes(flat, stable), counts)
    spans, span_counts, wide_bytes = _candidate_spans(*_string_buffers(series if arrow is None else arrow))
    hashes = span_hashes(spans.data, spans.starts, spans.lengths, lower_ascii=True)
    if wide_bytes.size == 0:
        return Tokens(spans, hashes, span_counts)
    wide = _wide_spans(spans, wide_bytes)
    words, per_wide = _unicode_words(_span_strings(spans.data, spans.starts[wide], spans.lengths[wide]))
    at, counts = _splice(span_counts, wide, per_wide)
    hashes = _spliced(hashes, wide, per_wide, at, token_hashes(words, stable))
    return Tokens(_Mixed(spans, wide, words, at), hashes, counts)


def _unicode_words(texts: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """The defining path: regex words, lower-cased; non-ASCII ones NFKC-normalised and lower-cased again."""
    words = split_words(texts, "word")
    counts = words.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = words.explode().drop_nulls().str.to_lowercase()
    non_ascii = (flat.str.len_bytes() != flat.str.len_chars()).arg_true()
    if len(non_ascii):
        fixed = flat.gather(non_ascii).str.normalize("NFKC").str.to_lowercase()
        flat = flat.scatter(non_ascii, fixed)
    return flat, counts
