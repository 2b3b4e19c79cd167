"""The static backend's encoder: model2vec's vectors, with each distinct word piece tokenised once.

model2vec tokenises every text in full, and a chunked corpus repeats each word in about two chunks
(stride half the chunk) and each identifier hundreds of times, so about 70% of a chunk pass went to the
tokenizer. The BERT normaliser and pre-tokeniser of the distilled table always cut at ASCII whitespace
and at ASCII punctuation, and the WordPiece model works within one pre-token, so a text's token ids
are the concatenation of the ids of its pieces between those cuts. Tokenising each distinct piece once
and pooling exactly as `StaticModel._encode_batch` does (mean over the ids, bucketed by length, then
the same normalisation) gives bit-identical vectors for about a third of the CPU
(bench: `python -m bench.bench_leakage`; the equality is tested against model2vec itself).
"""

from __future__ import annotations

from itertools import chain

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from stages.text import Tokens, window_texts, window_tokens

# Pieces between cuts the BERT pre-tokeniser always makes: ASCII whitespace it splits on, and each
# ASCII punctuation character (33-47, 58-64, 91-96, 123-126), which is a pre-token of its own.
_PIECE = r"[^ \t\n\r!-/:-@\[-`{-~]+|[!-/:-@\[-`{-~]"


# Distinct pieces already tokenised, kept on the model, so a corpus's vocabulary reaches the tokenizer about
# once rather than once per batch (bounded: past the limit the memo starts over).
_SEEN_LIMIT = 2_000_000
# Bytes of token vectors gathered at once when pooling: about a core's share of the cache.
CACHE_BYTES = 1 << 21


def _ids_of_pieces(static, distinct: list[str]) -> list[list[int]]:
    seen = static.__dict__.setdefault("_corpusforge_piece_ids", {})
    ids_of = [seen.get(p) for p in distinct]
    missing = [p for p, ids in zip(distinct, ids_of) if ids is None]
    if not missing:
        return ids_of
    fresh = {p: e.ids for p, e in zip(missing, static.tokenizer.encode_batch_fast(missing, add_special_tokens=False))}
    if len(seen) + len(fresh) > _SEEN_LIMIT:
        seen.clear()
    seen.update(fresh)
    return [ids if ids is not None else fresh[p] for p, ids in zip(distinct, ids_of)]


def _piece_ids(static, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every text's token ids, flat, with each text's token count (unknown tokens dropped as model2vec does)."""
    pieces = pl.Series(pa.array(texts, pa.large_string())).str.extract_all(_PIECE)
    per_text = pieces.list.len().fill_null(0).to_numpy().astype(np.int64)
    which, distinct = _distinct(pieces.explode().drop_nulls().to_arrow())
    ids_of = _ids_of_pieces(static, distinct)
    lengths = np.fromiter(map(len, ids_of), np.int64, len(ids_of))
    flat = np.fromiter(chain.from_iterable(ids_of), np.int64, int(lengths.sum()))
    if static.unk_token_id is not None:
        known = flat != static.unk_token_id
        lengths = np.bincount(np.repeat(np.arange(len(lengths)), lengths)[known], minlength=len(lengths))
        flat = flat[known]
    ids, taken = _segments(flat, lengths, which)
    owner = np.repeat(np.arange(len(texts)), per_text)
    counts = np.bincount(owner, weights=taken, minlength=len(texts)).astype(np.int64)
    return ids, counts


def _distinct(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """(index of each value in the distinct values, the distinct values in first-seen order)."""
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return encoded.indices.to_numpy().astype(np.int64), encoded.dictionary.to_pylist()


def _segments(flat: np.ndarray, lengths: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segments `which` of `flat` (cut into consecutive segments of `lengths`) one after another, and their lengths."""
    starts = np.concatenate([[0], np.cumsum(lengths)])
    taken = lengths[which]
    into = np.concatenate([[0], np.cumsum(taken)])[:-1]
    return flat[np.repeat(starts[which] - into, taken) + np.arange(int(taken.sum()))], taken


def encode_static(static, texts: list[str], normalize: bool) -> np.ndarray:
    """`static.encode(texts, max_length=None, normalize=normalize)`, bit for bit, tokenising distinct pieces once.

    Only for the untruncated case: with a `max_length`, model2vec cuts texts before tokenising.
    """
    if static.token_mapping is not None or static.weights is not None:
        return np.asarray(static.encode(texts, max_length=None, normalize=normalize, use_multiprocessing=False),
                          dtype=np.float32)
    if not texts:
        return np.zeros((0, static.dim), np.float32)
    return _pool(static, *_piece_ids(static, texts), normalize)


def encode_static_windows(static, words: pl.Series | Tokens, starts: np.ndarray, lengths: np.ndarray,
                          normalize: bool) -> np.ndarray:
    """`encode_static` of the texts `" ".join(words[s : s + n])` for each window (s, n), bit for bit, without
    making them.

    A space is always a cut, so such a text's token ids are its words' ids one after the other: each distinct
    word is tokenised once and the windows' id sequences are gathered from the words'. Overlapping chunks
    (stride half the chunk) repeat every word about twice, so this halves the splitting work and skips
    joining the chunk strings; the pooling is `encode_static`'s own. Given the `Tokens` themselves, only the
    distinct words' strings are made (`Tokens.distinct_words`).
    """
    n = starts.size
    if static.token_mapping is not None or static.weights is not None:
        flat = words.words if isinstance(words, Tokens) else words
        return encode_static(static, window_texts(flat, starts, lengths), normalize)
    if n == 0:
        return np.zeros((0, static.dim), np.float32)
    if isinstance(words, Tokens):
        word_of_token, distinct_words = words.distinct_words()
        distinct = distinct_words.to_list()
    else:
        word_of_token, distinct = _distinct(words.to_arrow())
    word_ids, word_counts = _piece_ids(static, distinct)
    window, token = window_tokens(starts, lengths)
    ids, taken = _segments(word_ids, word_counts, word_of_token[token])
    counts = np.bincount(window, weights=taken, minlength=n).astype(np.int64)
    return _pool(static, ids, counts, normalize)


def _pool(static, ids: np.ndarray, counts: np.ndarray, normalize: bool) -> np.ndarray:
    """Mean of each text's token vectors (`counts` ids each, flat in `ids`), as `StaticModel._encode_batch`."""
    embedding = static.embedding
    dtype = np.dtype(np.float32) if embedding.dtype == np.int8 else embedding.dtype
    out = np.zeros((counts.size, static.dim), dtype=dtype)
    offsets = np.concatenate([[0], np.cumsum(counts)])[:-1]
    # One buffer for every gather: a fresh (texts, length, dim) array per group is fresh pages each time, and
    # the page faults cost about as much as the gather (the values, and so the means, are the same).
    buffer = np.empty(0, embedding.dtype)
    row_bytes = embedding.shape[1] * embedding.itemsize
    for length in np.unique(counts[counts > 0]):
        # Texts of one length gathered together, a block small enough to stay in cache (the mean then reads
        # it from there, not from memory); each text's mean is the same whatever the block.
        per_block = int(min(1024, max(8, CACHE_BYTES // (int(length) * row_bytes))))
        for rows in np.array_split(same := np.flatnonzero(counts == length), -(-same.size // per_block)):
            id_matrix = ids[offsets[rows][:, None] + np.arange(length)[None, :]]
            size = id_matrix.size * embedding.shape[1]
            if buffer.size < size:
                buffer = np.empty(size, embedding.dtype)
            gathered = buffer[:size].reshape(rows.size, length, embedding.shape[1])
            np.take(embedding, id_matrix, axis=0, out=gathered, mode="clip")  # ids come from the tokenizer
            out[rows] = gathered.mean(axis=1)
    if normalize:
        out32 = out.astype(np.float32)
        norm = np.linalg.norm(out32, axis=1, keepdims=True) + 1e-32
        out = (out32 / norm).astype(out.dtype)
    return np.asarray(out, dtype=np.float32)
