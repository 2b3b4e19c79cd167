"""Word tokenisation: normalised, hashed tokens of a whole batch at once, and their character offsets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from stages._hashing import mix64
from stages.text.normalize import as_series

# A word is a run of letters, digits and underscores. The Rust class used by polars and Python's
# `str.isalnum` select the same characters (Unicode L*, N*), so the vectorised tokenizer and the
# code-point classifier that recovers character offsets agree token for token.
WORD_REGEX = r"[\p{L}\p{N}_]+"
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


# ----------------------------------------------------------------------------- character offsets

_ASCII_WORD = np.zeros(128, bool)
_ASCII_WORD[[ord(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"]] = True
_ASCII_NONSPACE = np.array([not chr(c).isspace() for c in range(128)], bool)
# Bytes that may be part of a word: ASCII letters, digits and '_', and every byte of a non-ASCII character.
_CANDIDATE_BYTE = np.concatenate([_ASCII_WORD, np.ones(128, bool)])


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


def _classify(points: np.ndarray, split: Literal["word", "whitespace"]) -> np.ndarray:
    """Per code point: does it belong to a token? ASCII by table, distinct non-ASCII points once each."""
    table = _ASCII_WORD if split == "word" else _ASCII_NONSPACE
    inside = table[np.minimum(points, 127)]  # a gather, then the few wide points fixed (no boolean masks)
    wide = np.flatnonzero(points >= 128)
    if wide.size:
        distinct, inverse = np.unique(points[wide], return_inverse=True)
        test = str.isalnum if split == "word" else (lambda ch: not ch.isspace())
        classes = np.array([test(chr(c)) for c in distinct.tolist()], bool)
        inside[wide] = classes[inverse]
    return inside


def word_offsets(
    texts: pl.Series | Sequence[str | None], split: Literal["word", "whitespace"] = "word"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Character (code point) start and end of every token of every text, flat, and tokens per text.

    split "word" gives exactly the tokens of `tokenize` (runs of letters, digits and '_');
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
