"""Exact n-gram evidence (GPT-3): rare word n-grams of a test item found in the training corpus."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from pipeline.arrays import unique_sorted
from stages.leakage.evidence import (
    SPAN_COLUMNS,
    Evidence,
    Resolved,
    Score,
    TestSide,
    TrainBatch,
    register_evidence,
)
from stages.text import locate_windows, ngram_hashes, window_hashes

_PRESENCE_BITS = 22
_PROBE_BLOCK = 1 << 16


@register_evidence
class NgramEvidence(Evidence):
    """Streaming n-gram pass: hold the test n-gram hashes, probe every training batch against them.

    Hits are kept as (test n-gram, training row, position) so the spans can be aligned afterwards
    without tokenising any training text twice; hits of n-grams that turn out to be common (in more
    than `max_doc_freq` documents) are dropped as they are found, so memory follows the test set.
    Document frequencies are kept sparse, per batch (`freq`: the test n-grams the batch holds, and in how
    many of its documents), so a partition's state grows with its hits, never with the test set: a
    dense count per test n-gram was 3.7 MB in every partial state at 10,000 items (docs/scaling.md).
    """

    kind = "ngram"
    builtin_switch = "ngram"
    order = 0
    columns = {"ngram_overlap": pl.Float64, "matched_ngrams": pl.Int64, "total_ngrams": pl.Int64,
               "longest_span_tokens": pl.Int64}
    scores = (
        Score("ngram_overlap", "n-gram overlap (fraction of item n-grams)", "n-gram overlap"),
        Score("longest_span_tokens", "longest matched span (words)", "longest span (words)", histogram=False),
    )
    sort_column = "longest_span_tokens"
    partial_attributes = ("freq", "hits", "stored")

    def __init__(self, audit: Any, test: TestSide, shared: dict[str, Any]):
        super().__init__(audit, test, shared)
        self.n = audit.n
        self.max_doc_freq = audit.max_doc_freq
        hashes, item, pos = ngram_hashes(test.tokens.hashes, test.tokens.counts, self.n)
        self.unique, inverse = np.unique(hashes, return_inverse=True)
        self.test_table = pl.DataFrame({"u": inverse.astype(np.int64), "item": item, "test_pos": pos})
        self.freq: list[tuple[np.ndarray, np.ndarray]] = []  # (test n-gram indices, sorted; documents holding each)
        # A 4 MB presence table on the low hash bits rejects almost every training n-gram with one
        # cache-friendly lookup; only the few survivors pay for the binary search.
        self.mask = np.uint64((1 << _PRESENCE_BITS) - 1)
        self.presence = np.zeros(1 << _PRESENCE_BITS, bool)
        self.presence[(self.unique & self.mask).astype(np.int64)] = True
        self.hits: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.stored = 0

    @classmethod
    def settings(cls, audit: Any, stats: dict[str, Any]) -> list[tuple[str, Any]]:
        return [("n", audit.n), ("max_doc_freq", audit.max_doc_freq), ("ngram_contaminated", audit.ngram_contaminated)]

    def add_batch(self, batch: TrainBatch) -> None:
        if self.unique.size == 0:
            return
        tok = batch.tokens
        # Probe first, locate only the hits: every window is hashed, few survive the presence table
        # and the binary search, and only those are mapped to (document, position). Hashed and probed in
        # blocks of windows, so no batch-sized array of window hashes or of their low bits is made.
        found, found_hashes = [np.zeros(0, np.int64)], [np.zeros(0, np.uint64)]
        for lo in range(0, max(tok.hashes.size - self.n + 1, 0), _PROBE_BLOCK):
            hashes = window_hashes(tok.hashes[lo : lo + _PROBE_BLOCK + self.n - 1], self.n)
            maybe = np.flatnonzero(self.presence[(hashes & self.mask).view(np.int64)])
            found.append(maybe + lo)
            found_hashes.append(hashes[maybe])
        maybe, candidates = np.concatenate(found), np.concatenate(found_hashes)
        index = np.searchsorted(self.unique, candidates)
        index[index == self.unique.size] = 0
        hit = self.unique[index] == candidates
        if not hit.any():
            return
        doc, pos, whole = locate_windows(maybe[hit], tok.counts, self.n)
        u, d, p = index[hit][whole], doc[whole], pos[whole]
        if u.size == 0:
            return
        # Document frequency counts documents: each (n-gram, document) pair once.
        pairs = unique_sorted(u.astype(np.int64) * (tok.counts.size + 1) + d)
        self.freq.append(np.unique(pairs // (tok.counts.size + 1), return_counts=True))
        self.hits.append((u.astype(np.int64), d + batch.base, p))
        self.stored += u.size
        if self.stored > 4 * (self.max_doc_freq + 1) * max(self.unique.size, 1024):
            self._compact()

    def merge(self, other: Evidence) -> None:
        assert isinstance(other, NgramEvidence)
        self.freq.extend(other.freq)
        self.hits.extend(other.hits)
        self.stored += other.stored
        self._compact()

    def doc_freq(self) -> tuple[np.ndarray, np.ndarray]:
        """(test n-gram indices, sorted; in how many training documents each occurs), the batches' counts summed."""
        if len(self.freq) != 1:
            keys = np.concatenate([k for k, _ in self.freq]) if self.freq else np.empty(0, np.int64)
            counts = np.concatenate([c for _, c in self.freq]) if self.freq else np.empty(0, np.int64)
            unique, inverse = np.unique(keys, return_inverse=True)
            self.freq = [(unique, np.bincount(inverse, weights=counts, minlength=unique.size).astype(np.int64))]
        return self.freq[0]

    def _compact(self) -> None:
        if not self.hits:
            return
        u, d, p = (np.concatenate(parts) for parts in zip(*self.hits))
        keys, counts = self.doc_freq()
        keep = ~np.isin(u, keys[counts > self.max_doc_freq])
        self.hits = [(u[keep], d[keep], p[keep])]
        self.stored = int(keep.sum())

    def stats(self) -> dict[str, Any]:
        return {"common_ngrams_ignored": int((self.doc_freq()[1] > self.max_doc_freq).sum())}

    def candidate_docs(self) -> np.ndarray:
        self._compact()
        return unique_sorted(self.hits[0][1]) if self.hits else np.empty(0, np.int64)

    @classmethod
    def thresholds(cls, audit: Any, findings: pl.DataFrame) -> dict[str, list[float]]:
        return {"ngram_overlap": [audit.ngram_contaminated]}

    def verdict(self) -> tuple[pl.Expr, pl.Expr]:
        overlap = pl.col("ngram_overlap").fill_null(0.0)
        return overlap >= self.audit.ngram_contaminated, pl.col("matched_ngrams") > 0

    def resolve(self) -> Resolved:
        total = np.maximum(self.test.tokens.counts - self.n + 1, 0).astype(np.int64)
        items = pl.DataFrame({"item": np.arange(self.test.n_items, dtype=np.int64), "total_ngrams": total})
        per_item, spans = self._spans()
        per_item = (
            items.join(per_item, on="item", how="left")
            .with_columns(pl.col("matched_ngrams").fill_null(0).cast(pl.Int64),
                          pl.col("longest_span_tokens").fill_null(0).cast(pl.Int64))
            .with_columns(
                pl.when(pl.col("total_ngrams") > 0).then(pl.col("matched_ngrams") / pl.col("total_ngrams"))
                .otherwise(None)
                .alias("ngram_overlap")
            )
            .select("item", *self.columns)
        )
        if spans.height == 0:
            return Resolved(per_item)
        best = (
            # Every key, train position included: a span found twice in one document is a tie that
            # polars' group_by order (which varies from run to run) must not decide.
            spans.sort(["span_tokens", "shared", "doc", "test_tok_start", "train_tok_start"],
                       descending=[True, True, False, False, False])
            .unique("item", keep="first", maintain_order=True)
            .select(list(SPAN_COLUMNS))
        )
        matches = spans.join(items, on="item").with_columns(
            kind=pl.lit(self.kind), score=pl.col("shared") / pl.col("total_ngrams").clip(1)
        )
        return Resolved(per_item, matches=matches, best=best)

    def _spans(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Aligned spans of (test item, training document) from the kept hit positions.

        In NumPy, by sorting: on the 31.5 MB benchmark `resolve` took 0.04-0.05 s as a chain of polars joins and
        group-bys in a fresh process (~0.025 s warm), 0.026-0.030 s so. Rows come in no particular order:
        `resolve` and the matches table sort by every key.
        """
        empty_items = pl.DataFrame(schema={"item": pl.Int64, "matched_ngrams": pl.Int64, "longest_span_tokens": pl.Int64})
        self._compact()
        if not self.hits or self.hits[0][0].size == 0:
            return empty_items, pl.DataFrame()
        item, test_pos, doc, train_pos = self._join(*self.hits[0])
        if item.size == 0:
            return empty_items, pl.DataFrame()
        # n-grams matched: distinct test positions per item, and per (item, document) pair.
        i, t = _sorted(item, test_pos)
        items, matched = np.unique(i[_changes(i, t)], return_counts=True)
        i, d, t = _sorted(item, doc, test_pos)
        shared = np.add.reduceat(_changes(i, d, t).astype(np.int64), np.flatnonzero(_changes(i, d)))
        # A span is a run of consecutive n-gram positions on one diagonal (same train - test offset).
        i, d, g, t = _sorted(item, doc, train_pos - test_pos, test_pos)
        keep = _changes(i, d, g, t)
        i, d, g, t = i[keep], d[keep], g[keep], t[keep]
        first = np.flatnonzero(_changes(i, d, g) | np.concatenate([[True], t[1:] != t[:-1] + 1]))
        ngrams = np.diff(np.append(first, t.size))
        i, d, g, t = i[first], d[first], g[first], t[first]
        pair = np.cumsum(_changes(i, d)) - 1  # spans are in (item, doc) order, as `shared` is, and cover every pair
        spans = pl.DataFrame({"item": i, "doc": d, "test_tok_start": t, "ngrams": ngrams,
                              "span_tokens": ngrams + (self.n - 1), "train_tok_start": t + g, "shared": shared[pair]})
        longest = np.zeros(self.test.n_items, np.int64)
        np.maximum.at(longest, i, ngrams + (self.n - 1))
        return pl.DataFrame({"item": items, "matched_ngrams": matched, "longest_span_tokens": longest[items]}), spans

    def _join(self, u: np.ndarray, d: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, ...]:
        """Every (hit, test occurrence of its n-gram) pair: (item, test position, document, training position)."""
        tu, ti, tp = (self.test_table.get_column(c).to_numpy() for c in ("u", "item", "test_pos"))
        order = _sorted(tu, np.arange(tu.size))[1]  # argsort(tu, stable): 80 K n-grams 5 -> 1-3 ms
        per_u = np.bincount(tu, minlength=self.unique.size)
        k = per_u[u]  # test occurrences of each hit's n-gram
        hit = np.repeat(np.arange(u.size), k)
        t = order[np.repeat((np.cumsum(per_u) - per_u)[u] - (np.cumsum(k) - k), k) + np.arange(hit.size)]
        return (ti[t].astype(np.int64), tp[t].astype(np.int64), d[hit].astype(np.int64),
                p[hit].astype(np.int64))


def _sorted(*keys: np.ndarray) -> list[np.ndarray]:
    """The integer keys sorted together, the first most significant.

    Packed into one int64 and sorted as such where their ranges fit in 63 bits (always, short of corpora with
    billions of rows), else by `np.lexsort`: only the keys are returned, so rows with equal keys need no order. On
    the 31.5 MB benchmark's 45 K (item, hit) pairs the three lexsorts took 6-8 ms each.
    """
    if keys[0].size == 0:
        return [k.copy() for k in keys]
    lows = [int(k.min()) for k in keys]
    widths = [(int(k.max()) - low).bit_length() for k, low in zip(keys, lows)]
    if sum(widths) > 63:
        order = np.lexsort(keys[::-1])
        return [k[order] for k in keys]
    packed = np.zeros(keys[0].size, np.int64)
    for k, low, width in zip(keys, lows, widths):
        packed <<= width
        packed |= k.astype(np.int64) - low
    packed.sort()
    out, shift = [], sum(widths)
    for k, low, width in zip(keys, lows, widths):
        shift -= width
        out.append(((packed >> shift) & ((1 << width) - 1)).astype(k.dtype) + low)
    return out


def _changes(*keys: np.ndarray) -> np.ndarray:
    """Over rows sorted by `keys`: True where a row starts a new combination of them."""
    out = np.zeros(keys[0].size, bool)
    out[:1] = True
    for k in keys:
        out[1:] |= k[1:] != k[:-1]
    return out
