"""The metric arithmetic of corpus_metrics: n-gram keys, self-BLEU, Vendi score, pairwise distance.

Pure NumPy over token ids and embeddings; nothing here reads a table.
"""

from __future__ import annotations

import numpy as np

from stages._hashing import mix64
from stages._vectors import unit_rows
from stages.text import ngram_hashes


def ngram_keys(ids: np.ndarray, doc: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash of every n-gram of token ids that lies within one document, and the document it is in.

    `doc` is each token's document, contiguous and ascending (as `token_table` gives); the hash is
    the text core's n-gram hash over SplitMix64-mixed ids.
    """
    if len(ids) < n:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    counts = np.bincount(doc, minlength=int(doc.max()) + 1) if len(doc) else np.zeros(0, np.int64)
    key, ngram_doc, _ = ngram_hashes(mix64(ids.astype(np.uint64)), counts, n)
    return key, ngram_doc


def self_bleu(ids: np.ndarray, doc: np.ndarray, max_n: int = 4) -> float:
    """Mean sentence BLEU-`max_n` of each document against all the others as references.

    Clipping needs, per n-gram and hypothesis, the largest count in any *other* document; keeping
    the top two counts per n-gram gives that for every hypothesis at once, so this is linear in the
    number of n-grams instead of quadratic in documents. Zero precisions get nltk's method-1
    epsilon (0.1); documents shorter than `max_n` tokens are left out, as BLEU is undefined there.
    """
    docs, doc = np.unique(doc, return_inverse=True)
    m = len(docs)
    if m < 2:
        return float("nan")
    lengths = np.bincount(doc, minlength=m)
    log_p = np.zeros(m)
    for n in range(1, max_n + 1):
        key, d = ngram_keys(ids, doc, n)
        order = np.lexsort((d, key))
        key, d = key[order], d[order]
        new = np.ones(len(key), bool)
        new[1:] = (key[1:] != key[:-1]) | (d[1:] != d[:-1])
        first = np.nonzero(new)[0]
        count = np.diff(np.append(first, len(key))).astype(np.float64)
        pk, pd = key[first], d[first]
        # Top two counts per n-gram (and the document holding the top one).
        by = np.lexsort((-count, pk))
        pk, pd, count = pk[by], pd[by], count[by]
        grp_first = np.ones(len(pk), bool)
        grp_first[1:] = pk[1:] != pk[:-1]
        gstart = np.nonzero(grp_first)[0]
        gid = np.cumsum(grp_first) - 1
        top1, top1_doc = count[gstart], pd[gstart]
        second_pos = gstart + 1
        has_second = np.append(gstart[1:], len(pk)) > second_pos
        top2 = np.where(has_second, count[np.minimum(second_pos, len(pk) - 1)], 0.0)
        ref_max = np.where(pd == top1_doc[gid], top2[gid], top1[gid])
        clipped = np.bincount(pd, weights=np.minimum(count, ref_max), minlength=m)
        total = np.maximum(lengths - n + 1, 0).astype(np.float64)
        p = np.where(clipped > 0, clipped, 0.1) / np.maximum(total, 1)
        log_p += np.log(p) / max_n
    # Brevity penalty against the closest other length (ties go to the shorter one, as nltk).
    diff = np.abs(lengths[None, :] - lengths[:, None]).astype(np.float64)
    np.fill_diagonal(diff, np.inf)
    closest = lengths[np.argmin(diff * (1 + 1e-9 * lengths[None, :]), axis=1)]
    bp = np.where(lengths > closest, 1.0, np.exp(1 - closest / np.maximum(lengths, 1)))
    valid = lengths >= max_n
    return float(np.mean((bp * np.exp(log_p))[valid])) if valid.any() else float("nan")


def cosine_rows(embeddings: np.ndarray) -> np.ndarray:
    """Rows whose inner products are the cosines the diversity measures use: unit rows, and the all-zero rows
    (the static backend's vector for a text with no token it knows: "", an emoji) as one shared item.

    A zero row has no direction, so it gets its own extra dimension: the zero rows are identical to each
    other and orthogonal to every other row (a generation collapsing into empty outputs reads as one item,
    as copies of one text do), and each row's self-similarity is 1, as both measures assume.
    """
    x = unit_rows(embeddings)
    zero = ~x.any(axis=1)
    return np.hstack([x, zero[:, None].astype(x.dtype)]) if zero.any() else x


def vendi_score(embeddings: np.ndarray) -> float:
    """Vendi score (Friedman & Dieng 2023) with cosine similarity: the effective number of distinct items.

    The eigenvalues of K/n equal those of X^T X / n, a dim x dim matrix, so the cost is linear in n.
    """
    x = cosine_rows(embeddings)
    eig = np.linalg.eigvalsh((x.T @ x).astype(np.float64) / len(x))
    eig = eig[eig > 1e-12]
    return float(np.exp(-(eig * np.log(eig)).sum()))


def mean_pairwise_cosine_distance(embeddings: np.ndarray) -> float:
    """1 - mean cosine similarity over distinct pairs, from the sum vector (linear in n)."""
    n = len(embeddings)
    if n < 2:
        return float("nan")
    x = cosine_rows(embeddings)
    s = x.sum(axis=0, dtype=np.float64)
    # Clipped to the distance's range [0, 2]: float32 unit rows gave copies of one text -1e-7, not 0.
    return float(np.clip(1 - (s @ s - n) / (n * (n - 1)), 0.0, 2.0))
