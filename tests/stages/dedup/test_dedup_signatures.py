"""MinHash signatures estimate Jaccard; the vectorised true Jaccard matches Python sets."""

from __future__ import annotations

import numpy as np

from stages.dedup.signatures import jaccard_pairs, minhash_signatures
from stages.text import word_shingles


def _flat(sets):
    values = np.concatenate([np.array(sorted(s), np.uint64) for s in sets])
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
    return values, offsets


def test_true_jaccard_matches_python_sets():
    rng = np.random.default_rng(2)
    sets = [set(rng.integers(0, 60, size=rng.integers(1, 40)).tolist()) for _ in range(30)]
    values, offsets = _flat(sets)
    pairs = np.array([(i, j) for i in range(30) for j in range(i + 1, 30)], np.int64)
    got = jaccard_pairs(values, offsets, pairs, max_items=200)  # many chunks
    want = [len(sets[i] & sets[j]) / len(sets[i] | sets[j]) for i, j in pairs]
    np.testing.assert_allclose(got, want)


def test_signature_agreement_estimates_jaccard():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2**63, 2000, dtype=np.uint64)
    b = a.copy()
    b[:500] = rng.integers(0, 2**63, 500, dtype=np.uint64)
    sig = minhash_signatures(np.concatenate([a, b]), np.array([0, 2000, 4000]), 512)
    true = 1500 / 2500
    assert sig.shape == (2, 512) and sig.dtype == np.uint32
    assert abs((sig[0] == sig[1]).mean() - true) < 0.06


def test_signatures_are_stable_and_set_based():
    texts = ["the quick brown fox jumps over the lazy dog", "a completely different sentence about parquet files"]
    values, offsets = word_shingles(texts, 3)
    first = minhash_signatures(values, offsets, 64)
    again = minhash_signatures(values.copy(), offsets.copy(), 64)
    assert (first == again).all()
    assert (first[0] != first[1]).mean() > 0.9
    doubled = minhash_signatures(np.concatenate([values[: offsets[1]]] * 2), np.array([0, 2 * offsets[1]]), 64)
    assert (doubled[0] == first[0]).all()  # a repeated shingle does not change the set
