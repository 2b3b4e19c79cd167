"""Stable per-row randomness: a seeded hash of each row's id.

Sampling and splitting key on ids rather than row positions, so a row's fate does not depend on
batch boundaries, file order or the executor, and the same seed gives the same rows everywhere.
(polars' own hash is documented as unstable across versions, hence xxhash.)
"""

from __future__ import annotations

import numpy as np
import polars as pl
import xxhash


def id_hash(ids: pl.Series, seed: int, salt: str = "") -> np.ndarray:
    """uint64 hash of each id under (seed, salt)."""
    h = xxhash.xxh3_64_intdigest
    key = seed & 0xFFFFFFFFFFFFFFFF
    prefix = salt.encode()
    return np.fromiter((h(prefix + s.encode(), key) for s in ids.cast(pl.String).to_list()), dtype=np.uint64,
                       count=len(ids))


def id_uniform(ids: pl.Series, seed: int, salt: str = "") -> np.ndarray:
    """A uniform draw in [0, 1) per id, from the top 53 bits of its hash."""
    return (id_hash(ids, seed, salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
