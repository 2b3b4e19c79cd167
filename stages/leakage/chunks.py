"""Chunk evidence (RETRO's overlap ratio) and semantic evidence (embedding similarity), over shared neighbours.

Both kinds look at the same thing: for every test chunk, its k most similar training chunks. That
search is a shared resource (`ChunkNeighbours`, one per audit, made by whichever kind asks first);
each kind then reads its own column from it: the longest common token run over the chunk length
(chunk), or the best cosine similarity (semantic), which survives paraphrase.
"""

from __future__ import annotations

import copy as _copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from pipeline.arrays import unique_sorted
from stages.exact_topk import top_k_inner_product
from stages.leakage.evidence import (
    SPAN_COLUMNS,
    TRAIN_SPAN,
    Evidence,
    Resolved,
    Score,
    TestSide,
    TrainBatch,
    register_evidence,
)
from stages.text import Tokens, WindowTexts, longest_common_run, token_chunks, token_windows, tokenize

# Calibrated (partial, contaminated) cosine thresholds per embedding backend; see LeakageAudit.
SIMILARITY_DEFAULTS = {"static": (0.90, 0.96), "sentence-transformers": (0.78, 0.90)}


def padded(tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """(len(starts), width) windows of a flat token array (past-the-end positions repeat the last token)."""
    if tokens.size == 0 or starts.size == 0:
        return np.zeros((starts.size, width), np.uint64)
    index = np.minimum(starts[:, None] + np.arange(width)[None, :], tokens.size - 1)
    return tokens[index]


@dataclass
class NeighbourState:
    """The k most similar training chunks found so far per test chunk: what a partition contributes.

    Rows are test chunks; empty slots have sim -inf and doc -1. `ratio` is RETRO's overlap ratio of
    each kept pair, computed when the pair enters (it depends on the pair only), with where its longest
    common run starts in the test chunk and in the training chunk (`run_at`, the evidence span), so a state
    needs no training tokens and stays small (32 bytes per slot).
    """

    sim: np.ndarray  # float32 (t, k), best first
    doc: np.ndarray  # int64 training row
    train_tok_start: np.ndarray  # int64 first token of the training chunk within its document
    ratio: np.ndarray  # float32
    run_at: np.ndarray  # int32 (t, k, 2): the run's first token in the test chunk and in the training chunk
    train_chunks: int = 0  # training chunks embedded

    @classmethod
    def empty(cls, t: int, k: int) -> NeighbourState:
        return cls(np.full((t, k), -np.inf, np.float32), np.full((t, k), -1, np.int64), np.zeros((t, k), np.int64),
                   np.zeros((t, k), np.float32), np.zeros((t, k, 2), np.int32))

    def kept_with(self, sim, doc, tok_start, ratio_of) -> NeighbourState:
        """The k best of these slots and new candidates (rows of sim/doc/tok_start); earlier slots win ties.

        `ratio_of(rows, cols)` gives the overlap ratio and run starts (n, 2) of the candidates that enter, and
        only those.
        """
        k = self.sim.shape[1]
        all_sim = np.concatenate([self.sim, sim], axis=1)
        order = np.argsort(-all_sim, axis=1, kind="stable")[:, :k]
        new = order >= k
        if not new.any():
            return self  # nothing new beats the neighbours already kept
        take = np.take_along_axis
        rows, cols = np.nonzero(new)
        ratio = take(np.concatenate([self.ratio, np.zeros(sim.shape, np.float32)], axis=1), order, 1)
        run_at = take(np.concatenate([self.run_at, np.zeros((*sim.shape, 2), np.int32)], axis=1), order[:, :, None], 1)
        ratio[rows, cols], run_at[rows, cols] = ratio_of(rows, order[rows, cols] - k)
        return NeighbourState(take(all_sim, order, 1), take(np.concatenate([self.doc, doc], axis=1), order, 1),
                              take(np.concatenate([self.train_tok_start, tok_start], axis=1), order, 1), ratio,
                              run_at, self.train_chunks)

    def merged(self, later: NeighbourState) -> NeighbourState:
        """This state with one over later training rows (associative: the k best, earlier rows first on ties)."""
        out = self.kept_with(later.sim, later.doc, later.train_tok_start,
                             lambda r, c: (later.ratio[r, c], later.run_at[r, c]))
        out = out if out is not self else _copy.copy(self)
        out.train_chunks = self.train_chunks + later.train_chunks
        return out


@dataclass
class BatchChunks:
    """One training batch's chunks and their vectors: embedded once, read by every kind that wants them."""

    doc: np.ndarray  # int64 row within the batch
    starts: np.ndarray  # int64 first token in the batch's flat token array
    lengths: np.ndarray  # int64
    texts: WindowTexts  # made when read
    vectors: np.ndarray | None  # float32 (chunks, dim), unit length; None when the batch has no chunk


def embed_chunks(batch: TrainBatch, size: int, stride: int, embed: Any, embed_windows: Any = None) -> BatchChunks:
    """A batch's aligned `size`-word chunks (every `stride` words) and their vectors by `embed(texts)`, or by
    `embed_windows(tokens, starts, lengths)` when given (the static table embeds windows from their words)."""
    doc, starts, lengths = token_windows(batch.tokens, size, stride)
    texts = WindowTexts(batch.tokens, starts, lengths)
    if not len(texts):
        return BatchChunks(doc, starts, lengths, texts, None)
    vectors = embed_windows(batch.tokens, starts, lengths) if embed_windows else embed(texts.all())
    return BatchChunks(doc, starts, lengths, texts, vectors)


def static_windows(model: str | None):
    """`embed_windows` for `embed_chunks` with the static table (uncached): vectors from the words, the same bits."""
    from stages.embedding import encode_static_word_windows

    return lambda words, starts, lengths: encode_static_word_windows(words, starts, lengths, model)


class ChunkNeighbours:
    """The test side of chunk search, built once per audit (and broadcast): test chunks, tokens, vectors.

    `advance(state, batch)` embeds one training batch's chunks and keeps the k best per test chunk.
    The chunk and semantic kinds each hold a state but pass the same batches: the last call is
    remembered, so a batch is embedded and searched once. Embeddings go through the
    content-addressed cache (`audit.cache`) when it is on.
    """

    def __init__(self, audit: Any, test: TestSide):
        self.audit = audit
        self.size, self.k = audit.chunk_tokens, audit.k
        self.stride = audit.chunk_step
        self.item, starts, self.lengths, texts = token_chunks(test.tokens, self.size, self.stride)
        self.test_tok_start = starts - test.tokens.offsets[:-1][self.item]
        self.test_tokens = padded(test.tokens.hashes, starts, self.lengths, self.size)
        self.vectors = self._embed(texts) if texts else None
        self._last: tuple | None = None
        self._tables: tuple | None = None
        self._chunks: tuple | None = None

    @classmethod
    def of(cls, shared: dict[str, Any], audit: Any, test: TestSide) -> ChunkNeighbours:
        """The audit's one neighbour search: over a prebuilt `index` step when given, else streamed."""
        if "chunk_neighbours" not in shared:
            prebuilt = shared.get("prebuilt_index")
            shared["chunk_neighbours"] = IndexedNeighbours(audit, test, prebuilt) if prebuilt else cls(audit, test)
        return shared["chunk_neighbours"]

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_last": None, "_tables": None, "_chunks": None}  # memos hold batches: never pickled

    def _embed(self, texts: list[str]) -> np.ndarray:
        from stages.embedding import encode_texts

        a = self.audit
        return encode_texts(texts, backend=a.backend, model=a.model, batch_size=a.embed_batch_size, normalize=True,
                            cache_dir=a.cache_dir)

    def empty(self) -> NeighbourState:
        return NeighbourState.empty(self.item.size, self.k)

    def batch_chunks(self, batch: TrainBatch) -> BatchChunks:
        """The batch's chunks with their vectors; the last batch's are remembered, so another kind streaming
        the same batch (the paraphrase kind's candidates) reuses them instead of embedding the corpus again."""
        memo = self._chunks
        if memo is not None and memo[0] is batch:
            return memo[1]
        a = self.audit
        windows = static_windows(a.model) if a.backend == "static" and a.cache_dir is None else None
        out = embed_chunks(batch, self.size, self.stride, self._embed, windows)
        self._chunks = (batch, out)
        return out

    def advance(self, state: NeighbourState | None, batch: TrainBatch) -> NeighbourState:
        """`state` with one more training batch (the same state and batch give the very same result object)."""
        if self._last is not None and self._last[0] is state and self._last[1] is batch:
            return self._last[2]
        out = self._search(state if state is not None else self.empty(), batch)
        self._last = (state, batch, out)
        return out

    def _search(self, state: NeighbourState, batch: TrainBatch) -> NeighbourState:
        if self.vectors is None:
            return state
        tok: Tokens = batch.tokens
        chunks = self.batch_chunks(batch)
        doc, starts, lengths, texts = chunks.doc, chunks.starts, chunks.lengths, chunks.texts
        if not len(texts):
            return state
        within = starts - tok.offsets[:-1][doc]
        # Only rows that beat a test chunk's k-th kept neighbour can enter: the search skips the rest.
        sim, nn = top_k_inner_product(self.vectors, chunks.vectors, self.k, floor=state.sim[:, -1])

        def ratio_of(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            picked = nn[rows, cols]
            tokens = padded(tok.hashes, starts[picked], lengths[picked], self.size)
            return self.overlap_ratio(rows, tokens, lengths[picked])

        out = state.kept_with(sim, doc[nn] + batch.base, within[nn], ratio_of)
        out = out if out is not state else _copy.copy(state)
        out.train_chunks = state.train_chunks + len(texts)
        return out

    def overlap_ratio(self, rows: np.ndarray, tokens: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RETRO's r of test chunks `rows` against training chunks (longest common run / test chunk length), and
        where that run starts in each chunk ((n, 2): test, training; 0 where r is 0)."""
        ratio = np.zeros(rows.size, np.float32)
        run_at = np.zeros((rows.size, 2), np.int32)
        for lo in range(0, rows.size, 4096):
            r = rows[lo : lo + 4096]
            run, test_at, train_at = longest_common_run(self.test_tokens[r], self.lengths[r], tokens[lo : lo + 4096],
                                                        lengths[lo : lo + 4096], positions=True)
            # A run shorter than RETRO's 12.5% of a full chunk (8 of 64 words) is a common phrase, not evidence,
            # however short the test chunk is: an item of a few words ("Paris", "the main function") is in some
            # training chunk of almost any corpus, and was called contaminated at r = 1.0.
            found = run >= max(self.size // 8, 1)
            ratio[lo : lo + 4096] = np.where(found, run / np.maximum(self.lengths[r], 1), 0.0)
            run_at[lo : lo + 4096] = np.where(found[:, None], np.column_stack([test_at, train_at]), 0)
        return ratio, run_at

    def merge(self, a: Any, b: Any) -> Any:
        return b if a is None else a if b is None else a.merged(b)

    def candidate_docs(self, state: NeighbourState | None) -> np.ndarray:
        if state is None:
            return np.empty(0, np.int64)
        return unique_sorted(state.doc[(state.doc >= 0) & np.isfinite(state.sim)])

    def table(self, state: NeighbourState | None) -> pl.DataFrame:
        """One row per (test chunk, kept neighbour): item, spans, similarity and overlap ratio."""
        if self._tables is not None and self._tables[0] is state:
            return self._tables[1]
        found = state if state is not None else self.empty()
        t, k = found.sim.shape
        valid = found.doc >= 0
        table = pl.DataFrame({
            "item": np.repeat(self.item, k),
            "span_tokens": np.repeat(self.lengths, k).astype(np.int64),
            TRAIN_SPAN: np.full(t * k, self.size, np.int64),  # the whole training chunk (cut at its document's end)
            "test_tok_start": np.repeat(self.test_tok_start, k),
            "rank": np.tile(np.arange(k), t),
            "sim": np.where(valid, found.sim, np.nan).reshape(-1).astype(np.float64),
            "ratio": np.where(valid, found.ratio, 0.0).reshape(-1).astype(np.float64),
            "test_run_at": found.run_at[:, :, 0].reshape(-1).astype(np.int64),
            "train_run_at": found.run_at[:, :, 1].reshape(-1).astype(np.int64),
            "doc": found.doc.reshape(-1),
            "train_tok_start": found.train_tok_start.reshape(-1),
        }).filter(pl.col("doc") >= 0)
        self._tables = (state, table)
        return table


@dataclass
class IndexedRows:
    """Training row of each neighbour document seen so far (a prebuilt index's partial state)."""

    rows: dict[str, int] = field(default_factory=dict)

    def merged(self, later: IndexedRows) -> IndexedRows:
        return IndexedRows({**later.rows, **self.rows})  # the first occurrence in the corpus wins


class IndexedNeighbours(ChunkNeighbours):
    """Neighbours from an existing `index` step over the training corpus's chunks (no training embedding).

    Test chunks are embedded with the encoder the index records and searched once, here. The stream
    only maps the neighbours' document ids to training rows. The overlap ratio compares words of the
    indexed chunk's text (the index must keep `text`); where an indexed chunk starts inside its
    document in words is not recorded, so training-side character spans of this evidence are unknown.
    """

    def __init__(self, audit: Any, test: TestSide, index: Any):
        self.index = index
        super().__init__(audit, test)
        self.found = self.empty()
        self.found.train_tok_start[:] = -1
        self.found.train_chunks = int(index.ntotal)
        self._wanted: list[str] = []
        if self.vectors is None:
            return
        sim, rows = index.search_raw(self.vectors, self.k)
        kk = rows.shape[1]
        self._valid = rows >= 0
        self.found.sim[:, :kk] = np.where(self._valid, sim, -np.inf)
        flat = np.where(self._valid, rows, 0).reshape(-1)
        self._doc_ids = index._docs.gather(flat).cast(pl.String)
        if "text" in index.mapping.columns:
            chunk_tok = tokenize(index.mapping["text"].gather(flat))
            lengths = np.minimum(chunk_tok.counts, self.size)
            tokens = padded(chunk_tok.hashes, chunk_tok.offsets[:-1], lengths, self.size)
            # Where an indexed chunk starts in its document is unknown: its run is not placed (`run_at` stays 0).
            ratio, _ = self.overlap_ratio(np.repeat(np.arange(rows.shape[0]), kk), tokens, lengths)
            self.found.ratio[:, :kk] = ratio.reshape(rows.shape[0], kk)
        self._wanted = sorted(set(self._doc_ids.unique().to_list()))

    def _embed(self, texts: list[str]) -> np.ndarray:
        return self.index.embed(texts, cache_dir=self.audit.cache_dir)

    def advance(self, state: IndexedRows | None, batch: TrainBatch) -> IndexedRows:
        state = state if state is not None else IndexedRows()
        if self.vectors is None or batch.ids is None:
            return state
        hit = batch.ids.is_in(self._wanted).to_numpy()
        rows = dict(state.rows)
        for i in np.flatnonzero(hit).tolist():
            rows.setdefault(batch.ids[i], batch.base + i)
        return IndexedRows(rows)

    def _found(self, state: IndexedRows | None) -> NeighbourState:
        """The searched neighbours with their training rows, from the ids seen in the stream (-1: not in this corpus)."""
        found = _copy.copy(self.found)
        if self.vectors is None:
            return found
        seen = state.rows if state is not None else {}
        rows = self._doc_ids.replace_strict(seen, default=-1, return_dtype=pl.Int64).to_numpy()
        kk = self._valid.shape[1]
        found.doc = found.doc.copy()
        found.doc[:, :kk] = np.where(self._valid, rows.reshape(-1, kk), -1)
        return found

    def candidate_docs(self, state: IndexedRows | None) -> np.ndarray:
        return super().candidate_docs(self._found(state))

    def table(self, state: IndexedRows | None) -> pl.DataFrame:
        if self._tables is not None and self._tables[0] is state:
            return self._tables[1]
        table = super().table(self._found(state))
        self._tables = (state, table)
        return table


class _NeighbourEvidence(Evidence):
    """An evidence kind read off the shared chunk neighbours: one score column and its thresholds.

    Its partial state (`found`) is the k best training chunks per test chunk (or, over a prebuilt
    index, the training rows of the neighbours' documents): partitions of the corpus merge by
    keeping the k best, so the audit runs partitioned with these kinds on.
    """

    score_column: str  # "ratio" or "sim" in the neighbour table
    rank_by: tuple[str, str]
    partial_attributes = ("found",)

    def __init__(self, audit: Any, test: TestSide, shared: dict[str, Any]):
        super().__init__(audit, test, shared)
        self.neighbours = ChunkNeighbours.of(shared, audit, test)
        self.found: Any = None

    def add_batch(self, batch: TrainBatch) -> None:
        self.found = self.neighbours.advance(self.found, batch)

    def merge(self, other: Evidence) -> None:
        assert isinstance(other, _NeighbourEvidence)
        self.found = self.neighbours.merge(self.found, other.found)

    def candidate_docs(self) -> np.ndarray:
        return self.neighbours.candidate_docs(self.found)

    def stats(self) -> dict[str, Any]:
        if isinstance(self.neighbours, IndexedNeighbours):
            return {"train_chunks_embedded": self.neighbours.found.train_chunks}
        return {"train_chunks_embedded": self.found.train_chunks if self.found is not None else 0}

    def matched(self, score: pl.Expr) -> pl.Expr:
        raise NotImplementedError

    def spans(self, table: pl.DataFrame) -> pl.DataFrame:
        """The neighbour table with each pair's evidence span (`SPAN_COLUMNS`, `TRAIN_SPAN`): here, the two chunks."""
        return table

    def resolve(self) -> Resolved:
        table = self.spans(self.neighbours.table(self.found))
        column = next(iter(self.columns))
        per_item = table.group_by("item").agg(pl.col(self.score_column).max().alias(column))
        best = (
            table.sort([*self.rank_by, "doc", "train_tok_start", "test_tok_start"],
                       descending=[True, True, False, False, False])
            .unique("item", keep="first", maintain_order=True)
            .select(*SPAN_COLUMNS, TRAIN_SPAN)
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
    def settings(cls, audit: Any, stats: dict[str, Any]) -> list[tuple[str, Any]]:
        return [("chunk_tokens", audit.chunk_tokens), ("k", audit.k), ("backend", audit.backend),
                ("chunk_partial", audit.chunk_partial), ("chunk_contaminated", audit.chunk_contaminated)]

    @classmethod
    def thresholds(cls, audit: Any, findings: pl.DataFrame) -> dict[str, list[float]]:
        return {"chunk_overlap_ratio": [audit.chunk_partial, audit.chunk_contaminated]}

    def matched(self, score: pl.Expr) -> pl.Expr:
        return score > self.audit.chunk_partial

    def spans(self, table: pl.DataFrame) -> pl.DataFrame:
        """A pair's span is its longest common run, on both sides (the text the ratio counts), where the run was
        placed; the chunks' starts were up to a stride apart, so the training side showed other words."""
        placed = (pl.col("ratio") > 0) & (pl.col("train_tok_start") >= 0)
        run = (pl.col("ratio") * pl.col("span_tokens")).round().cast(pl.Int64)
        return table.with_columns(
            pl.when(placed).then(pl.col("test_tok_start") + pl.col("test_run_at")).otherwise("test_tok_start"),
            pl.when(placed).then(pl.col("train_tok_start") + pl.col("train_run_at")).otherwise("train_tok_start"),
            pl.when(placed).then(run).otherwise("span_tokens").alias("span_tokens"),
            pl.when(placed).then(run).otherwise(TRAIN_SPAN).alias(TRAIN_SPAN),
        )

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
    def settings(cls, audit: Any, stats: dict[str, Any]) -> list[tuple[str, Any]]:
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
