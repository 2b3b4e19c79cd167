"""The text side of dedup, all of it from the project's one text core (`stages.text`).

Exact dedup needs one stable 64-bit hash per normalised text; MinHash needs each text's word or
character n-gram hashes, flattened (one uint64 buffer plus row offsets, the layout rensa reads).
A non-empty text shorter than n units has one shingle (all of it), so short texts still compare;
a text with no units at all (only punctuation, under word shingles) has an empty set, and all such
texts are duplicates of each other, as they are under the normalisation.

Signatures do not need distinct shingles (a minimum ignores repeats), and making every set
distinct is the costliest step of the text core's `word_shingles` (a sort of every shingle of the
corpus); so signatures read every n-gram hash in order (`shingle_hashes`), and only the few
candidate rows verified by true Jaccard get distinct sets (`shingle_sets`). Both come from the
same text-core hash, so a set and its signature describe the same shingles.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl

from stages.text import MAX_N, char_shingles, text_hash, tokenize
from stages.text.ngrams import _with_short_docs, per_doc_sets, short_doc_hashes, window_hashes
from stages.text.normalize import NormalizeMode

ShingleUnit = Literal["word", "char"]
MAX_NGRAM = MAX_N


def text_hashes(texts: pl.Series, normalization: NormalizeMode) -> np.ndarray:
    """One stable uint64 hash per normalised text (equal normalised texts, equal hashes)."""
    return text_hash(texts, normalization)


def shingle_sets(texts: pl.Series, unit: ShingleUnit, n: int, normalization: NormalizeMode) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets): each text's distinct n-gram hashes, sorted, flat.

    Word shingles are over the text core's words (case, punctuation and NFKC already folded), so
    `normalization` only changes character shingles.
    """
    if unit == "word":
        # Exactly the text core's word_shingles (one token hash definition: `tokenize(...).hashes`).
        tok = tokenize(texts, stable=True)
        return per_doc_sets(*_with_short_docs(tok.hashes, tok.counts, n))
    return char_shingles(texts, n, normalization)


def shingle_hashes(texts: pl.Series, unit: ShingleUnit, n: int, normalization: NormalizeMode) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets): each text's n-gram hashes in text order, repeats kept (the same hashes as `shingle_sets`)."""
    if unit != "word":
        return char_shingles(texts, n, normalization)
    tok = tokenize(texts, stable=True)
    units, counts = tok.hashes, tok.counts
    del tok  # its spans: only the token hashes are read from here on
    # Every window's hash, then only those inside one document: no per-n-gram document or position array.
    grams = np.maximum(counts - n + 1, 0)
    first = np.cumsum(counts) - counts
    inside = np.zeros(max(units.size - n + 1, 0) + 1, np.int8)
    np.add.at(inside, first[grams > 0], 1)
    np.add.at(inside, (first + grams)[grams > 0], -1)
    hashes = window_hashes(units, n)[np.cumsum(inside[:-1], dtype=np.int8).view(bool)]
    # A text of 1..n-1 words has one shingle (all of it), in its place among the others.
    short, extra = short_doc_hashes(units, counts, n)
    if short.size:
        hashes = np.insert(hashes, np.cumsum(grams)[short], extra)
        grams[short] = 1
    offsets = np.zeros(counts.size + 1, np.int64)
    np.cumsum(grams, out=offsets[1:])
    return hashes, offsets
