"""The content-addressed embedding cache: vectors keyed by model settings + text, in Parquet shards."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from pipeline.io import read_parquet_checked

_lock = threading.Lock()


class EmbeddingCache:
    """Vectors keyed by xxh3-128 of (model settings, text), as Parquet shards under one directory.

    Shards are immutable and written atomically, so concurrent writers (Ray tasks, two runs) never
    corrupt each other; a key written twice is harmless. Keys of all shards are held in memory
    (16 bytes a vector) so a lookup is one vectorised join, and vectors are read only from shards
    that hold a hit.
    """

    def __init__(self, root: Path, dim: int):
        self.root = Path(root)
        self.dim = dim
        self._shards: list[str] = []
        self._keys: pl.DataFrame | None = None  # key_hi, key_lo, shard (index into _shards), row

    def _refresh(self) -> None:
        if not self.root.is_dir():
            return
        known = set(self._shards)
        new = []
        for f in sorted(self.root.glob("shard-*.parquet")):
            if f.name not in known:
                table = read_parquet_checked(f, columns=["key_hi", "key_lo"])
                if table is None:  # truncated or overwritten: drop it; its texts are embedded again
                    f.unlink(missing_ok=True)
                    continue
                keys = pl.from_arrow(table)
                new.append(keys.with_columns(
                    pl.lit(len(self._shards), pl.UInt32).alias("shard"),
                    pl.int_range(keys.height, dtype=pl.UInt32).alias("row"),
                ))
                self._shards.append(f.name)
        if new:
            self._keys = pl.concat(([self._keys] if self._keys is not None else []) + new, rechunk=True)

    def lookup(self, key_hi: np.ndarray, key_lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, vectors of the found keys in query order)."""
        self._refresh()
        found = np.zeros(len(key_hi), dtype=bool)
        if self._keys is None or len(key_hi) == 0:
            return found, np.empty((0, self.dim), np.float32)
        query = pl.DataFrame({"key_hi": key_hi, "key_lo": key_lo, "pos": np.arange(len(key_hi))})
        hits = self._keys.join(query, on=["key_hi", "key_lo"], how="inner").unique(subset="pos", keep="first")
        vectors = np.empty((len(key_hi), self.dim), np.float32)
        for (shard,), part in hits.group_by("shard"):
            flat = self._shard_vectors(self._shards[shard])
            if flat is None:
                # Damaged since its keys were read: its hits become misses, to be embedded again.
                (self.root / self._shards[shard]).unlink(missing_ok=True)
                self._keys = self._keys.filter(pl.col("shard") != shard)
                self._shards[shard] = ""  # a shard stored again under this name is read afresh
                continue
            pos = part["pos"].to_numpy()
            vectors[pos] = flat[part["row"].to_numpy()]
            found[pos] = True
        return found, vectors[found]

    def _shard_vectors(self, name: str) -> np.ndarray | None:
        """A shard's vectors as (rows, dim), or None when the file is damaged."""
        table = read_parquet_checked(self.root / name, columns=["vector"])
        try:
            flat = table.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False)
            return flat.reshape(table.num_rows, self.dim)
        except (AttributeError, ValueError, pa.ArrowException):
            return None

    def write_meta(self) -> None:
        """Record the vector width, so later runs need not load the model to learn it."""
        meta = self.root / "meta.json"
        if not meta.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp_meta = self.root / f".meta.{os.getpid()}.tmp"
            tmp_meta.write_text(json.dumps({"dim": self.dim}))
            os.replace(tmp_meta, meta)

    def store(self, key_hi: np.ndarray, key_lo: np.ndarray, vectors: np.ndarray) -> None:
        if len(key_hi) == 0:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1))
        table = pa.table({
            "key_hi": pa.array(key_hi, pa.uint64()),
            "key_lo": pa.array(key_lo, pa.uint64()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, self.dim),
        })
        self.write_meta()
        name = f"shard-{xxhash.xxh3_64_hexdigest(key_hi.tobytes() + key_lo.tobytes())}.parquet"
        tmp = self.root / f".{name}.{os.getpid()}.tmp"
        pq.write_table(table, tmp, compression="none")
        os.replace(tmp, self.root / name)


_caches: dict[str, EmbeddingCache] = {}


def _cache_for(cache_dir: Path, namespace: str, dim: int) -> EmbeddingCache:
    root = Path(cache_dir) / "embeddings" / namespace
    with _lock:
        cache = _caches.get(str(root))
        if cache is None:
            cache = _caches[str(root)] = EmbeddingCache(root, dim)
    return cache


def _cached_dim(cache_dir: Path, namespace: str) -> int | None:
    meta = cache_dir / "embeddings" / namespace / "meta.json"
    try:
        return int(json.loads(meta.read_text())["dim"])
    except (OSError, ValueError, KeyError):
        return None


def text_keys(texts: list[str], namespace: str) -> tuple[np.ndarray, np.ndarray]:
    """xxh3-128 of namespace + text, split into two uint64 columns for a vectorised join."""
    seed = xxhash.xxh3_64_intdigest(namespace.encode())
    digests = [xxhash.xxh3_128_intdigest(t.encode(), seed) for t in texts]
    hi = np.fromiter((d >> 64 for d in digests), np.uint64, len(digests))
    lo = np.fromiter((d & 0xFFFFFFFFFFFFFFFF for d in digests), np.uint64, len(digests))
    return hi, lo

