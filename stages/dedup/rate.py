"""A corpus's MinHash near-duplicate rate: the share of rows a `dedup_minhash` step would remove.

A collapse metric: synthetic generations that drift into near-copies of each other show it rising
generation after generation. Same shingles, signatures, banding and verification as the stage,
so the rate a study reports is the rate the stage would act on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from pipeline.arrays import unique_sorted
from pipeline.params import check_params
from stages._args import text_list, text_series
from stages.dedup.clusters import components
from stages.dedup.lsh import candidate_pairs
from stages.dedup.minhash import DedupMinhash, check_minhash_params, resolve_banding
from stages.dedup.shingles import ShingleUnit, shingle_sets
from stages.dedup.signatures import jaccard_pairs, minhash_signatures
from stages.text.normalize import NormalizeMode


def near_duplicate_clusters(
    texts: Sequence[str] | pl.Series,
    threshold: float = 0.8,
    ngram: int = 5,
    unit: ShingleUnit = "word",
    normalization: NormalizeMode = "full",
    num_perm: int = 128,
    bands: int | None = None,
    rows: int | None = None,
) -> np.ndarray:
    """Cluster label of each text (the lowest position in its near-duplicate cluster), verified by true Jaccard.

    Null or empty texts are each their own cluster: they duplicate nothing. The settings are checked as
    `dedup_minhash` checks its params (ParamError naming the parameter).
    """
    # The stage's own declarations (types, 'word' | 'char', the normalisation modes), then its joint checks.
    check_params(DedupMinhash, (), {"ngram": ngram, "unit": unit, "normalization": normalization, "num_perm": num_perm,
                                    "threshold": threshold, "bands": bands, "rows": rows})
    check_minhash_params(ngram, num_perm, threshold, bands, rows)
    banding = resolve_banding(num_perm, threshold, bands, rows)
    series = text_series(texts) if isinstance(texts, pl.Series) else pl.Series(
        "text", text_list(texts, nulls=True), dtype=pl.String)
    n = len(series)
    blank = (series.is_null() | (series.str.strip_chars().str.len_bytes() == 0)).to_numpy()
    present = np.flatnonzero(~blank)
    labels = np.arange(n, dtype=np.int64)
    if present.size < 2:
        return labels
    hashes, offsets = shingle_sets(series.gather(present), unit, ngram, normalization)
    signatures = minhash_signatures(hashes, offsets, num_perm)
    candidates = candidate_pairs(signatures, banding.bands, banding.rows)
    if len(candidates):
        candidates = candidates[jaccard_pairs(hashes, offsets, candidates) >= threshold]
    labels[present] = present[components(present.size, candidates)]
    return labels


def near_duplicate_rate(texts: Sequence[str] | pl.Series, threshold: float = 0.8, ngram: int = 5,
                        unit: ShingleUnit = "word", normalization: NormalizeMode = "full",
                        num_perm: int = 128) -> float:
    """Fraction of texts that are near-duplicates of another kept text: (rows - clusters) / rows.

    0.0 for a corpus of distinct texts, (n - 1) / n for n copies of one text.
    """
    labels = near_duplicate_clusters(texts, threshold, ngram, unit, normalization, num_perm)
    if labels.size == 0:
        return 0.0
    return float(labels.size - unique_sorted(labels).size) / labels.size
