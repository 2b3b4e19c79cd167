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
    transformer_dim,
)
from stages.embedding.static_encode import encode_static, encode_static_windows
from stages.text import Tokens


def _encode_uncached(texts: list[str], backend: str, model: str | Path | None, batch_size: int,
                     max_seq_length: int | None, normalize: bool, lengths: np.ndarray | None = None) -> np.ndarray:
    if backend == "static":
        static = load_static_model(model)
        if max_seq_length is None:
            return encode_static(static, texts, normalize)
        vectors = static.encode(texts, max_length=max_seq_length, normalize=normalize,
                                batch_size=max(batch_size, 1024), use_multiprocessing=False)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), static.dim)
    return encode_unpadded(_transformer(model, max_seq_length), texts, batch_size, normalize, lengths)


def _transformer(model: str | Path | None, max_seq_length: int | None):
    st = load_sentence_transformer(model)
    st.max_seq_length = max_seq_length or st._corpusforge_default_max_seq_length
    return st


# Names how transformer vectors are computed, in the cache's namespace: vectors from another scheme are not mixed in.
BATCHING_SCHEME = "equal-token-length-batches, short ones filled to 16 rows"
# A batch of few rows of short texts (rows x tokens small) takes another path through the matrix products, whose
# sums differ in the last bits (up to 3e-7 for MiniLM on 2 cores, texts under 12 tokens in batches under 16 rows;
# measured); a batch of texts shorter than SHORT_TOKENS is filled to MIN_BATCH_ROWS rows with copies of its first.
SHORT_TOKENS = 16
MIN_BATCH_ROWS = 16


def encode_unpadded(st, texts: list[str], batch_size: int, normalize: bool,
                    lengths: np.ndarray | None = None) -> np.ndarray:
    """`st.encode(texts)`, each text's vector the same bits whatever shares its call.

    sentence-transformers pads a batch to its longest text, and a transformer's float sums over the padded
    length come out a few ulps apart for different lengths (up to 1e-7 for MiniLM), so a text's vector
    depended on its batch-mates: a warm and a cold embedding cache, or two partitionings, gave different
    bits. Here texts are batched only with texts of the same token count, so nothing is padded, and a batch
    of short texts is filled to MIN_BATCH_ROWS rows (see SHORT_TOKENS): with the length fixed, the batch's
    size, order and mates do not change a row's bits (tested at every length up to 137 tokens). It is also
    faster (no padded tokens computed): through `encode_texts` on 2 cores, 600 64-word chunks 17.4 s against
    28.1 s and 300 short texts 2.5 s against 3.5 s (medians of 3). `lengths`: the texts' token counts when
    the caller has them (`_token_counts`).
    """
    dim = transformer_dim(st)
    if not texts:
        return np.zeros((0, dim), np.float32)
    lengths = _token_counts(st, texts) if lengths is None else lengths
    out = np.empty((len(texts), dim), np.float32)
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        if length >= SHORT_TOKENS:
            out[rows] = st.encode([texts[i] for i in rows], batch_size=batch_size, normalize_embeddings=normalize,
                                  convert_to_numpy=True, show_progress_bar=False)
            continue
        size = max(batch_size, MIN_BATCH_ROWS)
        for lo in range(0, rows.size, size):
            chunk = [texts[i] for i in rows[lo:lo + size]]
            filled = chunk + [chunk[0]] * (MIN_BATCH_ROWS - len(chunk))
            out[rows[lo:lo + size]] = st.encode(filled, batch_size=len(filled), normalize_embeddings=normalize,
                                                convert_to_numpy=True, show_progress_bar=False)[:len(chunk)]
    return out


def _token_counts(st, texts: list[str], block: int = 4096) -> np.ndarray:
    """Each text's token count as the model's own tokenising gives it (truncated at `st.max_seq_length`), a block
    of texts at a time (the tokenizer pads a block to its longest)."""
    tokenize = st.preprocess if hasattr(st, "preprocess") else st.tokenize
    counts = [tokenize(texts[lo:lo + block])["attention_mask"].sum(dim=1).cpu().numpy()
              for lo in range(0, len(texts), block)]
    return np.concatenate(counts).astype(np.int64) if counts else np.zeros(0, np.int64)


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
             STATIC_FORMAT_VERSION if backend == "static" else BATCHING_SCHEME]
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
        if backend != "static":
            # In order of token count, a group of texts holds few counts, so `encode_unpadded`'s batches are full.
            lengths = _token_counts(_transformer(model, max_seq_length), [unique[i] for i in missing])
            order = np.argsort(lengths, kind="stable")
            missing, lengths = missing[order], lengths[order]
        # Model batches in groups, so a slow model reports progress every few seconds.
        group = batch_size * (64 if backend == "static" else 4)
        computed = np.empty((len(missing), dim), np.float32)
        for lo in range(0, len(missing), group):
            part = missing[lo:lo + group]
            computed[lo:lo + len(part)] = _encode_uncached(
                [unique[i] for i in part], backend, model, batch_size, max_seq_length, normalize,
                None if backend == "static" else lengths[lo:lo + len(part)])  # counted once, above
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


def encode_static_word_windows(words: pl.Series | Tokens, starts: np.ndarray, lengths: np.ndarray,
                               model: str | None = None, normalize: bool = True) -> np.ndarray:
    """The static backend's vectors of the texts `" ".join(words[s : s + n])`, one per window (s, n) of a flat
    word column (or of tokenised text's words, `Tokens`), bit for bit what `encode_texts` (uncached) gives for
    those texts, without making them: for overlapping chunks of tokenised text (the leakage audit's), each
    distinct word is split once."""
    return encode_static_windows(load_static_model(model), words, starts, lengths, normalize)
