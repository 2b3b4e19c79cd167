"""The tokenizer's byte path: tokens as byte spans of a batch's UTF-8 text, and their hash.

`_candidate_spans` finds the runs of word bytes in the texts' own buffers (`_string_buffers`); `span_hashes`
hashes byte spans (the project's pinned token hash); the few spans holding non-ASCII characters are cut into
words elsewhere and spliced back among the others (`_wide_spans`, `_splice`, `_spliced`, `_Mixed`). Strings
are made only when read (`_Spans`, `_span_strings`). Used by `tokens.py` (tokenize) and `char_offsets.py`
(word offsets on the same spans).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from stages._hashing import mix64

_WORD_SALT = np.uint64(0x9E3779B97F4A7C15)
_LENGTH_SALT = np.uint64(0xD6E8FEB86659FD93)
# _LOW_BYTES[k]: the low k bytes of a uint64 set (k = 0..8).
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)


def span_hashes(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, lower_ascii: bool = False) -> np.ndarray:
    """The token hash: a uint64 of each byte span `data[s:s+l]`, vectorised over spans, not bytes.

    Definition: split the span's bytes into 8-byte words w_0..w_{k-1} read little-endian (the last
    zero-padded); h = mix64(w_0 ^ SALT) if the span has at most 8 bytes (injective: word bytes are
    never 0), else mix64(sum_j mix64(w_j + (j + 1) * SALT) + length * LENGTH_SALT), wrapping.
    `lower_ascii` hashes the spans as if A-Z were a-z (for ASCII spans: lower-casing in the words,
    so the text is never copied). A few gathers per token instead of a table lookup per byte.
    """
    starts, lengths = np.asarray(starts), np.asarray(lengths)
    if starts.size <= _SPAN_BLOCK:
        return _span_block_hashes(data, starts, lengths, lower_ascii)
    # In blocks: the hash of a span needs only its own bytes, and a block's temporaries (~100 B a span:
    # gathers, masks, the long spans' words) stay in cache instead of holding 100 B for every token of a
    # batch at once, the tokenizer's peak (docs/scaling.md, wave 12).
    out = np.empty(starts.size, np.uint64)
    for lo in range(0, starts.size, _SPAN_BLOCK):
        hi = lo + _SPAN_BLOCK
        out[lo:hi] = _span_block_hashes(data, starts[lo:hi], lengths[lo:hi], lower_ascii)
    return out


_SPAN_BLOCK = 1 << 16


def _span_block_hashes(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, lower_ascii: bool) -> np.ndarray:
    starts, lengths = starts.astype(np.int64, copy=False), lengths.astype(np.int64, copy=False)
    if starts.size == 0:
        return np.zeros(0, np.uint64)
    short = lengths <= 8
    first = _words_at(data, starts, np.minimum(lengths, 8), lower_ascii)
    first ^= _WORD_SALT
    out = mix64(first, inplace=True)
    if short.all():
        return out
    long_ = np.flatnonzero(~short)
    n_words = (lengths[long_] + 7) >> 3
    owner = np.repeat(np.arange(long_.size), n_words)
    word_start = np.cumsum(n_words) - n_words
    j = np.arange(owner.size, dtype=np.int64) - word_start[owner]
    w = _words_at(data, starts[long_][owner] + 8 * j, np.minimum(lengths[long_][owner] - 8 * j, 8), lower_ascii)
    w += (j + 1).astype(np.uint64) * _WORD_SALT
    total = np.add.reduceat(mix64(w, inplace=True), word_start)
    total += lengths[long_].astype(np.uint64) * _LENGTH_SALT
    out[long_] = mix64(total, inplace=True)
    return out


_HIGH_BITS = np.uint64(0x8080808080808080)
_FROM_A = np.uint64(0x3F3F3F3F3F3F3F3F)  # byte + 0x3F has its high bit set iff byte >= 'A' (bytes < 0x80)
_PAST_Z = np.uint64(0x2525252525252525)  # byte + 0x25 has its high bit set iff byte > 'Z'


def _words_at(data: np.ndarray, positions: np.ndarray, keep: np.ndarray, lower_ascii: bool) -> np.ndarray:
    """The `keep` (0..8) bytes of `data` at each position as a little-endian uint64, the rest zero."""
    usable = data.size - 7
    # Every position of `data` read as a little-endian uint64 (unaligned, overlapping: a view).
    words64 = np.ndarray((usable,), dtype="<u8", buffer=data, strides=(1,)) if usable > 0 else None
    if positions.size and int(positions.max()) < usable:
        # No position in the last 7 bytes (every block of a batch but its last): one gather, no masks (on the
        # 31.5 MB leakage benchmark ~0.105 -> ~0.094 s CPU of hashing).
        out = words64[positions]
    else:
        out = np.empty(positions.size, np.uint64)
        inner = positions < usable
        if words64 is not None:
            out[inner] = words64[positions[inner]]
        if not inner.all():  # the last 7 bytes: read from a zero-padded copy of the tail
            base = max(data.size - 8, 0)
            tail = np.zeros(16, np.uint8)
            tail[: data.size - base] = data[base:]
            out[~inner] = np.ndarray((9,), dtype="<u8", buffer=tail, strides=(1,))[positions[~inner] - base]
    out &= _LOW_BYTES[keep]
    if lower_ascii:  # SWAR: add 0x20 to every byte in 'A'..'Z' (all bytes are ASCII here)
        upper = (out + _FROM_A) & ~(out + _PAST_Z) & _HIGH_BITS
        out |= upper >> np.uint64(2)
    return out


def _wide_spans(spans: _Spans, wide_bytes: np.ndarray) -> np.ndarray:
    """Indices of the spans that hold non-ASCII characters (`wide_bytes`, sorted), each once, in order."""
    holder = np.searchsorted(spans.starts, wide_bytes, side="right") - 1
    return holder[np.concatenate([[True], holder[1:] != holder[:-1]])]


def _splice(span_counts: np.ndarray, wide: np.ndarray, per_wide: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each wide span's entry gives way to its words (none, one or several): a delete, then an insert at `at`
    (as `np.insert` takes it); and the tokens per text after."""
    at = np.repeat(wide - np.arange(wide.size), per_wide)
    row = np.searchsorted(np.cumsum(span_counts), wide, side="right")
    return at, span_counts + np.bincount(row, weights=per_wide - 1, minlength=span_counts.size).astype(np.int64)


def _spliced(values: np.ndarray, wide: np.ndarray, per_wide: np.ndarray, at: np.ndarray,
             new: np.ndarray) -> np.ndarray:
    """`values` with each wide span's entry replaced by its words' entries in `new` (`per_wide` each, in order):
    `np.insert(np.delete(values, wide), at, new)` with `_splice`'s `at`. A few wide spans (source code or English
    text: hundreds among 400 K tokens a batch) are spliced by copying the runs between them, not through masks
    over every token (the 31.5 MB leakage benchmark's 1,584 wide spans in 8 batches: 14 -> 10 ms)."""
    if wide.size > _FEW_WIDE:
        return np.insert(np.delete(values, wide), at, new)
    out = np.empty(values.size - wide.size + new.size, values.dtype)
    src = dst = taken = 0
    for w, p in zip(wide.tolist(), per_wide.tolist()):
        out[dst : dst + w - src] = values[src:w]
        dst += w - src
        out[dst : dst + p] = new[taken : taken + p]
        dst, taken, src = dst + p, taken + p, w + 1
    out[dst:] = values[src:]
    return out


_FEW_WIDE = 1024


# Above this share of a batch's bytes being the continuation bytes of non-ASCII characters (Cyrillic,
# Greek, CJK text: 0.45-0.65; English web text or source code: under 0.01; a Latin-script text with every
# other word accented: ~0.02), cutting each span by the regex costs more than the regex over the whole
# texts (measured 21 against 27-31 MB/s on the standard library's CJK test texts).
_WHOLE_TEXT_SHARE = 0.2


def _mostly_another_script(size: int, continuation: int) -> bool:
    """Whether a batch of `size` bytes, `continuation` of them continuation bytes of non-ASCII characters (bytes
    minus characters), takes the regex over whole texts rather than the byte path: `tokenize` and `word_offsets`
    decide alike, so their tokens are the same."""
    return continuation > _WHOLE_TEXT_SHARE * size


@dataclass
class _Mixed:
    """Tokens of ASCII spans and of the words cut from the `wide` spans (those with non-ASCII bytes)."""

    spans: _Spans
    wide: np.ndarray  # indices of the spans replaced by `words`
    words: pl.Series
    at: np.ndarray  # per word: where it goes among the other spans (as in `np.insert`)

    def series(self) -> pl.Series:
        starts, lengths = np.delete(self.spans.starts, self.wide), np.delete(self.spans.lengths, self.wide)
        order = np.insert(np.arange(starts.size), self.at, starts.size + np.arange(self.words.len()))
        return pl.concat([_Spans(self.spans.data, starts, lengths).series(), self.words]).gather(order)

    def strings_at(self, positions: np.ndarray) -> pl.Series:
        """`series().gather(positions)` for ascending positions, without the other tokens' strings."""
        starts, lengths = np.delete(self.spans.starts, self.wide), np.delete(self.spans.lengths, self.wide)
        source = np.insert(np.arange(starts.size), self.at, starts.size + np.arange(self.words.len()))[positions]
        is_span = source < starts.size
        spans = source[is_span]  # ascending: the spans keep their order among the tokens
        n_spans = spans.size
        order = np.empty(positions.size, np.int64)
        order[is_span] = np.arange(n_spans)
        order[~is_span] = n_spans + np.arange(positions.size - n_spans)
        return pl.concat([_Spans(self.spans.data, starts[spans], lengths[spans]).series(),
                          self.words.gather(source[~is_span] - starts.size)]).gather(order)


def _string_buffers(texts: pl.Series | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of all texts concatenated (as Arrow holds them, no copy) and their int64 offsets (n + 1); an
    Arrow array's nulls must be empty (as polars' are)."""
    arrow = texts.to_arrow() if isinstance(texts, pl.Series) else texts
    if isinstance(arrow, pa.ChunkedArray):
        arrow = arrow.combine_chunks()
    arrow = pc.cast(arrow, pa.large_string())
    offsets = np.frombuffer(arrow.buffers()[1], dtype=np.int64)[arrow.offset : arrow.offset + len(arrow) + 1]
    if len(arrow) == 0 or offsets[-1] == offsets[0]:
        return np.zeros(0, np.uint8), np.zeros(len(arrow) + 1, np.int64)
    data = np.frombuffer(arrow.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data, offsets - offsets[0]


@dataclass
class _Spans:
    """Tokens as byte spans of the batch's text (not lower-cased; int32 where the batch allows); strings built
    only on demand."""

    data: np.ndarray  # uint8, the texts' bytes as Arrow holds them (read-only)
    starts: np.ndarray
    lengths: np.ndarray

    def series(self) -> pl.Series:
        return _span_strings(self.data, self.starts, self.lengths).str.to_lowercase()

    def strings_at(self, positions: np.ndarray) -> pl.Series:
        """`series().gather(positions)` for ascending positions, without the other spans' strings."""
        return _span_strings(self.data, self.starts[positions], self.lengths[positions]).str.to_lowercase()


def _span_strings(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> pl.Series:
    """The text of each byte span as written (spans in order, not overlapping, on character boundaries)."""
    if starts.size == 0:
        return pl.Series("text", [], pl.String)
    lengths64 = lengths.astype(np.int64)
    total = int(lengths64.sum())
    if 2 * total < int(starts[-1]) + int(lengths[-1]) - int(starts[0]):
        # Sparse spans (those holding non-ASCII characters): their bytes copied out, so the strings do not refer
        # to the whole batch's text (which polars then copies: 1-7 -> 0.3-0.4 ms over the 31.5 MB leakage benchmark).
        offsets = np.zeros(starts.size + 1, np.int64)
        np.cumsum(lengths64, out=offsets[1:])
        index = np.repeat(starts.astype(np.int64) - offsets[:-1], lengths64) + np.arange(total)
        arrow = pa.LargeStringArray.from_buffers(starts.size, pa.py_buffer(offsets), pa.py_buffer(data[index]))
        return pl.Series("text", arrow, pl.String)
    edges = np.empty(2 * starts.size, np.int64)
    edges[0::2], edges[1::2] = starts, starts + lengths
    # One Arrow array whose strings alternate span, gap, span, ...: keep every other one.
    arrow = pa.LargeStringArray.from_buffers(edges.size - 1, pa.py_buffer(edges), pa.py_buffer(data))
    return pl.Series("text", arrow, pl.String).gather_every(2)


def _candidate_spans(data: np.ndarray, offsets: np.ndarray) -> tuple[_Spans, np.ndarray, np.ndarray]:
    """Runs of ASCII word bytes and non-ASCII bytes, by byte classification, and how many per text.

    A run starts where such a byte follows another byte (or a text starts) and ends where one is followed
    by another byte (or the text ends). Every word of WORD_REGEX lies in one run: its characters are ASCII
    word bytes or non-ASCII ones. A run of ASCII bytes only is exactly one word. Returns the spans over
    the texts' own bytes (hashed lower-cased by `span_hashes(..., lower_ascii=True)`) and where the non-ASCII
    characters start. `data` and `offsets` are the texts' `_string_buffers`.
    """
    size = int(offsets[-1])
    # Positions as int32 where the batch allows (under 2 GiB): a batch's spans then take 8 bytes a token.
    position = np.int32 if size < 2**31 - 1 else np.int64
    # Block by block, so the working memory is a block's masks, not 2 bytes for every byte of the batch:
    # candidate bytes by byte arithmetic (uint8 wraps), then the transitions between candidate and other
    # bytes, which alternate start, end, start, ... across blocks (`open`: a span runs into the block).
    starts_parts, ends_parts, wide_parts = [np.zeros(0, position)], [np.zeros(0, position)], [np.zeros(0, position)]
    block = min(size, _CLASSIFY_BYTES)
    inside, change, letter = np.empty(block, bool), np.empty(block, bool), np.empty(block, np.uint8)
    open_ = False
    for lo in range(0, size, _CLASSIFY_BYTES):
        chunk = data[lo : lo + _CLASSIFY_BYTES]
        m = chunk.size
        part = inside[:m]
        np.bitwise_or(chunk, np.uint8(0x20), out=letter[:m])
        letter[:m] -= np.uint8(97)
        np.less(letter[:m], 26, out=part)
        np.subtract(chunk, np.uint8(48), out=letter[:m])
        part |= letter[:m] < 10
        part |= chunk == 95
        part |= chunk >= 128
        wide_parts.append((np.flatnonzero(chunk >= 0xC0) + lo).astype(position))  # where non-ASCII characters start
        change[0] = part[0] != open_
        np.not_equal(part[1:], part[:-1], out=change[1:m])
        edges = (np.flatnonzero(change[:m]) + lo).astype(position)
        starts_parts.append(edges[1::2] if open_ else edges[0::2])
        ends_parts.append(edges[0::2] if open_ else edges[1::2])
        open_ = bool(part[-1])
    if open_:
        ends_parts.append(np.array([size], position))
    del inside, change, letter
    starts, ends = np.concatenate(starts_parts), np.concatenate(ends_parts)
    del starts_parts, ends_parts
    # A span running from one text into the next is cut where the next text starts.
    inner = np.unique(offsets[1:-1])
    inner = inner[(inner > 0) & (inner < size)]
    joined = inner[_CANDIDATE_BYTE[data[inner - 1]] & _CANDIDATE_BYTE[data[inner]]].astype(position)
    if joined.size:
        starts = np.insert(starts, np.searchsorted(starts, joined), joined)
        ends = np.insert(ends, np.searchsorted(ends, joined), joined)
    ends -= starts  # now the lengths
    counts = np.diff(np.searchsorted(starts, offsets.astype(position))).astype(np.int64)
    return _Spans(data, starts, ends), counts, np.concatenate(wide_parts)


_CLASSIFY_BYTES = 1 << 20


_ASCII_WORD = np.zeros(128, bool)
_ASCII_WORD[[ord(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"]] = True
# Bytes that may be part of a word: ASCII letters, digits and '_', and every byte of a non-ASCII character.
_CANDIDATE_BYTE = np.concatenate([_ASCII_WORD, np.ones(128, bool)])
