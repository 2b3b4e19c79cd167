"""LSH banding for MinHash: the bands x rows choice, its S-curve, and candidate pairs from buckets.

A signature of `num_perm` MinHash values is cut into `bands` bands of `rows` values each. Two
documents whose true Jaccard similarity is s agree on one MinHash value with probability s, on a
whole band with probability s**rows, and so become candidates (share at least one band) with

    P(candidate | s) = 1 - (1 - s**rows) ** bands

an S-curve rising around s* ~ (1 / bands) ** (1 / rows). Everything left of the threshold t that
still becomes a candidate is a false positive; everything right of it that does not is a false
negative. `choose_bands` picks, among the exact factorisations bands x rows = num_perm, the one
that fits how candidates are used, in terms of the areas

    FP(t) = integral_0^t P(s) ds          FN(t) = integral_t^1 (1 - P(s)) ds

Unverified candidates are duplicates, so both errors count: minimise 0.5 FP + 0.5 FN (the
criterion datasketch uses; Leskovec et al., Mining of Massive Datasets ch. 3.4). At num_perm = 128
and t = 0.8 that is 8 x 16, which misses half the pairs at s = 0.85 (P = 0.46). Verified
candidates (the default, true Jaccard) cost a check when false and are lost when missed, so then
the layout is the one with the fewest false candidates among those catching a pair at exactly t
with P >= 0.9: at 128 and 0.8 that is 16 x 8, with P(0.85) = 0.994, P(0.8) = 0.947,
P(0.6) = 0.237, P(0.5) = 0.061, P(0.3) = 0.001; verification then drops every pair below t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_INTEGRATION_POINTS = 1001
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def candidate_probability(similarity: np.ndarray | float, bands: int, rows: int) -> np.ndarray:
    """P(two documents with Jaccard `similarity` share at least one of `bands` bands of `rows` values)."""
    s = np.asarray(similarity, dtype=np.float64)
    return 1.0 - (1.0 - s**rows) ** bands


def error_areas(threshold: float, bands: int, rows: int) -> tuple[float, float]:
    """(false-positive area below `threshold`, false-negative area above it) of the S-curve."""
    below = np.linspace(0.0, threshold, _INTEGRATION_POINTS)
    above = np.linspace(threshold, 1.0, _INTEGRATION_POINTS)
    fp = float(np.trapezoid(candidate_probability(below, bands, rows), below))
    fn = float(np.trapezoid(1.0 - candidate_probability(above, bands, rows), above))
    return fp, fn


def choose_bands(threshold: float, num_perm: int, min_candidate_probability: float | None = None,
                 false_positive_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows == num_perm for a Jaccard `threshold`.

    Without verification (`min_candidate_probability` None) every candidate becomes a duplicate,
    so both errors count: the layout minimising the weighted FP and FN areas. With verification,
    false positives cost only a check, missed pairs are lost for good: the layout with the smallest
    FP area among those that make a pair at exactly the threshold a candidate with at least
    `min_candidate_probability` (the most sensitive layout if none does).
    """
    layouts = [(b, num_perm // b) for b in range(1, num_perm + 1) if num_perm % b == 0]
    areas = {layout: error_areas(threshold, *layout) for layout in layouts}
    if min_candidate_probability is None:
        return min(layouts, key=lambda lr: (false_positive_weight * areas[lr][0]
                                            + (1.0 - false_positive_weight) * areas[lr][1], lr))
    sensitive = [lr for lr in layouts if candidate_probability(threshold, *lr) >= min_candidate_probability]
    if not sensitive:
        return max(layouts, key=lambda lr: (float(candidate_probability(threshold, *lr)), -lr[0]))
    return min(sensitive, key=lambda lr: (areas[lr][0], lr))


@dataclass(frozen=True)
class Banding:
    """A bands x rows layout and what it promises, recorded in the step's stats."""

    bands: int
    rows: int
    threshold: float

    def describe(self) -> dict:
        fp, fn = error_areas(self.threshold, self.bands, self.rows)
        probe = (0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
        return {
            "bands": self.bands,
            "rows": self.rows,
            "s_curve_midpoint": round((1.0 / self.bands) ** (1.0 / self.rows), 4),
            "false_positive_area": round(fp, 5),
            "false_negative_area": round(fn, 5),
            "candidate_probability": {str(s): round(float(candidate_probability(s, self.bands, self.rows)), 5)
                                      for s in probe},
        }


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 key of each band of each signature; equal bands give equal keys.

    Each band's `rows` values are folded with a SplitMix64-style mix, so a key collision between
    different bands has probability about 2**-64 per pair (negligible next to LSH's own errors).
    """
    n = signatures.shape[0]
    sig = signatures.astype(np.uint64, copy=False).reshape(n, bands, rows)
    keys = np.zeros((n, bands), np.uint64)
    with np.errstate(over="ignore"):
        for j in range(rows):
            keys ^= sig[:, :, j] + _GOLDEN * np.uint64(j + 1)
            keys *= _MIX1
            keys ^= keys >> np.uint64(29)
            keys *= _MIX2
            keys ^= keys >> np.uint64(32)
        # Salt by band index: equal values in different bands are different buckets.
        keys ^= np.arange(bands, dtype=np.uint64)[None, :] * _GOLDEN
    return keys


def candidate_pairs(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(m, 2) int64 row pairs (leader, member) that share a band, leader < member, deduplicated.

    Within each bucket every member is paired with the bucket's first row (a star, not a clique),
    so an all-identical corpus of n rows gives n - 1 pairs per band rather than n**2 / 2; union-find
    over the stars still joins the whole bucket.
    """
    if signatures.shape[0] < 2:
        return np.empty((0, 2), np.int64)
    keys = band_keys(signatures, bands, rows)
    return unique_pairs([bucket_stars(keys[:, b]) for b in range(bands)], signatures.shape[0])


def bucket_stars(column: np.ndarray) -> np.ndarray:
    """(m, 2) pairs (first row of the bucket, other member) of one band's keys: the band's buckets."""
    n = column.size
    if n < 2:
        return np.empty((0, 2), np.int64)
    order = np.argsort(column, kind="stable")
    sorted_keys = column[order]
    new_bucket = np.empty(n, bool)
    new_bucket[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new_bucket[1:])
    bucket_start = np.maximum.accumulate(np.where(new_bucket, np.arange(n, dtype=np.int64), 0))
    keep = ~new_bucket
    # Leaders are the lowest row of their bucket (stable sort), so leader < member already.
    return np.stack([order[bucket_start][keep], order[keep]], axis=1).astype(np.int64, copy=False)


def unique_pairs(found: list[np.ndarray], n: int) -> np.ndarray:
    """The distinct pairs of all bands, sorted by (low, high) row.

    Bands are taken one at a time and each is freed from `found` once merged, so the peak is the
    bands not yet merged plus the distinct pairs, not a concatenation of every band's pairs (a pair
    that most bands find arrives that many times).
    """
    codes = np.empty(0, np.int64)
    while found:
        band = found.pop()
        if len(band):
            codes = np.union1d(codes, band[:, 0] * np.int64(n) + band[:, 1])
        del band
    return np.stack([codes // n, codes % n], axis=1) if codes.size else np.empty((0, 2), np.int64)


def signature_similarity(signatures: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of each pair: the fraction of MinHash values the two signatures share."""
    if pairs.size == 0:
        return np.empty(0, np.float64)
    out = np.empty(len(pairs), np.float64)
    step = 65_536
    for lo in range(0, len(pairs), step):
        part = pairs[lo : lo + step]
        out[lo : lo + step] = (signatures[part[:, 0]] == signatures[part[:, 1]]).mean(axis=1)
    return out
