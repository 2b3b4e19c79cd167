"""The text side of dedup, all of it from the project's one text core (`stages.text`).

Exact dedup needs one stable 64-bit hash per normalised text; MinHash needs each text's set of
word or character n-gram hashes, flattened (one uint64 buffer plus row offsets, the layout rensa
reads). A non-empty text shorter than n units has one shingle (all of it), so short texts still
compare; a text with no units at all (only punctuation, under word shingles) has an empty set, and
all such texts are duplicates of each other, as they are under the normalisation.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl

from stages.text import MAX_N, char_shingles, text_hash, word_shingles
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
        return word_shingles(texts, n)
    return char_shingles(texts, n, normalization)
