"""Chunking: windows of `size` tokens with `overlap`, over words or an embedding model's word pieces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from stages.text.char_offsets import word_offsets
from stages.text.normalize import as_series
from stages.text.tokens import Tokens

Tail = Literal["align", "cover"]
ChunkTokenizer = Literal["model", "whitespace", "word"]
CHUNK_TOKENIZERS: tuple[str, ...] = ("model", "whitespace", "word")


def windows(counts: np.ndarray, size: int, step: int, tail: Tail = "cover") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token windows of every document: (document, first token within it, length), vectorised.

    Windows start every `step` tokens (overlap = size - step). The tail differs by use:
    - "align": the last window is moved back to end at the document's end, so every window is full
      length (or the whole document when shorter); an overlap ratio over a short tail would mean
      nothing (the leakage audit).
    - "cover": a window is emitted only while it adds a token the previous one lacked; the last may
      be shorter (retrieval chunks: every text span indexed once).
    """
    if size < 1 or not 1 <= step <= size:
        raise ValueError(f"need size >= 1 and 1 <= step <= size, got size={size}, step={step}")
    counts = np.asarray(counts, np.int64)
    if tail == "align":
        per_doc = np.where(counts > 0, 1 + -(-np.maximum(counts - size, 0) // step), 0)
    else:
        overlap = size - step
        per_doc = np.where(counts > 0, 1 + np.maximum(-(-(counts - overlap) // step) - 1, 0), 0)
    doc = np.repeat(np.arange(counts.size, dtype=np.int64), per_doc)
    chunk_no = np.arange(doc.size) - (np.cumsum(per_doc) - per_doc)[doc]
    if tail == "align":
        start = np.minimum(chunk_no * step, np.maximum(counts[doc] - size, 0))
        length = np.minimum(size, counts[doc])
    else:
        start = chunk_no * step
        length = np.minimum(start + size, counts[doc]) - start
    return doc, start.astype(np.int64), length.astype(np.int64)


def token_chunks(tok: Tokens, size: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Aligned `size`-token chunks of tokenised documents, with their normalised text.

    Returns (doc, first token in the flat token array, length, text) per chunk; the text is the
    normalised tokens joined by spaces, identical on both sides of a comparison.
    """
    doc, starts, lengths = token_windows(tok, size, step)
    return doc, starts, lengths, window_texts(tok.words, starts, lengths)


def token_windows(tok: Tokens, size: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`token_chunks` without the texts: (doc, first token in the flat token array, length) per chunk."""
    doc, within, lengths = windows(tok.counts, size, step, "align")
    return doc, tok.offsets[:-1][doc] + within, lengths


def window_tokens(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(window, flat token position) of every token of windows (start, length) over a flat token array."""
    window = np.repeat(np.arange(starts.size), lengths)
    return window, starts[window] + (np.arange(window.size) - (np.cumsum(lengths) - lengths)[window])


def window_texts(words: pl.Series, starts: np.ndarray, lengths: np.ndarray) -> list[str]:
    """The texts `" ".join(words[s : s + n])` of windows (s, n) over a flat word column."""
    if starts.size == 0:
        return []
    window, token = window_tokens(starts, lengths)
    return (pl.DataFrame({"window": window, "word": words.gather(token)})
            .group_by("window", maintain_order=True).agg(pl.col("word").str.join(" "))
            .get_column("word").to_list())


class WindowTexts:
    """The texts of token windows (`window_texts`), made when read: a reader that needs a few of them (the
    paraphrase kind keeps a few candidates per test item) or none (the static table embeds windows from their
    words) does not pay for joining every chunk's words, nor, given the `Tokens`, for every word's string."""

    def __init__(self, words: pl.Series | Tokens, starts: np.ndarray, lengths: np.ndarray):
        self._words, self.starts, self.lengths = words, starts, lengths
        self._all: list[str] | None = None

    @property
    def words(self) -> pl.Series:
        """The flat word column; from `Tokens`, built only when a text is read."""
        return self._words.words if isinstance(self._words, Tokens) else self._words

    def __len__(self) -> int:
        return int(self.starts.size)

    def all(self) -> list[str]:
        if self._all is None:
            self._all = window_texts(self.words, self.starts, self.lengths)
        return self._all

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Object array of the texts of windows `rows` (any shape), each distinct window joined once."""
        rows = np.asarray(rows, np.int64)
        distinct, inverse = np.unique(rows.ravel(), return_inverse=True)
        if self._all is not None:
            texts = np.asarray(self._all, object)[distinct]
        else:
            texts = np.asarray(window_texts(self.words, self.starts[distinct], self.lengths[distinct]) or [], object)
        return texts[inverse].reshape(rows.shape)


@dataclass
class ChunkSpans:
    """Chunks of a batch of texts, flat: text `doc[i]` characters `char_start[i]:char_end[i]`."""

    doc: np.ndarray  # int64 row of the text
    index: np.ndarray  # int64 chunk number within its text
    char_start: np.ndarray  # int64 code point offsets
    char_end: np.ndarray
    n_tokens: np.ndarray  # int64


_tokenizers: dict[str, Any] = {}


def model_tokenizer(model: str | None = None):
    """The embedding model's fast tokenizer, without the truncation and padding its file configures."""
    from stages.embedding import resolve_model_path

    path = resolve_model_path(model)
    tok = _tokenizers.get(str(path))
    if tok is None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        _tokenizers[str(path)] = tok
    return tok


def _token_offsets(texts: pl.Series, tokenizer: ChunkTokenizer, model: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if tokenizer == "model":
        encodings = model_tokenizer(model).encode_batch(texts.to_list(), add_special_tokens=False)
        counts = np.fromiter((len(e.offsets) for e in encodings), np.int64, len(encodings))
        flat = np.asarray([o for e in encodings for o in e.offsets], np.int64).reshape(-1, 2)
        return flat[:, 0], flat[:, 1], counts
    if tokenizer in ("whitespace", "word"):
        return word_offsets(texts, tokenizer)
    raise ValueError(f"tokenizer must be one of {CHUNK_TOKENIZERS}, got {tokenizer!r}")


def chunk_spans(
    texts: pl.Series | Sequence[str | None],
    size: int = 64,
    overlap: int = 0,
    tokenizer: ChunkTokenizer = "model",
    model: str | None = None,
) -> ChunkSpans:
    """Every text's chunks of `size` tokens sharing `overlap` tokens ("cover" tail: the last may be shorter).

    tokenizer "model" counts the embedding model's word pieces (what the model will see: a chunk of 64
    never gets truncated by a 256-token encoder); "whitespace" counts whitespace-separated words;
    "word" the words of `tokenize`. Offsets are code points into the original text (HF tokenizers
    report code point offsets for Python strings).
    """
    series = as_series(texts)
    starts, ends, counts = _token_offsets(series, tokenizer, model)
    doc, within, lengths = windows(counts, size, size - overlap, "cover")
    first = (np.cumsum(counts) - counts)[doc] + within
    per_doc = np.bincount(doc, minlength=counts.size)
    index = np.arange(doc.size) - np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
    return ChunkSpans(doc=doc, index=index.astype(np.int64), char_start=starts[first].astype(np.int64),
                      char_end=ends[first + lengths - 1].astype(np.int64), n_tokens=lengths)
