"""Encoding texts through the cache (only unseen texts reach the model) and vector <-> column helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import xxhash

from stages._args import int_arg, text_list
from stages._vectors import vector_matrix
from stages.embedding.cache import _cache_for, _cached_dim, text_keys
from stages.embedding.models import (
    STATIC_FORMAT_VERSION,
    _check_backend,
    embedding_dim,
    load_sentence_transformer,
    load_static_model,
    model_identity,
    resolve_model_path,
)
from stages.embedding.static_encode import encode_static, encode_static_windows


def _encode_uncached(texts: list[str], backend: str, model: str | Path | None, batch_size: int,
                     max_seq_length: int | None, normalize: bool) -> np.ndarray:
    if backend == "static":
        static = load_static_model(model)
        if max_seq_length is None:
            return encode_static(static, texts, normalize)
        vectors = static.encode(texts, max_length=max_seq_length, normalize=normalize,
                                batch_size=max(batch_size, 1024), use_multiprocessing=False)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), static.dim)
    st = load_sentence_transformer(model)
    st.max_seq_length = max_seq_length or st._corpusforge_default_max_seq_length
    vectors = st.encode(texts, batch_size=batch_size, normalize_embeddings=normalize,
                        convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def encode_with_stats(
    texts: list[str],
    backend: str = "sentence-transformers",
    model: str | None = None,
    batch_size: int = 64,
    max_seq_length: int | None = None,
    normalize: bool = True,
    cache_dir: str | Path | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, dict]:
    """`encode_texts`, plus how many texts were unique, found in the cache, and computed.

    `on_progress(n)` is called after every group of model batches with the texts just embedded.
    """
    _check_backend(backend)
    batch_size = int_arg(batch_size, "batch_size", 1)
    if max_seq_length is not None:
        max_seq_length = int_arg(max_seq_length, "max_seq_length", 1)
    texts = text_list(texts, "texts")
    namespace = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir).expanduser()  # "~/.cache/...": pyarrow expands it, Path.mkdir would not
        namespace = xxhash.xxh3_128_hexdigest(json.dumps(
            [backend, model_identity(resolve_model_path(model)), max_seq_length, bool(normalize),
             STATIC_FORMAT_VERSION if backend == "static" else None]
        ).encode())
    # A fully cached corpus should not pay for loading the model just to learn the vector width.
    dim = known_dim = _cached_dim(Path(cache_dir), namespace) if namespace else None
    if dim is None:
        dim = embedding_dim(backend, model)
    stats = {"texts": len(texts), "unique": 0, "cache_hits": 0, "computed": 0}
    if not texts:
        return np.empty((0, dim), np.float32), stats
    # Identical texts (frequent in synthetic data) are embedded once.
    unique_index = {}
    inverse = np.fromiter((unique_index.setdefault(t, len(unique_index)) for t in texts), np.int64, len(texts))
    unique = list(unique_index)
    stats["unique"] = len(unique)
    vectors = np.empty((len(unique), dim), np.float32)
    todo = np.ones(len(unique), dtype=bool)
    cache = None
    if namespace is not None:
        cache = _cache_for(Path(cache_dir), namespace, dim)
        if known_dim is None:
            cache.write_meta()
        key_hi, key_lo = text_keys(unique, namespace)
        found, hit_vectors = cache.lookup(key_hi, key_lo)
        vectors[found] = hit_vectors
        todo = ~found
        stats["cache_hits"] = int(found.sum())
    if todo.any():
        missing = np.flatnonzero(todo)
        # Model batches in groups, so a slow model reports progress every few seconds.
        group = batch_size * (64 if backend == "static" else 4)
        computed = np.empty((len(missing), dim), np.float32)
        for lo in range(0, len(missing), group):
            part = missing[lo:lo + group]
            computed[lo:lo + len(part)] = _encode_uncached([unique[i] for i in part], backend, model, batch_size,
                                                           max_seq_length, normalize)
            if on_progress is not None:
                on_progress(len(part))
        vectors[missing] = computed
        stats["computed"] = len(missing)
        if cache is not None:
            cache.store(key_hi[missing], key_lo[missing], computed)
    return vectors[inverse], stats


def encode_texts(
    texts: list[str],
    backend: str = "sentence-transformers",
    model: str | None = None,
    batch_size: int = 64,
    max_seq_length: int | None = None,
    normalize: bool = True,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """Embed texts as a float32 (n, dim) array; `cache_dir` set = only unseen texts reach the model.

    `model` None is the packaged all-MiniLM-L6-v2; `backend="static"` is its distilled static table.
    With `normalize`, rows are unit length, except that the static table gives an all-zero row to a text
    with no token it knows ("", whitespace, an emoji, a token over 100 characters), as model2vec does.
    """
    return encode_with_stats(texts, backend, model, batch_size, max_seq_length, normalize, cache_dir)[0]


def vectors_to_series(name: str, vectors: np.ndarray) -> pl.Series:
    """A fixed-size float32 list column (Arrow FixedSizeList), without a per-row Python step."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    flat = pa.array(vectors.reshape(-1))
    return pl.Series(name, pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]))


def series_to_vectors(series: pl.Series, param: str | None = None, file: str | None = None) -> np.ndarray:
    """The (n, dim) float32 matrix behind an embedding column (Array or List of floats), all values finite."""
    return vector_matrix(series, param, dtype=np.float32, scalars=False,
                         what="an embedding (a fixed-size list of floats)", finite=True, file=file)



def encode_static_word_windows(words: pl.Series, starts: np.ndarray, lengths: np.ndarray, model: str | None = None,
                               normalize: bool = True) -> np.ndarray:
    """The static backend's vectors of the texts `" ".join(words[s : s + n])`, one per window (s, n) of a flat
    word column, bit for bit what `encode_texts` (uncached) gives for those texts, without making them: for
    overlapping chunks of tokenised text (the leakage audit's), each distinct word is split once."""
    return encode_static_windows(load_static_model(model), words, starts, lengths, normalize)
