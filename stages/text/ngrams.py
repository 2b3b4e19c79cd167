"""n-gram hashing: word n-grams, character shingles and whole-text hashes, vectorised over a batch.

The hash (documented once, here): each token (or code point) gets a 64-bit hash h; an n-gram
t_i..t_{i+n-1} hashes to  H = sum_j h(t_{i+j}) * M_j  (mod 2^64), then  H ^= H >> 31.  The M_j are
fixed distinct odd constants (drawn once from NumPy's PCG64 with a fixed seed, which NumPy keeps
stable), so the hash is order-sensitive and n vector multiply-adds compute every n-gram of a batch.
Token hashes are process-local by default (fast) or stable across machines and versions with
`stable=True` (see `tokens.token_hashes`); code points and whole texts always hash stably
(SplitMix64 and `stages._hashing.id_digest`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from stages._hashing import id_digest, mix64
from stages.text.char_offsets import code_points
from stages.text.normalize import NormalizeMode, normalize
from stages.text.tokens import tokenize

MAX_N = 50
MULTIPLIERS = (
    np.random.default_rng(0x1EA4A6E).integers(1, 2**63, size=MAX_N, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
)
_HASH_BLOCK = 1 << 14
_CODE_POINT_SALT = np.uint64(0xC0DE9017C0DE9017)


def ngram_hashes(tokens: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All n-gram hashes of a flattened batch: (hash, document index, token position in document).

    `tokens` are per-token uint64 hashes, `counts` tokens per document; n-grams that straddle two
    documents are dropped. `window_hashes` + `locate_windows` do the same in two steps, so a probe
    can locate only the windows it keeps.
    """
    hashes = window_hashes(tokens, n)
    m = hashes.size
    if m == 0:
        return hashes, np.empty(0, np.int64), np.empty(0, np.int64)
    doc_of_token = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    index = np.flatnonzero(doc_of_token[:m] == doc_of_token[n - 1 : n - 1 + m])
    doc = doc_of_token[index]
    return hashes[index], doc, index - starts[doc]


def window_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """The hash of every run of n consecutive tokens of the flat batch (document ends ignored).

    A rolling sum of position-weighted token hashes: n vector multiply-adds over the whole batch,
    in cache-sized blocks.
    """
    if not 1 <= n <= MAX_N:
        raise ValueError(f"n-gram length must be between 1 and {MAX_N}, got {n}")
    m = tokens.size - n + 1
    if m <= 0:
        return np.empty(0, np.uint64)
    acc = np.empty(m, np.uint64)
    tmp = np.empty(min(m, _HASH_BLOCK), np.uint64)
    for lo in range(0, m, _HASH_BLOCK):
        hi = min(lo + _HASH_BLOCK, m)
        out, scratch = acc[lo:hi], tmp[: hi - lo]
        np.multiply(tokens[lo:hi], MULTIPLIERS[0], out=out)
        for j in range(1, n):
            np.multiply(tokens[lo + j : hi + j], MULTIPLIERS[j], out=scratch)
            out += scratch
        np.right_shift(out, np.uint64(31), out=scratch)
        out ^= scratch
    return acc


def locate_windows(index: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For windows (flat token positions, sorted) of `window_hashes`: (document, position, inside one document).

    Work follows the windows asked about, not the batch (a binary search each).
    """
    index = np.asarray(index, np.int64)
    if index.size == 0:
        return index.copy(), index.copy(), np.zeros(0, bool)
    ends = np.cumsum(counts, dtype=np.int64)
    doc = np.searchsorted(ends, index, side="right")
    start = ends[doc] - counts[doc]
    return doc.astype(np.int64), index - start, index + n <= ends[doc]


def _with_short_docs(units: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Hashes of every n-gram, plus one of the whole document where it is shorter than n (but not empty).

    A short document still has a fingerprint; hashing its whole unit sequence is the same rolling
    sum with fewer terms, so a 3-word document never equals a 5-gram of a longer one by accident
    beyond the hash's collision rate.
    """
    hashes, doc, _ = ngram_hashes(units, counts, n)
    short, extra = short_doc_hashes(units, counts, n)
    if short.size:
        hashes = np.concatenate([hashes, extra])
        doc = np.concatenate([doc, short])
    return hashes, doc, counts.size


def short_doc_hashes(units: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(documents with 1..n-1 units, the hash of each one's whole unit sequence): `window_hashes`' sum, fewer terms."""
    short = np.flatnonzero((counts > 0) & (counts < n))
    extra = np.zeros(short.size, np.uint64)
    if short.size:
        starts = (np.cumsum(counts) - counts)[short]
        for j in range(int(counts[short].max())):
            present = j < counts[short]
            extra[present] += units[starts[present] + j] * MULTIPLIERS[j]
        extra ^= extra >> np.uint64(31)
    return short, extra


def per_doc_sets(hashes: np.ndarray, doc: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct hashes of each document, sorted: flat uint64 values and int64 offsets (n_docs + 1)."""
    # A polars sort by (doc, hash): the order of np.lexsort((hashes, doc)) at ~2/3 of its CPU, multi-threaded.
    ordered = pl.DataFrame({"d": doc, "h": hashes}).sort("d", "h")
    h, d = ordered["h"].to_numpy(), ordered["d"].to_numpy()
    keep = np.ones(h.size, bool)
    keep[1:] = (h[1:] != h[:-1]) | (d[1:] != d[:-1])
    h, d = h[keep], d[keep]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(d, minlength=n_docs))]).astype(np.int64)
    return h.astype(np.uint64, copy=False), offsets


def word_shingles(texts: pl.Series | Sequence[str | None], n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per document, the set of its word n-gram hashes (stable): flat uint64 values and offsets.

    Words are those of `tokenize` (the words of the "full" normalisation); `values[offsets[d]:
    offsets[d+1]]` are document d's distinct hashes, sorted. A document with 1..n-1 words has one
    shingle (all its words); an empty one has none.
    """
    tok = tokenize(texts, stable=True)
    return per_doc_sets(*_with_short_docs(tok.hashes, tok.counts, n))


def char_shingles(
    texts: pl.Series | Sequence[str | None], k: int = 5, normalization: NormalizeMode = "full"
) -> tuple[np.ndarray, np.ndarray]:
    """Per document, the set of its k-character shingle hashes (stable): flat uint64 values and offsets.

    Texts are normalised first (`normalize(texts, normalization)`); characters are Unicode code
    points, each hashed with SplitMix64. A non-empty text shorter than k has one shingle (itself).
    """
    points, starts = code_points(normalize(texts, normalization))
    units = mix64(points.astype(np.uint64) + _CODE_POINT_SALT)
    return per_doc_sets(*_with_short_docs(units, np.diff(starts), k))


def text_hash(texts: pl.Series | Sequence[str | None], normalization: NormalizeMode = "full") -> np.ndarray:
    """A stable 64-bit hash of each whole normalised text (exact deduplication), vectorised."""
    return id_digest(normalize(texts, normalization))


def longest_common_run(a: np.ndarray, a_len: np.ndarray, b: np.ndarray, b_len: np.ndarray,
                       positions: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Longest common contiguous token run of each pair (a[p], b[p]), both (P, width) padded arrays.

    The classic dynamic programme, vectorised across pairs: one pass per row of `a`, in place. Run
    lengths fit a byte for chunks under 255 tokens (the audit's are 64): a quarter of the memory traffic.
    With `positions`, also where each run starts in a and in b (the earliest in b, then in a; 0 for an
    empty run): (runs, a starts, b starts), so evidence can show the run itself rather than the chunks.
    """
    pairs, width = a.shape
    if pairs == 0:
        empty = np.zeros(0, np.int32)
        return (empty, empty.copy(), empty.copy()) if positions else empty
    cols = b.shape[1]
    dtype = np.uint8 if max(width, cols) < 255 else np.int32
    b_valid = np.arange(cols)[None, :] < np.asarray(b_len)[:, None]
    a_len = np.asarray(a_len)
    prev = np.zeros((pairs, cols + 1), dtype)
    cur = np.zeros_like(prev)
    best = np.zeros((pairs, cols), dtype)  # best run ending at each column, over the rows seen
    eq = np.empty((pairs, cols), bool)
    best_row = np.zeros((pairs, cols), np.int32) if positions else None  # the row of a where `best` ends
    for i in range(width):
        np.equal(a[:, i : i + 1], b, out=eq)
        eq &= b_valid
        eq &= (i < a_len)[:, None]
        np.add(prev[:, :-1], 1, out=cur[:, 1:])
        cur[:, 1:] *= eq
        if best_row is not None:
            best_row[cur[:, 1:] > best] = i
        np.maximum(best, cur[:, 1:], out=best)
        prev, cur = cur, prev
    if best_row is None:
        return best.max(axis=1).astype(np.int32)
    col = best.argmax(axis=1)
    at = np.arange(pairs)
    runs = best[at, col].astype(np.int32)
    ends = np.where(runs > 0, 1 - runs, 0)
    return runs, (best_row[at, col] + ends).astype(np.int32), (col + ends).astype(np.int32)
