"""Character offsets of words: where each token of a batch starts and ends, in code points, vectorised.

"word" offsets are those of `tokenize`'s tokens (on its byte spans where it takes them); "whitespace" those of
Python's `\\S+`. `word_spans` does one text; `code_points` decodes a batch once for the other text-core modules.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from stages.text.byte_spans import (
    _ASCII_WORD,
    _candidate_spans,
    _mostly_another_script,
    _span_strings,
    _splice,
    _spliced,
    _string_buffers,
    _wide_spans,
)
from stages.text.normalize import as_series

_ASCII_NONSPACE = np.array([not chr(c).isspace() for c in range(128)], bool)


def code_points(texts: pl.Series | Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """All texts' Unicode code points, concatenated (uint32), and each text's start in them (n + 1).

    One UTF-8 decode and one UTF-32 encode of the whole batch: no per-row Python.
    """
    series = as_series(texts)
    lengths = series.str.len_chars().to_numpy().astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    arrow = series.to_arrow()
    if isinstance(arrow, pa.ChunkedArray):
        arrow = arrow.combine_chunks()
    arrow = pc.cast(arrow, pa.large_string())
    offs = np.frombuffer(arrow.buffers()[1], dtype=np.int64)[arrow.offset : arrow.offset + len(arrow) + 1]
    if len(arrow) == 0 or offs[-1] == offs[0]:
        return np.zeros(0, np.uint32), starts
    raw = memoryview(arrow.buffers()[2])[offs[0] : offs[-1]]
    points = np.frombuffer(bytes(raw).decode("utf-8").encode("utf-32-le"), np.uint32)
    return points, starts


def _is_word_char(ch: str) -> bool:
    """A character of WORD_REGEX: a letter or digit (`str.isalnum`: Unicode L*, N*) or a combining mark (M*)."""
    return ch.isalnum() or unicodedata.category(ch).startswith("M")


def _classify(points: np.ndarray, split: Literal["word", "whitespace"]) -> np.ndarray:
    """Per code point: does it belong to a token? ASCII by table, distinct non-ASCII points once each."""
    table = _ASCII_WORD if split == "word" else _ASCII_NONSPACE
    inside = table[np.minimum(points, 127)]  # a gather, then the few wide points fixed (no boolean masks)
    wide = np.flatnonzero(points >= 128)
    if wide.size:
        distinct, inverse = np.unique(points[wide], return_inverse=True)
        test = _is_word_char if split == "word" else (lambda ch: not ch.isspace())
        classes = np.array([test(chr(c)) for c in distinct.tolist()], bool)
        inside[wide] = classes[inverse]
    return inside


def word_offsets(
    texts: pl.Series | Sequence[str | None], split: Literal["word", "whitespace"] = "word"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Character (code point) start and end of every token of every text, flat, and tokens per text.

    split "word" gives exactly the tokens of `tokenize` (runs of letters, combining marks, digits and '_');
    "whitespace" the runs of non-whitespace (Python's `\\S+`). Vectorised over the whole batch; "word" takes
    tokenize's byte path where tokenize does (`_span_word_offsets`), 1.5-2x faster than classifying characters.
    """
    series = as_series(texts)
    if split == "word":  # tokenize's byte path, where tokenize takes it
        data, offsets = _string_buffers(series)
        if not _mostly_another_script(data.size, np.count_nonzero((data & np.uint8(0xC0)) == 0x80)):
            return _span_word_offsets(data, offsets)
    ascii_rows = (series.str.len_bytes() == series.str.len_chars()).to_numpy()
    if ascii_rows.all() or not ascii_rows.any():
        return _word_offsets(series, split, bool(ascii_rows.all()))
    # ASCII texts (most of any corpus) on their bytes, the others on code points; then back in text order.
    a = _word_offsets(series.filter(ascii_rows), split, True)
    o = _word_offsets(series.filter(~ascii_rows), split, False)
    counts, order = _interleave(ascii_rows, a[2], o[2])
    return np.concatenate([a[0], o[0]])[order], np.concatenate([a[1], o[1]])[order], counts


def ascii_word_spans(texts: pl.Series | Sequence[str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`word_offsets(texts, "word")` of texts in ASCII only, left as tokenize's byte spans: (starts, lengths,
    tokens per text, each text's start), starts counted from the first text's. A character is a byte and a
    candidate span is a word, so a caller that needs a few words' offsets reads only those."""
    data, offsets = _string_buffers(as_series(texts))
    spans, counts, _ = _candidate_spans(data, offsets)
    return spans.starts, spans.lengths, counts, offsets


def _span_word_offsets(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`word_offsets` on tokenize's candidate spans (`_candidate_spans`): a span of ASCII bytes is one word;
    a span holding non-ASCII characters is cut into its words on its code points. Byte positions become
    character positions by subtracting the continuation bytes of the non-ASCII characters before them.
    """
    spans, counts, wide_bytes = _candidate_spans(data, offsets)
    # Continuation bytes of each non-ASCII character (its lead byte gives its length).
    extra = np.searchsorted(np.array([0xE0, 0xF0], np.uint8), spans.data[wide_bytes], side="right") + 1

    def chars(positions: np.ndarray) -> np.ndarray:
        """Ascending byte positions (on character boundaries) as characters: minus the continuation bytes of
        the non-ASCII characters before each. Placed among the positions (a few characters into every word's
        offsets), not each position looked up among them (the 2.7 MB of fetched documents holding a few such
        characters on the 31.5 MB leakage benchmark: 22-24 -> 17-19 ms)."""
        if not wide_bytes.size:
            return positions
        shift = np.zeros(positions.size + 1, np.int64)
        np.add.at(shift, np.searchsorted(positions, wide_bytes, side="right"), extra)
        return positions - np.cumsum(shift[:-1])

    starts = spans.starts.astype(np.int64)
    ends = chars(starts + spans.lengths)
    starts = chars(starts)
    if wide_bytes.size:
        wide = _wide_spans(spans, wide_bytes)
        ws, we, per_wide = _word_offsets(_span_strings(spans.data, spans.starts[wide], spans.lengths[wide]), "word", False)
        at, counts = _splice(counts, wide, per_wide)
        base = np.repeat(starts[wide], per_wide)  # the words' offsets in their span, plus the span's
        starts = _spliced(starts, wide, per_wide, at, base + ws)
        ends = _spliced(ends, wide, per_wide, at, base + we)
    first = np.repeat(chars(offsets[:-1]), counts)
    return starts - first, ends - first, counts


def _word_offsets(series: pl.Series, split: Literal["word", "whitespace"], ascii: bool):
    if ascii:  # a byte is a character: classify the UTF-8 bytes as they are (no UTF-32 copy)
        points, doc_starts = _string_buffers(series)
        inside = (_ASCII_WORD if split == "word" else _ASCII_NONSPACE)[points]
    else:
        points, doc_starts = code_points(series)
        inside = _classify(points, split)
    n_docs = doc_starts.size - 1
    before = np.zeros(points.size, bool)
    before[1:] = inside[:-1]
    after = np.zeros(points.size, bool)
    after[:-1] = inside[1:]
    nonempty = doc_starts[:-1] < doc_starts[1:]
    before[doc_starts[:-1][nonempty]] = False
    after[doc_starts[1:][nonempty] - 1] = False
    starts = np.flatnonzero(inside & ~before)
    ends = np.flatnonzero(inside & ~after) + 1
    doc = np.searchsorted(doc_starts, starts, side="right") - 1
    counts = np.bincount(doc, minlength=n_docs).astype(np.int64)
    return starts - doc_starts[doc], ends - doc_starts[doc], counts


def token_offsets(texts: pl.Series | Sequence[str | None], counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Character (start, end) of every token, aligned with `tokenize`; `ok[d]` False where they disagree.

    `counts` are `tokenize(texts).counts`; a document whose offsets do not give the same number of
    tokens keeps -1 offsets and ok False (never seen in practice; a guard, not a code path).
    """
    counts = np.asarray(counts, np.int64)
    total = int(counts.sum())
    starts = np.full(total, -1, np.int64)
    ends = np.full(total, -1, np.int64)
    s, e, found = word_offsets(texts, "word")
    ok = found == counts
    span_doc = np.repeat(np.arange(counts.size), found)
    keep = ok[span_doc]
    within = np.arange(s.size) - np.repeat(np.cumsum(found) - found, found)
    target = (np.cumsum(counts) - counts)[span_doc] + within
    starts[target[keep]] = s[keep]
    ends[target[keep]] = e[keep]
    return starts, ends, ok


def word_spans(text: str, split: Literal["word", "whitespace"] = "word") -> np.ndarray:
    """(start, end) of each token of one text, shape (n, 2): `word_offsets` without the batch set-up.

    For the few documents handled one at a time (evidence spans); same classification, pure NumPy.
    """
    text = text or ""
    if text.isascii():  # one byte per character: classify the bytes (4x less to encode and scan)
        data = np.frombuffer(text.encode("ascii"), np.uint8)
        inside = _ASCII_WORD[data] if split == "word" else _ASCII_NONSPACE[data]
    else:
        inside = _classify(np.frombuffer(text.encode("utf-32-le"), np.uint32), split)
    edges = np.flatnonzero(np.diff(np.concatenate([[False], inside, [False]]).astype(np.int8)))
    return edges.reshape(-1, 2).astype(np.int64)


def _interleave(ascii_rows: np.ndarray, a_counts: np.ndarray, o_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tokens per row, and the gather that puts [ASCII rows' tokens, other rows' tokens] back in row order."""
    counts = np.zeros(ascii_rows.size, np.int64)
    counts[ascii_rows], counts[~ascii_rows] = a_counts, o_counts
    # Each row's first token in the concatenation [ASCII rows' tokens, other rows' tokens].
    first = np.zeros(ascii_rows.size, np.int64)
    first[ascii_rows] = np.cumsum(a_counts) - a_counts
    first[~ascii_rows] = int(a_counts.sum()) + np.cumsum(o_counts) - o_counts
    order = np.repeat(first - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()), dtype=np.int64)
    return counts, order
