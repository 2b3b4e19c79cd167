"""Chunk evidence (RETRO's overlap ratio) and semantic evidence (embedding similarity), over shared neighbours.

Both kinds look at the same thing: for every test chunk, its k most similar training chunks. That
search is a shared resource (`ChunkNeighbours`, one per audit, made by whichever kind asks first);
each kind then reads its own column from it: the longest common token run over the chunk length
(chunk), or the best cosine similarity (semantic), which survives paraphrase.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from stages.leakage.evidence import (
    SPAN_COLUMNS,
    Evidence,
    Resolved,
    Score,
    TestSide,
    TrainBatch,
    register_evidence,
)
from stages.text import Tokens, longest_common_run, token_chunks, tokenize

# Calibrated (partial, contaminated) cosine thresholds per embedding backend; see LeakageAudit.
SIMILARITY_DEFAULTS = {"static": (0.90, 0.96), "sentence-transformers": (0.78, 0.90)}


def padded(tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """(len(starts), width) windows of a flat token array (past-the-end positions repeat the last token)."""
    if tokens.size == 0 or starts.size == 0:
        return np.zeros((starts.size, width), np.uint64)
    index = np.minimum(starts[:, None] + np.arange(width)[None, :], tokens.size - 1)
    return tokens[index]


class ChunkNeighbours:
    """Streaming chunk search: embed each training batch's chunks, keep the k best per test chunk.

    Embeddings go through the content-addressed cache (`audit.cache`), so a re-run, or another audit
    over the same corpus and model, embeds nothing twice; each batch is searched with `retrieval.Index`.
    """

    def __init__(self, audit: Any, test: TestSide):
        self.audit = audit
        self.size, self.k = audit.chunk_tokens, audit.k
        self.stride = audit.chunk_stride or max(audit.chunk_tokens // 2, 1)
        self.item, starts, self.lengths, texts = token_chunks(test.tokens, self.size, self.stride)
        self.test_tok_start = starts - test.tokens.offsets[:-1][self.item]
        self.test_tokens = padded(test.tokens.hashes, starts, self.lengths, self.size)
        self.vectors = self._embed(texts) if texts else None
        t = self.item.size
        self.sim = np.full((t, self.k), -np.inf, np.float32)
        self.doc = np.full((t, self.k), -1, np.int64)
        self.train_tok_start = np.zeros((t, self.k), np.int64)
        # The k best training chunks' tokens, so the overlap ratio is computed once, at the end, for
        # the final neighbours only (memory: test chunks x k x chunk_tokens x 8 bytes).
        self.cand_tokens = np.zeros((t, self.k, self.size), np.uint64)
        self.cand_lengths = np.zeros((t, self.k), np.int64)
        self.train_chunks = 0
        self._seen_base: int | None = None
        self._merged: set[int] = set()
        self._table: pl.DataFrame | None = None

    @classmethod
    def of(cls, shared: dict[str, Any], audit: Any, test: TestSide) -> ChunkNeighbours:
        """The audit's one neighbour search: over a prebuilt `index` step when given, else streamed."""
        if "chunk_neighbours" not in shared:
            prebuilt = shared.get("prebuilt_index")
            shared["chunk_neighbours"] = IndexedNeighbours(audit, test, prebuilt) if prebuilt else cls(audit, test)
        return shared["chunk_neighbours"]

    def _embed(self, texts: list[str]) -> np.ndarray:
        from stages.embedding import encode_texts

        a = self.audit
        return encode_texts(texts, backend=a.backend, model=a.model, batch_size=a.embed_batch_size, normalize=True,
                            cache_dir=a.cache_dir)

    def add_batch(self, batch: TrainBatch) -> None:
        """Idempotent per batch: the kinds sharing these neighbours each pass every batch on."""
        if self.vectors is None or self._seen_base == batch.base:
            return
        self._seen_base = batch.base
        from stages.retrieval import Index

        tok: Tokens = batch.tokens
        doc, starts, lengths, texts = token_chunks(tok, self.size, self.stride)
        if not texts:
            return
        self.train_chunks += len(texts)
        index = Index.build(self._embed(texts), index_type="Flat", metric="inner_product")
        kk = min(self.k, len(texts))
        sim, nn = index.search_raw(self.vectors, kk)
        batch_tokens = padded(tok.hashes, starts[nn].reshape(-1), lengths[nn].reshape(-1), self.size)
        self._keep_best(sim, doc[nn] + batch.base, (starts - tok.offsets[:-1][doc])[nn], lengths[nn],
                        batch_tokens.reshape(nn.shape[0], kk, self.size))

    def _keep_best(self, sim, doc, tok_start, lengths, tokens) -> None:
        """Merge candidate neighbours (one row per test chunk) into the k best kept so far."""
        all_sim = np.concatenate([self.sim, sim], axis=1)
        order = np.argsort(-all_sim, axis=1, kind="stable")[:, : self.k]
        if not (order >= self.k).any():
            return  # nothing new beats the neighbours already kept
        take = np.take_along_axis
        self.sim = take(all_sim, order, 1)
        self.doc = take(np.concatenate([self.doc, doc], axis=1), order, 1)
        self.train_tok_start = take(np.concatenate([self.train_tok_start, tok_start], axis=1), order, 1)
        self.cand_lengths = take(np.concatenate([self.cand_lengths, lengths], axis=1), order, 1)
        self.cand_tokens = take(np.concatenate([self.cand_tokens, tokens], axis=1), order[:, :, None], 1)
        self._table = None

    def merge(self, other: ChunkNeighbours) -> None:
        if id(other) in self._merged or other is self:
            return
        self._merged.add(id(other))
        self.train_chunks += other.train_chunks
        if self.vectors is not None:
            self._keep_best(other.sim, other.doc, other.train_tok_start, other.cand_lengths, other.cand_tokens)

    def candidate_docs(self) -> np.ndarray:
        return np.unique(self.doc[(self.doc >= 0) & np.isfinite(self.sim)])

    def _overlap_ratios(self) -> np.ndarray:
        """RETRO's r for every kept neighbour: longest common run / test chunk length."""
        t, k = self.doc.shape
        rows, cols = np.nonzero(self.doc >= 0)
        ratio = np.zeros((t, k), np.float32)
        for lo in range(0, rows.size, 4096):
            r, c = rows[lo : lo + 4096], cols[lo : lo + 4096]
            run = longest_common_run(self.test_tokens[r], self.lengths[r], self.cand_tokens[r, c], self.cand_lengths[r, c])
            # A run shorter than RETRO's 12.5% of a full chunk (8 of 64 words) is a common phrase,
            # not evidence, however short the test chunk is.
            min_run = np.minimum(max(self.size // 8, 1), self.lengths[r])
            ratio[r, c] = np.where(run >= min_run, run / np.maximum(self.lengths[r], 1), 0.0)
        return ratio

    def table(self) -> pl.DataFrame:
        """One row per (test chunk, kept neighbour): item, spans, similarity and overlap ratio."""
        if self._table is None:
            t, k = self.sim.shape
            valid = self.doc >= 0
            self._table = pl.DataFrame({
                "item": np.repeat(self.item, k),
                "span_tokens": np.repeat(self.lengths, k).astype(np.int64),
                "test_tok_start": np.repeat(self.test_tok_start, k),
                "rank": np.tile(np.arange(k), t),
                "sim": np.where(valid, self.sim, np.nan).reshape(-1).astype(np.float64),
                "ratio": self._overlap_ratios().reshape(-1).astype(np.float64),
                "doc": self.doc.reshape(-1),
                "train_tok_start": self.train_tok_start.reshape(-1),
            }).filter(pl.col("doc") >= 0)
        return self._table


class IndexedNeighbours(ChunkNeighbours):
    """Neighbours from an existing `index` step over the training corpus's chunks (no training embedding).

    Test chunks are embedded with the encoder the index records and searched once. The stream only
    maps the neighbours' document ids to training rows. The overlap ratio compares words of the
    indexed chunk's text (the index must keep `text`); where an indexed chunk starts inside its
    document in words is not recorded, so training-side character spans of this evidence are unknown.
    """

    def __init__(self, audit: Any, test: TestSide, index: Any):
        self.index = index
        super().__init__(audit, test)
        self._rows: dict[str, int] = {}
        if self.vectors is None:
            self._doc_ids = pl.Series(dtype=pl.String)
            return
        sim, rows = index.search_raw(self.vectors, self.k)
        kk = rows.shape[1]
        valid = rows >= 0
        self.sim[:, :kk] = np.where(valid, sim, -np.inf)
        flat = np.where(valid, rows, 0).reshape(-1)
        self._doc_ids = index._docs.gather(flat).cast(pl.String)
        self._valid = valid
        self.train_tok_start[:] = -1
        if "text" in index.mapping.columns:
            chunk_tok = tokenize(index.mapping["text"].gather(flat))
            starts = chunk_tok.offsets[:-1]
            lengths = np.minimum(chunk_tok.counts, self.size)
            tokens = padded(chunk_tok.hashes, starts, lengths, self.size).reshape(rows.shape[0], kk, self.size)
            self.cand_tokens[:, :kk] = tokens
            self.cand_lengths[:, :kk] = lengths.reshape(rows.shape[0], kk)
        self._wanted = set(self._doc_ids.unique().to_list())
        self.train_chunks = int(index.ntotal)

    def _embed(self, texts: list[str]) -> np.ndarray:
        return self.index.embed(texts, cache_dir=self.audit.cache_dir)

    def add_batch(self, batch: TrainBatch) -> None:
        if self.vectors is None or batch.ids is None or self._seen_base == batch.base:
            return
        self._seen_base = batch.base
        hit = batch.ids.is_in(list(self._wanted)).to_numpy()
        for i in np.flatnonzero(hit).tolist():
            self._rows.setdefault(batch.ids[i], batch.base + i)
        self._table = None

    def merge(self, other: ChunkNeighbours) -> None:
        assert isinstance(other, IndexedNeighbours)
        for doc_id, row in other._rows.items():
            self._rows.setdefault(doc_id, row)
        self._table = None

    def _fill_docs(self) -> None:
        """Training row of every neighbour, from the ids seen in the stream (-1: not in this corpus)."""
        if self.vectors is None:
            return
        rows = self._doc_ids.replace_strict(self._rows, default=-1, return_dtype=pl.Int64).to_numpy()
        kk = self._valid.shape[1]
        self.doc[:, :kk] = np.where(self._valid, rows.reshape(-1, kk), -1)

    def candidate_docs(self) -> np.ndarray:
        self._fill_docs()
        return super().candidate_docs()

    def table(self) -> pl.DataFrame:
        if self._table is None:
            self._fill_docs()
        return super().table()


class _NeighbourEvidence(Evidence):
    """An evidence kind read off the shared chunk neighbours: one score column and its thresholds."""

    score_column: str  # "ratio" or "sim" in the neighbour table
    rank_by: tuple[str, str]

    def __init__(self, audit: Any, test: TestSide, shared: dict[str, Any]):
        super().__init__(audit, test, shared)
        self.neighbours = ChunkNeighbours.of(shared, audit, test)

    def add_batch(self, batch: TrainBatch) -> None:
        self.neighbours.add_batch(batch)

    def merge(self, other: Evidence) -> None:
        assert isinstance(other, _NeighbourEvidence)
        self.neighbours.merge(other.neighbours)

    def candidate_docs(self) -> np.ndarray:
        return self.neighbours.candidate_docs()

    def stats(self) -> dict[str, Any]:
        return {"train_chunks_embedded": self.neighbours.train_chunks}

    def matched(self, score: pl.Expr) -> pl.Expr:
        raise NotImplementedError

    def resolve(self) -> Resolved:
        table = self.neighbours.table()
        column = next(iter(self.columns))
        per_item = table.group_by("item").agg(pl.col(self.score_column).max().alias(column))
        best = (
            table.sort([*self.rank_by, "doc", "train_tok_start", "test_tok_start"],
                       descending=[True, True, False, False, False])
            .unique("item", keep="first", maintain_order=True)
            .select(list(SPAN_COLUMNS))
        )
        matches = table.filter(self.matched(pl.col(self.score_column))).with_columns(
            kind=pl.lit(self.kind), score=pl.col(self.score_column)
        )
        return Resolved(per_item, matches=matches, best=best)


@register_evidence
class ChunkEvidence(_NeighbourEvidence):
    kind = "chunk"
    builtin_switch = "chunk_overlap"
    order = 1
    columns = {"chunk_overlap_ratio": pl.Float64}
    scores = (Score("chunk_overlap_ratio", "chunk overlap ratio r (RETRO)", "chunk overlap"),)
    sort_column = "chunk_overlap_ratio"
    score_column = "ratio"
    rank_by = ("ratio", "sim")

    @classmethod
    def settings(cls, audit: Any) -> list[tuple[str, Any]]:
        return [("chunk_tokens", audit.chunk_tokens), ("k", audit.k), ("backend", audit.backend),
                ("chunk_partial", audit.chunk_partial), ("chunk_contaminated", audit.chunk_contaminated)]

    @classmethod
    def thresholds(cls, audit: Any, findings: pl.DataFrame) -> dict[str, list[float]]:
        return {"chunk_overlap_ratio": [audit.chunk_partial, audit.chunk_contaminated]}

    def matched(self, score: pl.Expr) -> pl.Expr:
        return score > self.audit.chunk_partial

    def verdict(self) -> tuple[pl.Expr, pl.Expr]:
        ratio = pl.col("chunk_overlap_ratio").fill_null(0.0)
        return ratio >= self.audit.chunk_contaminated, ratio > self.audit.chunk_partial


@register_evidence
class SemanticEvidence(_NeighbourEvidence):
    kind = "semantic"
    builtin_switch = "semantic"
    order = 2
    columns = {"max_similarity": pl.Float64}
    scores = (Score("max_similarity", "best chunk cosine similarity", "similarity"),)
    sort_column = "max_similarity"
    score_column = "sim"
    rank_by = ("sim", "ratio")

    @classmethod
    def settings(cls, audit: Any) -> list[tuple[str, Any]]:
        partial, contaminated = audit.similarity_thresholds
        return [("chunk_tokens", audit.chunk_tokens), ("k", audit.k), ("backend", audit.backend),
                ("similarity_partial", partial), ("similarity_contaminated", contaminated)]

    @classmethod
    def thresholds(cls, audit: Any, findings: pl.DataFrame) -> dict[str, list[float]]:
        return {"max_similarity": list(audit.similarity_thresholds)}

    def matched(self, score: pl.Expr) -> pl.Expr:
        return score >= self.audit.similarity_thresholds[0]

    def verdict(self) -> tuple[pl.Expr, pl.Expr]:
        sim = pl.col("max_similarity").fill_null(0.0)
        partial, contaminated = self.audit.similarity_thresholds
        return sim >= contaminated, sim >= partial
