"""Word tokenisation: normalised, hashed tokens of a whole batch at once, and their character offsets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from stages._hashing import id_digest
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

# Seed of the process-local token hash (polars' own hash: the fastest, stable within one polars version).
TOKEN_HASH_SEED = 0x5EED1EA4


@dataclass
class Tokens:
    """Normalised word tokens of a batch of documents, flattened: `hashes[offsets[d]:offsets[d+1]]`."""

    words: pl.Series  # normalised token strings, flat
    hashes: np.ndarray  # uint64, one per token
    counts: np.ndarray  # int64 tokens per document

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)


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


def token_hashes(words: pl.Series, stable: bool = False) -> np.ndarray:
    """uint64 hash of each token string.

    stable=False: polars' seeded hash; identical for identical strings within one process (and one
    polars version), which is all a single audit run needs, and the fastest (~1 ns a token).
    stable=True: `stages._hashing.id_digest` (tabulation hashing over the UTF-8 bytes, defined in
    this project, the same on every machine and version): for hashes that are stored or compared
    across runs (dedup signatures). Computed once per distinct token and joined back.
    """
    if not stable:
        return words.hash(seed=TOKEN_HASH_SEED).to_numpy().astype(np.uint64, copy=False)
    vocab = words.unique()
    lookup = pl.DataFrame({"w": vocab, "h": pl.Series(id_digest(vocab), dtype=pl.UInt64)})
    joined = pl.DataFrame({"w": words}).join(lookup, on="w", how="left", maintain_order="left")
    return joined["h"].to_numpy().astype(np.uint64, copy=False)


def tokenize(texts: pl.Series | Sequence[str | None], stable: bool = False) -> Tokens:
    """Split on non-word characters, lower-case, NFKC-normalise and hash every token, vectorised.

    The tokens are the words of `normalize(texts, "full")`. NFKC runs only on the rare non-ASCII
    tokens (it is the costly step and a no-op on ASCII). See `token_hashes` for `stable`.
    """
    words = split_words(texts, "word")
    counts = words.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = words.explode().drop_nulls().str.to_lowercase()
    non_ascii = (flat.str.len_bytes() != flat.str.len_chars()).arg_true()
    if len(non_ascii):
        fixed = flat.gather(non_ascii).str.normalize("NFKC").str.to_lowercase()
        flat = flat.scatter(non_ascii, fixed)
    return Tokens(words=flat, hashes=token_hashes(flat, stable), counts=counts)


# ----------------------------------------------------------------------------- character offsets

_ASCII_WORD = np.zeros(128, bool)
_ASCII_WORD[[ord(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"]] = True
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


def _classify(points: np.ndarray, split: Literal["word", "whitespace"]) -> np.ndarray:
    """Per code point: does it belong to a token? ASCII by table, distinct non-ASCII points once each."""
    table = _ASCII_WORD if split == "word" else _ASCII_NONSPACE
    wide = points >= 128
    inside = np.zeros(points.size, bool)
    inside[~wide] = table[points[~wide]]
    if wide.any():
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
    "whitespace" the runs of non-whitespace (Python's `\\S+`). Vectorised over the whole batch.
    """
    points, doc_starts = code_points(texts)
    n_docs = doc_starts.size - 1
    inside = _classify(points, split)
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
    points = np.frombuffer((text or "").encode("utf-32-le"), np.uint32)
    inside = _classify(points, split)
    edges = np.flatnonzero(np.diff(np.concatenate([[False], inside, [False]]).astype(np.int8)))
    return edges.reshape(-1, 2).astype(np.int64)
