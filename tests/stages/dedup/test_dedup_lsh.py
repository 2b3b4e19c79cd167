"""LSH banding: the bands x rows choice, the S-curve it promises, and candidate pairs from buckets."""

from __future__ import annotations

import numpy as np
import pytest

from stages.dedup.lsh import Banding, band_keys, candidate_pairs, candidate_probability, choose_bands
from stages.dedup.signatures import minhash_signatures


def test_layouts_divide_num_perm_and_verification_favours_recall():
    # Unverified: balanced FP/FN areas (datasketch's criterion). Verified: catch pairs at the threshold.
    assert choose_bands(0.8, 128) == (8, 16)
    assert choose_bands(0.8, 128, min_candidate_probability=0.9) == (16, 8)
    # datatrove's default layout (14 buckets x 8) is what the rule gives for 112 permutations.
    assert choose_bands(0.8, 112, min_candidate_probability=0.9) == (14, 8)
    for t in (0.5, 0.7, 0.9, 0.95):
        bands, rows = choose_bands(t, 128, 0.9)
        assert bands * rows == 128
        assert candidate_probability(t, bands, rows) >= 0.9


def test_s_curve_is_monotone_and_described():
    s = np.linspace(0, 1, 101)
    p = candidate_probability(s, 16, 8)
    assert p[0] == 0 and p[-1] == 1 and (np.diff(p) >= 0).all()
    info = Banding(16, 8, 0.8).describe()
    assert info["candidate_probability"]["0.85"] > 0.99
    assert info["candidate_probability"]["0.3"] < 0.002
    assert info["s_curve_midpoint"] == pytest.approx((1 / 16) ** (1 / 8), abs=1e-4)


def test_empirical_candidate_rate_follows_the_s_curve():
    # Pairs of sets with a known Jaccard: the share that shares a band matches 1 - (1 - s^r)^b.
    rng = np.random.default_rng(0)
    for target in (0.5, 0.7, 0.9):
        shared = 300
        extra = int(round(shared * (1 - target) / target / 2))
        values, offsets = [], [0]
        for _ in range(300):
            common = rng.integers(0, 2**63, shared, dtype=np.uint64)
            for _side in range(2):
                own = rng.integers(0, 2**63, extra, dtype=np.uint64)
                values.append(np.concatenate([common, own]))
                offsets.append(offsets[-1] + shared + extra)
        sig = minhash_signatures(np.concatenate(values), np.array(offsets), 128)
        keys = band_keys(sig, 16, 8)
        hit = (keys[0::2] == keys[1::2]).any(axis=1).mean()
        s = shared / (shared + 2 * extra)
        assert abs(hit - candidate_probability(s, 16, 8)) < 0.08, (target, hit)


def test_identical_rows_make_a_star_not_a_clique():
    sig = np.tile(np.arange(128, dtype=np.uint32), (50, 1))
    pairs = candidate_pairs(sig, 16, 8)
    assert len(pairs) == 49
    assert (pairs[:, 0] == 0).all() and sorted(pairs[:, 1]) == list(range(1, 50))


def test_different_rows_are_not_candidates():
    rng = np.random.default_rng(1)
    sig = rng.integers(0, 2**32, size=(200, 128), dtype=np.uint32)
    assert len(candidate_pairs(sig, 16, 8)) == 0
    sig[7] = sig[3]
    assert candidate_pairs(sig, 16, 8).tolist() == [[3, 7]]
