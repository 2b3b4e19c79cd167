"""MinHash signatures of flattened shingle-hash sets, and true Jaccard of candidate pairs.

Signatures come from rensa (Rust): on the same flat uint64 shingle hashes it computed 128-value
signatures about 3x faster than the vectorised NumPy implementation measured beside it in
`bench/bench_dedup.py` (itself far faster than datasketch's per-document objects), and it takes
the text core's layout (one flat hash buffer plus row offsets) without a per-document Python step.
Signatures are uint32; equal signatures of unequal sets are as unlikely as MinHash itself allows.

The seed is fixed, not the pipeline seed: a duplicate rate is then comparable across runs and
across generations of a synthetic-data study, and a dedup step's output does not move with it.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import rensa

from stages._hashing import mix64

SIGNATURE_SEED = 0x5EED_D3D0
_PAIR_SALT = np.uint64(0x9E3779B97F4A7C15)
# rensa versions its algorithm; the stages put it in their fingerprint so a change recomputes.
ALGORITHM_VERSION = int(getattr(rensa.RMinHash, "ALGORITHM_VERSION", 0))


def minhash_signatures(hashes: np.ndarray, offsets: np.ndarray, num_perm: int) -> np.ndarray:
    """(n, num_perm) uint32 MinHash signatures of the sets `hashes[offsets[i]:offsets[i + 1]]`.

    Every set must be non-empty: an empty set has no minimum, and rensa would give it the same
    all-max signature as every other empty set (callers give a too-short text one whole-text shingle).
    """
    n = len(offsets) - 1
    if n <= 0:
        return np.empty((0, num_perm), np.uint32)
    flat = np.ascontiguousarray(hashes, dtype=np.uint64)
    bounds = np.ascontiguousarray(offsets, dtype=np.uint64)
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat, bounds, num_perm, SIGNATURE_SEED)
    rows = matrix.to_rows()
    return np.fromiter(itertools.chain.from_iterable(rows), np.uint32, count=n * num_perm).reshape(n, num_perm)


def sequence_digests(hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """One uint64 per row of the sequence `hashes[offsets[i]:offsets[i + 1]]` (order and length included).

    Rows with equal shingle sequences have equal shingle sets, so a candidate pair with equal
    digests has true Jaccard exactly 1 and needs no re-read (different sequences share a digest
    with probability 2**-64, the n-gram hash's own collision rate).
    """
    counts = np.diff(offsets).astype(np.int64)
    out = np.zeros(counts.size, np.uint64)
    if hashes.size:
        position = np.arange(hashes.size, dtype=np.int64) - np.repeat(offsets[:-1].astype(np.int64), counts)
        contrib = mix64(np.asarray(hashes, np.uint64) ^ (position.astype(np.uint64) * _PAIR_SALT), inplace=True)
        nonempty = counts > 0
        out[nonempty] = np.add.reduceat(contrib, offsets[:-1][nonempty].astype(np.int64))
    return mix64(out ^ mix64(counts.astype(np.uint64)), inplace=True)


def jaccard_pairs(hashes: np.ndarray, offsets: np.ndarray, pairs: np.ndarray,
                  max_items: int = 8_000_000) -> np.ndarray:
    """True Jaccard of each pair of rows of flat sets (distinct values per row), vectorised in chunks of pairs.

    |A & B| = |A| + |B| - |A | B|: the two sets of a pair are concatenated, and after sorting by
    (pair, hash) every adjacent equal value is one shared element.
    """
    out = np.empty(len(pairs), np.float64)
    sizes = np.diff(offsets)
    lo = 0
    while lo < len(pairs):
        cost = np.cumsum(sizes[pairs[lo:, 0]] + sizes[pairs[lo:, 1]])
        hi = lo + max(1, int(np.searchsorted(cost, max_items, side="right")))
        out[lo:hi] = _jaccard_chunk(hashes, offsets, sizes, pairs[lo:hi])
        lo = hi
    return out


class SpilledSets:
    """Distinct shingle sets of the candidate rows, written to a scratch file as they are made.

    Verifying candidates by true Jaccard needs both sets of a pair at once, and in a corpus that
    is mostly copies every row is a candidate: holding the sets would hold about as much as the
    texts. Here memory keeps only each set's size and offset (16 bytes a row); `jaccard` maps the
    file for one bounded chunk of pairs at a time and unmaps it after, so the peak is one chunk,
    whatever the corpus size. The file lives in the system's temporary folder and is removed by
    `close`.
    """

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="dedup-sets-"))
        self.path = self.folder / "sets.u64"
        self._file = self.path.open("wb")
        self._sizes: list[np.ndarray] = []
        self.offsets = np.zeros(1, np.int64)
        self.sizes = np.zeros(0, np.int64)

    def append(self, hashes: np.ndarray, offsets: np.ndarray) -> None:
        """Add the sets of some rows, in the order their set indices were assigned (also after `seal`)."""
        if self._file.closed:
            self._file = self.path.open("ab")
        self._file.write(np.ascontiguousarray(hashes, dtype=np.uint64).tobytes())
        self._sizes.append(np.diff(offsets).astype(np.int64))

    @property
    def count(self) -> int:
        """Sets stored so far."""
        return sum(len(s) for s in self._sizes)

    def seal(self) -> SpilledSets:
        self._file.close()
        self.sizes = np.concatenate(self._sizes) if self._sizes else np.zeros(0, np.int64)
        self.offsets = np.zeros(self.sizes.size + 1, np.int64)
        np.cumsum(self.sizes, out=self.offsets[1:])
        return self

    def jaccard(self, pairs: np.ndarray, max_items: int = 2_000_000) -> np.ndarray:
        """True Jaccard of pairs of set indices (as `jaccard_pairs`), reading the file chunk by chunk."""
        out = np.empty(len(pairs), np.float64)
        if self.offsets[-1] == 0:
            out[:] = 1.0  # every set empty (nothing to compare): as jaccard_pairs says for empty unions
            return out
        lo = 0
        while lo < len(pairs):
            cost = np.cumsum(self.sizes[pairs[lo:, 0]] + self.sizes[pairs[lo:, 1]])
            hi = lo + max(1, int(np.searchsorted(cost, max_items, side="right")))
            mapped = np.memmap(self.path, dtype=np.uint64, mode="r")
            out[lo:hi] = _jaccard_chunk(mapped, self.offsets, self.sizes, pairs[lo:hi])
            del mapped
            lo = hi
        return out

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _jaccard_chunk(hashes: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    a, b = pairs[:, 0], pairs[:, 1]
    lengths = np.stack([sizes[a], sizes[b]], axis=1).reshape(-1)
    starts = np.stack([offsets[a], offsets[b]], axis=1).reshape(-1)
    total = int(lengths.sum())
    pair_of = np.repeat(np.arange(len(pairs), dtype=np.int64), lengths.reshape(-1, 2).sum(axis=1))
    first_out = np.cumsum(lengths) - lengths
    gather = np.arange(total, dtype=np.int64) - np.repeat(first_out, lengths) + np.repeat(starts, lengths)
    values = hashes[gather]
    # One sort key per (pair, value): the value xor a pair salt. Two different (pair, value)s share
    # a key only if their values differ by exactly the salts' xor (probability 2**-64 a comparison).
    keys = values ^ (pair_of.astype(np.uint64) * _PAIR_SALT)
    order = np.argsort(keys)
    k = keys[order]
    shared = np.zeros(len(pairs), np.int64)
    if total > 1:
        same = k[1:] == k[:-1]
        shared = np.bincount(pair_of[order][1:][same], minlength=len(pairs))
    union = sizes[a] + sizes[b] - shared
    return np.where(union > 0, shared / np.maximum(union, 1), 1.0)
