"""Lexical candidates: BM25 of each test variant against a training batch's chunks, over the text core's tokens.

The static table ranks a chunk by its mean word vector, so a short question buried in a long test item
(a reading passage, then the question) rarely brings back the chunk where the question was planted,
and a rephrasing that keeps the rare words (names, numbers, terms) may still sit below same-topic
chunks. BM25 (Robertson and Zaragoza, "The Probabilistic Relevance Framework", 2009) ranks by those
rare shared words instead, so the two generators miss different leaks; the re-scoring judges both.

Words are the text core's token hashes (the same normalised words every evidence kind reads), folded
into 2^20 buckets. Document frequencies and the mean chunk length come from one sample of the training
corpus, taken once (`bm25_weights`; the audit's `train_sample`): every batch, partition and executor then
scores a chunk the same, so the candidates merge across partitions. (They came from each batch's own chunks
before, which tied the candidates to the batch boundaries and ran the kind as one partition.) Chunks have a
fixed length but for a document's last one, so BM25's length normalisation barely matters; it is kept for
short documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from stages.text import Tokens

if TYPE_CHECKING:
    from scipy import sparse

BUCKETS = 1 << 20
K1, B = 1.2, 0.75  # BM25's usual constants
BLOCK = 8192  # chunks scored at once (the dense block of scores is variants x BLOCK)


def bag_of_words(hashes: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> sparse.csr_matrix:
    """(rows, BUCKETS) term counts of the token runs hashes[starts[i] : starts[i] + lengths[i]]."""
    from scipy import sparse  # imported on use: scipy costs every CLI start 0.1 s

    rows = starts.size
    if rows == 0:
        return sparse.csr_matrix((0, BUCKETS), dtype=np.float32)
    row_of_token = np.repeat(np.arange(rows), lengths)
    index = starts[row_of_token] + (np.arange(row_of_token.size) - (np.cumsum(lengths) - lengths)[row_of_token])
    buckets = (hashes[index] % np.uint64(BUCKETS)).astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    bag = sparse.csr_matrix((np.ones(buckets.size, np.float32), buckets, indptr), shape=(rows, BUCKETS))
    bag.sum_duplicates()
    return bag


def query_terms(tokens: Tokens) -> sparse.csr_matrix:
    """(variants, BUCKETS) presence of each variant's words (BM25 counts a query word once)."""
    bag = bag_of_words(tokens.hashes, tokens.offsets[:-1].astype(np.int64), tokens.counts.astype(np.int64))
    bag.data[:] = 1.0
    return bag


@dataclass
class BM25Weights:
    """Each query word's IDF (the values of `queries`, a (variants, BUCKETS) matrix) and the mean chunk length,
    from one sample of the corpus: the same for every batch."""

    queries: sparse.csr_matrix
    avgdl: float


def bm25_weights(queries: sparse.csr_matrix, hashes: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> BM25Weights:
    """`queries` (`query_terms`) weighted by the IDF of their words among the sample chunks `hashes[starts[i] :
    starts[i] + lengths[i]]`, and those chunks' mean length."""
    n = starts.size
    df = np.bincount(bag_of_words(hashes, starts, lengths).indices, minlength=BUCKETS)
    weighted = queries.copy()
    weighted.data = np.log1p((n - df[weighted.indices] + 0.5) / (df[weighted.indices] + 0.5)).astype(np.float32)
    return BM25Weights(weighted, max(float(lengths.mean()), 1.0) if n else 1.0)


def bm25_top(weights: BM25Weights, hashes: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
             k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, chunk index) of the k best chunks per query by BM25 under `weights`, best first."""
    n = starts.size
    kk = min(k, n)
    queries = weights.queries
    if n == 0 or queries.shape[0] == 0:
        return np.zeros((queries.shape[0], 0), np.float32), np.zeros((queries.shape[0], 0), np.int64)
    bag = bag_of_words(hashes, starts, lengths)
    tf = bag.data
    norm = K1 * (1 - B + B * lengths / weights.avgdl)
    bag.data = (tf * (K1 + 1) / (tf + np.repeat(norm, np.diff(bag.indptr)))).astype(np.float32)
    best_s = np.full((queries.shape[0], 0), -np.inf, np.float32)
    best_i = np.zeros((queries.shape[0], 0), np.int64)
    for lo in range(0, n, BLOCK):
        scores = (queries @ bag[lo : lo + BLOCK].T).toarray()
        top = np.argpartition(-scores, min(kk, scores.shape[1]) - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(scores, top, 1)], 1)
        best_i = np.concatenate([best_i, top + lo], 1)
        order = np.lexsort((best_i, -best_s), axis=1)[:, :kk]
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    return best_s, best_i
