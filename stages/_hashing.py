"""Stable per-row randomness: seeded hashes of row ids, vectorised in NumPy.

Sampling, splitting and label noise key every random choice on (seed, row id) rather than on row
positions, so a row's fate does not depend on batch boundaries, file order or the executor, and
the same seed gives the same rows everywhere. polars' and DuckDB's own hash functions may change
between versions, which would silently change which rows are chosen; these are defined here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

# polars' and DuckDB's hash functions may change between versions, which would silently change which
# rows get noise; these hashes are defined here, vectorised in NumPy, and stable.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11, _S6 = (np.uint64(s) for s in (30, 27, 31, 11, 6))
_MASK64 = (1 << 64) - 1


def mix64(z: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """SplitMix64 finaliser over a uint64 array (wrapping arithmetic); in place when the caller owns `z`."""
    z = np.asarray(z, dtype=np.uint64) if inplace else np.array(z, dtype=np.uint64)
    t = z >> _S30
    z ^= t
    z *= _MIX1
    np.right_shift(z, _S27, out=t)
    z ^= t
    z *= _MIX2
    np.right_shift(z, _S31, out=t)
    z ^= t
    return z


# Simple tabulation hashing over (byte position mod 64, byte value): 3-independent, no per-byte loop.
_BYTE_TABLE = mix64(np.arange(64 * 256, dtype=np.uint64) + _GOLDEN).reshape(64, 256)


def stream_key(seed: int, *salt: Any) -> int:
    """A 64-bit key for one use of randomness, derived from the pipeline seed only."""
    return xxhash.xxh64_intdigest(repr((int(seed), *salt)).encode())


def id_digest(values: pl.Series) -> np.ndarray:
    """A seed-independent, version-stable 64-bit digest of each id (integers, strings or bytes)."""
    # Integers: multiplying by an odd constant is a bijection of 64-bit words, enough here because
    # every use goes through `keyed` (SplitMix64 itself mixes multiples of this same constant).
    if values.dtype.is_integer():
        return id_words(values) * _GOLDEN
    # Binary ids are hashed as their bytes (a cast to String refused any that are not UTF-8); a binary id
    # that is valid UTF-8 digests as that string does.
    binary = values.dtype == pl.Binary
    arrow = (values if binary else values.cast(pl.String)).to_arrow()
    if isinstance(arrow, pa.ChunkedArray):
        arrow = arrow.combine_chunks()
    arrow = pc.cast(arrow, pa.large_binary() if binary else pa.large_string())
    n = len(arrow)
    offsets = np.frombuffer(arrow.buffers()[1], dtype=np.int64)[arrow.offset : arrow.offset + n + 1]
    lengths = np.diff(offsets)
    sums = np.zeros(n, dtype=np.uint64)
    if offsets[-1] > offsets[0]:
        data = np.frombuffer(arrow.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        starts = offsets[:-1] - offsets[0]
        pos = np.arange(data.size, dtype=np.int64) - np.repeat(starts, lengths)
        contrib = _BYTE_TABLE[pos & 63, data] ^ ((pos >> 6).astype(np.uint64) * _GOLDEN)
        nonempty = lengths > 0
        sums[nonempty] = np.add.reduceat(contrib, starts[nonempty])
    return mix64(sums ^ mix64(lengths.astype(np.uint64) + _MIX1))


def id_words(values: pl.Series) -> np.ndarray:
    """The 64-bit word of each integer id (as Int64, or as UInt64); `id_digest` is word * _GOLDEN.

    A caller that multiplies later, chunk by chunk, skips a whole-column pass and its array: for an
    Int64 or UInt64 column in one chunk without nulls the words are a view of the column's memory.
    """
    if values.dtype == pl.UInt64:
        return values.to_numpy()
    return values.cast(pl.Int64).to_numpy().view(np.uint64)


def keyed(digest: np.ndarray, key: int) -> np.ndarray:
    """Hash of (key, id). For integer ids this is exactly SplitMix64's output for seed `key`, position id."""
    return mix64(digest + np.uint64(key & _MASK64), inplace=True)


def unit_interval(h: np.ndarray) -> np.ndarray:
    """Top 53 bits of a hash as a float in [0, 1)."""
    return (h >> _S11).astype(np.float64) * (1.0 / (1 << 53))


def id_hash(ids: pl.Series, seed: int, salt: str = "") -> np.ndarray:
    """uint64 hash of each id under (seed, salt)."""
    return keyed(id_digest(ids), stream_key(seed, salt))


def id_uniform(ids: pl.Series, seed: int, salt: str = "") -> np.ndarray:
    """A uniform draw in [0, 1) per id."""
    return unit_interval(id_hash(ids, seed, salt))
