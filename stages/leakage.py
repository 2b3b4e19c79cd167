"""Test-set leakage: which test items (or parts of them) also sit in the training corpus, and removing them.

Three kinds of evidence per test item, each switchable, because each misses what another catches:

1. exact word n-grams after normalisation (NFKC, case, punctuation, whitespace), as GPT-3 did,
   ignoring n-grams found in more than `max_doc_freq` training documents (common phrases);
2. chunk overlap as in RETRO: the item's 64-token chunks, their k nearest training chunks, and
   r = longest common token substring / chunk length (RETRO counts r <= 12.5% as no leakage);
3. semantic similarity of chunks, which survives paraphrase, light edits and reordering that break
   every n-gram.

Both passes stream over the training corpus once and hold only the test side in memory: the n-gram
pass probes each training batch's rolling n-gram hashes against the sorted test hashes; the chunk
pass embeds each training batch and keeps, per test chunk, the k best training chunks seen so far.
Only the few training documents that matched are read a second time, to recover character spans.

Default thresholds were chosen on data (see `LeakageAudit` and `bench/bench_leakage.py --calibrate`):
planted copies, edits, reorderings and rewrites of Python documentation against clean controls.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import polars as pl

from pipeline.errors import ParamError
from pipeline.io import Dataset
from pipeline.stage import Context, Stage
from stages.text import (
    MAX_N,
    Tokens,
    longest_common_run,
    ngram_hashes,
    token_chunks,
    token_offsets,
    tokenize,
    word_spans,
)

VERDICTS = ("clean", "partial", "contaminated")
# Calibrated (partial, contaminated) cosine thresholds per embedding backend; see calibrate_thresholds.
SIMILARITY_DEFAULTS = {"static": (0.90, 0.96), "sentence-transformers": (0.78, 0.90)}
MATCH_KINDS = ("ngram", "chunk", "semantic")


def _padded(tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    if tokens.size == 0 or starts.size == 0:
        return np.zeros((starts.size, width), np.uint64)
    index = np.minimum(starts[:, None] + np.arange(width)[None, :], tokens.size - 1)
    return tokens[index]


# ---------------------------------------------------------------------------------- embedding


def embed_chunks(texts: list[str], backend: str, model: str | None, batch_size: int) -> np.ndarray:
    from stages.embedding import encode_texts

    return encode_texts(texts, backend=backend, model=model, batch_size=batch_size, normalize=True)


# ------------------------------------------------------------------------------------- the audit


def _verdict_expr(stage: LeakageAudit) -> pl.Expr:
    overlap = pl.col("ngram_overlap").fill_null(0.0)
    ratio = pl.col("chunk_overlap_ratio").fill_null(0.0)
    sim = pl.col("max_similarity").fill_null(0.0)
    sim_partial, sim_contaminated = stage.similarity_thresholds
    contaminated = (overlap >= stage.ngram_contaminated) | (ratio >= stage.chunk_contaminated) | (sim >= sim_contaminated)
    partial = (pl.col("matched_ngrams") > 0) | (ratio > stage.chunk_partial) | (sim >= sim_partial)
    return (
        pl.when(contaminated).then(pl.lit("contaminated"))
        .when(partial).then(pl.lit("partial"))
        .otherwise(pl.lit("clean"))
    )


class LeakageAudit(Stage):
    """Per test item: is it (partly, or reworded) in the training corpus? Findings, matches, clean/dirty splits, report.

    Main output `findings` (one row per test item); side outputs `matches` (test/train pairs with
    scores and character spans), `clean` and `dirty` (the test rows, split by verdict, for GPT-3's
    clean-vs-all comparison); artefacts report.html and report.md.

    Verdicts: `contaminated` when n-gram overlap >= ngram_contaminated, or chunk overlap ratio >=
    chunk_contaminated, or similarity >= similarity_contaminated; `partial` when any rare n-gram
    matches, or r > chunk_partial (RETRO's 12.5%), or similarity >= similarity_partial; else `clean`.
    The similarity defaults were chosen on data with `python -m bench.bench_leakage --calibrate
    BACKEND`: training = the 79 pydoc topics; test = 40 planted items of each kind (`plant`) and 86
    stdlib module docstrings as clean controls (same domain, different text). `partial` sits just
    above the highest control, `contaminated` near the median of light edits and reorderings:
    static: controls max 0.89 / p99 0.86; rewritten min 0.905, reordered min 0.94, edited min 0.96
    -> (0.90, 0.96). sentence-transformers: controls max 0.77 / p99 0.72; edited median 0.93,
    reordered median 0.92, rewritten median 0.81 -> (0.78, 0.90). With these, no control is flagged
    and every verbatim, surface, partial, edited and reordered item is (static also catches every
    word-shuffled rewrite; MiniLM 55% of them, as shuffling hurts a contextual model more).

    Parameters:
        text_column: column holding the text, in both train and test
        id_column: column holding row ids, in both (row numbers are used when it is absent)
        subset_column: test column to break totals down by (a task or source), or null
        ngram: run the exact n-gram pass
        n: words per n-gram (8..50; GPT-3 used 13)
        max_doc_freq: ignore n-grams found in more than this many training documents (common phrases)
        chunk_overlap: run RETRO's chunk overlap (needs embeddings to retrieve neighbours)
        semantic: report the best chunk similarity (paraphrase evidence; needs embeddings)
        chunk_tokens: words per chunk (RETRO used 64)
        chunk_stride: words between chunk starts; null = half a chunk (overlapping chunks align leaked text better)
        k: training chunks retrieved per test chunk
        backend: embedding backend: 'static' (distilled from MiniLM, ~250x faster on CPU) or 'sentence-transformers' (contextual)
        model: embedding model directory, or null for the packaged all-MiniLM-L6-v2
        embed_batch_size: texts per embedding batch
        ngram_contaminated: n-gram overlap (fraction of the item's n-grams) that makes an item contaminated
        chunk_partial: chunk overlap ratio above which an item is at least partial (RETRO: 0.125)
        chunk_contaminated: chunk overlap ratio that makes an item contaminated
        similarity_partial: cosine similarity that makes an item at least partial; null = the backend's calibrated default
        similarity_contaminated: cosine similarity that makes an item contaminated; null = the backend's calibrated default
        report_items: how many of the worst items the report shows side by side
        batch_rows: training rows read per batch (memory vs speed)
    """

    name = "leakage_audit"
    version = "1"
    inputs = ("train", "test")
    requires = ("faiss",)

    def __init__(
        self,
        text_column: str = "text",
        id_column: str = "id",
        subset_column: str | None = None,
        ngram: bool = True,
        n: int = 13,
        max_doc_freq: int = 10,
        chunk_overlap: bool = True,
        semantic: bool = True,
        chunk_tokens: int = 64,
        chunk_stride: int | None = None,
        k: int = 10,
        backend: Literal["sentence-transformers", "static"] = "static",
        model: str | None = None,
        embed_batch_size: int = 64,
        ngram_contaminated: float = 0.5,
        chunk_partial: float = 0.125,
        chunk_contaminated: float = 0.5,
        similarity_partial: float | None = None,
        similarity_contaminated: float | None = None,
        report_items: int = 20,
        batch_rows: int = 20_000,
    ):
        self.text_column = text_column
        self.id_column = id_column
        self.subset_column = subset_column
        self.ngram = ngram
        self.n = n
        self.max_doc_freq = max_doc_freq
        self.chunk_overlap = chunk_overlap
        self.semantic = semantic
        self.chunk_tokens = chunk_tokens
        self.chunk_stride = chunk_stride
        self.k = k
        self.backend = backend
        self.model = model
        self.embed_batch_size = embed_batch_size
        self.ngram_contaminated = ngram_contaminated
        self.chunk_partial = chunk_partial
        self.chunk_contaminated = chunk_contaminated
        self.similarity_partial = similarity_partial
        self.similarity_contaminated = similarity_contaminated
        self.report_items = report_items
        self.batch_rows = batch_rows

    # -- contract ---------------------------------------------------------------------------

    def validate(self) -> None:
        if not 8 <= self.n <= MAX_N:
            raise ParamError("n", f"must be between 8 and {MAX_N} words (GPT-3 used 13), got {self.n}")
        if self.max_doc_freq < 1:
            raise ParamError("max_doc_freq", f"must be >= 1 (GPT-3 used 10), got {self.max_doc_freq}")
        if not (self.ngram or self.chunk_overlap or self.semantic):
            raise ParamError("ngram", "all three passes are off; enable ngram, chunk_overlap or semantic")
        if not 8 <= self.chunk_tokens <= 512:
            raise ParamError("chunk_tokens", f"must be between 8 and 512 (RETRO used 64), got {self.chunk_tokens}")
        if not 1 <= self.k <= 1000:
            raise ParamError("k", f"must be between 1 and 1000, got {self.k}")
        for name in ("ngram_contaminated", "chunk_partial", "chunk_contaminated"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ParamError(name, f"is a fraction between 0 and 1, got {value}")
        for name in ("similarity_partial", "similarity_contaminated"):
            value = getattr(self, name)
            if value is not None and not -1.0 <= value <= 1.0:
                raise ParamError(name, f"is a cosine similarity between -1 and 1, got {value}")
        if self.chunk_stride is not None and not 1 <= self.chunk_stride <= self.chunk_tokens:
            raise ParamError("chunk_stride", f"must be between 1 and chunk_tokens ({self.chunk_tokens}), got {self.chunk_stride}")
        if self.chunk_contaminated < self.chunk_partial:
            raise ParamError("chunk_contaminated", f"must be >= chunk_partial ({self.chunk_partial})")
        if self.similarity_thresholds[1] < self.similarity_thresholds[0]:
            raise ParamError("similarity_contaminated", f"must be >= similarity_partial ({self.similarity_partial})")
        if self.batch_rows < 1 or self.embed_batch_size < 1 or self.report_items < 0:
            raise ParamError("batch_rows", "batch_rows and embed_batch_size must be >= 1, report_items >= 0")
        if self.backend not in ("sentence-transformers", "static"):
            raise ParamError("backend", f"must be 'sentence-transformers' or 'static', got {self.backend!r}")

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        test = {self.text_column: "text_column"}
        if self.subset_column:
            test[self.subset_column] = "subset_column"
        return {"train": {self.text_column: "text_column"}, "test": test}

    @property
    def similarity_thresholds(self) -> tuple[float, float]:
        """(partial, contaminated): the given values, or the calibrated defaults of the backend."""
        partial, contaminated = SIMILARITY_DEFAULTS[self.backend]
        return (
            partial if self.similarity_partial is None else self.similarity_partial,
            contaminated if self.similarity_contaminated is None else self.similarity_contaminated,
        )

    @property
    def uses_embeddings(self) -> bool:
        return self.chunk_overlap or self.semantic

    # -- run --------------------------------------------------------------------------------

    def run(self, ctx: Context, train: Dataset, test: Dataset) -> pl.DataFrame:
        import time

        test_df = test.collect()
        test_ids = _ids(test_df, self.id_column)
        test_texts = test_df.get_column(self.text_column).cast(pl.String).fill_null("")
        test_tok = tokenize(test_texts)
        test_starts, test_ends, _ = token_offsets(test_texts.to_list(), test_tok.counts)
        n_items = test_df.height

        ngram_state = _NgramProbe(self, test_tok) if self.ngram else None
        chunk_state = _ChunkSearch(self, test_tok) if self.uses_embeddings else None

        train_columns = [self.text_column] + ([self.id_column] if self.id_column in train.columns else [])
        base = 0
        train_bytes = 0
        timings = {"ngram_s": 0.0, "chunk_s": 0.0, "tokenize_s": 0.0}
        bar = ctx.progress(total=train.num_rows)
        for batch in train.iter_batches(self.batch_rows, columns=train_columns):
            texts = batch.get_column(self.text_column).cast(pl.String).fill_null("")
            train_bytes += int(texts.str.len_bytes().sum() or 0)
            t0 = time.perf_counter()
            tok = tokenize(texts)
            t1 = time.perf_counter()
            if ngram_state is not None:
                ngram_state.add_batch(tok, base)
            t2 = time.perf_counter()
            if chunk_state is not None:
                chunk_state.add_batch(tok, base)
            t3 = time.perf_counter()
            timings["tokenize_s"] += t1 - t0
            timings["ngram_s"] += t2 - t1
            timings["chunk_s"] += t3 - t2
            base += batch.height
            bar.update(batch.height)
        bar.close()

        # Training documents that any evidence points at are read once more, for ids, text and spans.
        wanted = set()
        if ngram_state is not None:
            wanted.update(ngram_state.matched_docs().tolist())
        if chunk_state is not None:
            wanted.update(chunk_state.candidate_docs().tolist())
        train_docs = _fetch_train_docs(train, sorted(wanted), self.text_column, self.id_column, self.batch_rows)

        findings = pl.DataFrame({
            "item": np.arange(n_items, dtype=np.int64),
            "test_id": test_ids,
            "total_ngrams": np.maximum(test_tok.counts - self.n + 1, 0).astype(np.int64),
            "tokens": test_tok.counts,
        })
        match_frames = []
        span_cols = ["item", "doc", "span_tokens", "test_tok_start", "train_tok_start"]
        best_ngram = pl.DataFrame(schema={c: pl.Int64 for c in span_cols})
        if ngram_state is not None:
            per_item, spans = ngram_state.resolve()
            findings = findings.join(per_item, on="item", how="left")
            if spans.height:
                best_ngram = (
                    spans.sort(["span_tokens", "shared", "doc", "test_tok_start"], descending=[True, True, False, False])
                    .unique("item", keep="first", maintain_order=True)
                    .select(span_cols)
                )
                match_frames.append(
                    spans.join(findings.select("item", "total_ngrams"), on="item").with_columns(
                        kind=pl.lit("ngram"), score=pl.col("shared") / pl.col("total_ngrams").clip(1)
                    )
                )
        if "matched_ngrams" not in findings.columns:
            findings = findings.with_columns(
                matched_ngrams=pl.lit(None, pl.Int64), ngram_overlap=pl.lit(None, pl.Float64),
                longest_span_tokens=pl.lit(None, pl.Int64),
            )
        else:
            findings = findings.with_columns(
                pl.col("matched_ngrams").fill_null(0).cast(pl.Int64),
                pl.col("longest_span_tokens").fill_null(0).cast(pl.Int64),
            ).with_columns(
                pl.when(pl.col("total_ngrams") > 0)
                .then(pl.col("matched_ngrams") / pl.col("total_ngrams"))
                .otherwise(None)
                .alias("ngram_overlap"),
            )

        best_chunk = pl.DataFrame(schema={c: pl.Int64 for c in span_cols})
        if chunk_state is not None:
            per_item, best_chunk, chunk_matches = chunk_state.resolve(n_items, self)
            findings = findings.join(per_item, on="item", how="left")
            match_frames.append(chunk_matches)
        if "chunk_overlap_ratio" not in findings.columns:
            findings = findings.with_columns(chunk_overlap_ratio=pl.lit(None, pl.Float64))
        if "max_similarity" not in findings.columns:
            findings = findings.with_columns(max_similarity=pl.lit(None, pl.Float64))
        if not self.chunk_overlap:
            findings = findings.with_columns(chunk_overlap_ratio=pl.lit(None, pl.Float64))
        if not self.semantic:
            findings = findings.with_columns(max_similarity=pl.lit(None, pl.Float64))

        findings = findings.with_columns(verdict=_verdict_expr(self))
        # Evidence: the longest n-gram span when there is one, else the best retrieved chunk.
        evidence = pl.concat([
            best_ngram.with_columns(evidence_kind=pl.lit("ngram")),
            best_chunk.select(span_cols).with_columns(evidence_kind=pl.lit("chunk")),
        ]).unique("item", keep="first", maintain_order=True)
        findings = findings.join(evidence, on="item", how="left")

        spans = _Spans(test_texts.to_list(), test_tok, test_starts, test_ends, train_docs)
        findings = spans.attach(findings)
        findings = findings.with_columns(
            pl.col("doc").replace_strict(train_docs["doc"], train_docs["train_id"], default=None).alias("train_id")
        )
        if self.subset_column:
            findings = findings.with_columns(subset=test_df.get_column(self.subset_column).cast(pl.String))

        matches = _matches_table(match_frames, findings, spans, train_docs)
        ordered = [
            "test_id", "verdict", "ngram_overlap", "matched_ngrams", "total_ngrams", "longest_span_tokens",
            "chunk_overlap_ratio", "max_similarity", "train_id", "evidence_kind", "evidence", "train_evidence",
            "test_char_start", "test_char_end", "train_char_start", "train_char_end",
        ] + (["subset"] if self.subset_column else [])
        out = findings.sort("item").select(ordered)

        verdicts = out.get_column("verdict")
        ctx.write_side_output("matches", matches)
        ctx.write_side_output("clean", test_df.filter((verdicts == "clean").to_numpy()))
        dirty = test_df.with_columns(
            verdict=verdicts, train_id=out.get_column("train_id")
        ).filter(verdicts != "clean")
        ctx.write_side_output("dirty", dirty)

        counts = {v: int((verdicts == v).sum()) for v in VERDICTS}
        ctx.record("test_items", n_items)
        ctx.record("train_rows", base)
        ctx.record("train_mb", round(train_bytes / 1e6, 3))
        ctx.record("verdicts", counts)
        ctx.record("items_shorter_than_n", int((test_tok.counts < self.n).sum()))
        if ngram_state is not None:
            ctx.record("common_ngrams_ignored", ngram_state.common_count())
            ctx.record("ngram_mb_per_s", round(train_bytes / 1e6 / max(timings["tokenize_s"] + timings["ngram_s"], 1e-9), 2))
        if chunk_state is not None:
            ctx.record("train_chunks_embedded", chunk_state.train_chunks)
            ctx.record("chunk_pass_s", round(timings["chunk_s"], 3))
        ctx.record("timings_s", {k: round(v, 3) for k, v in timings.items()})

        from stages.leakage_report import worst_items, write_reports

        shown = set(worst_items(out.with_columns(doc=findings.sort("item")["doc"]), self.report_items)["doc"].to_list())
        train_texts = {d: t for d, t in zip(train_docs["doc"].to_list(), train_docs["text"].to_list()) if d in shown}
        del train_docs, spans

        write_reports(
            out, matches, test_df.get_column(self.text_column).cast(pl.String).fill_null("").to_list(),
            train_texts, findings.sort("item").get_column("doc").to_list(), self, ctx.stats,
            html_path=ctx.artefact_path("report.html"), md_path=ctx.artefact_path("report.md"),
        )
        return out

    @classmethod
    def example(cls):
        from pydoc_data.topics import topics

        names = sorted(topics)[:12]
        train = pl.DataFrame({"id": names, "text": [topics[t] for t in names]})
        leaked = " ".join(topics[names[3]].split()[:60]).upper()
        test = pl.DataFrame({
            "id": ["leaked", "clean"],
            "text": [leaked, " ".join(topics[sorted(topics)[40]].split()[:60])],
        })
        return {"chunk_overlap": False, "semantic": False}, {"train": train, "test": test}


def _ids(df: pl.DataFrame, id_column: str) -> pl.Series:
    if id_column in df.columns:
        return df.get_column(id_column).cast(pl.String)
    return pl.Series("id", [str(i) for i in range(df.height)], pl.String)


def _fetch_train_docs(train: Dataset, docs: list[int], text_column: str, id_column: str,
                      batch_rows: int) -> pl.DataFrame:
    """Read only the training rows that evidence points at (by row number in stream order), streaming."""
    schema = {"doc": pl.Int64, "train_id": pl.String, "text": pl.String}
    if not docs:
        return pl.DataFrame(schema=schema)
    wanted = np.asarray(docs, np.int64)
    has_id = id_column in train.columns
    columns = [text_column] + ([id_column] if has_id else [])
    found, base = [], 0
    for batch in train.iter_batches(batch_rows, columns=columns):
        lo = np.searchsorted(wanted, base)
        hi = np.searchsorted(wanted, base + batch.height)
        if hi > lo:
            rows = wanted[lo:hi]
            picked = batch[rows - base]
            found.append(pl.DataFrame({
                "doc": rows,
                "train_id": picked.get_column(id_column).cast(pl.String) if has_id else pl.Series([str(r) for r in rows]),
                "text": picked.get_column(text_column).cast(pl.String).fill_null(""),
            }, schema=schema))
        base += batch.height
        if hi == wanted.size:
            break
    return pl.concat(found) if found else pl.DataFrame(schema=schema)


class _NgramProbe:
    """Streaming n-gram pass: hold the test n-gram hashes, probe every training batch against them.

    Hits are kept as (test n-gram, training row, position) so the spans can be aligned afterwards
    without tokenising any training text twice; hits of n-grams that turn out to be common (in more
    than `max_doc_freq` documents) are dropped as they are found, so memory follows the test set.
    """

    def __init__(self, stage: LeakageAudit, test_tok: Tokens):
        self.n = stage.n
        self.max_doc_freq = stage.max_doc_freq
        hashes, item, pos = ngram_hashes(test_tok.hashes, test_tok.counts, self.n)
        self.unique, inverse = np.unique(hashes, return_inverse=True)
        self.test_table = pl.DataFrame({"u": inverse.astype(np.int64), "item": item, "test_pos": pos})
        self.doc_freq = np.zeros(self.unique.size, np.int64)
        # A 4 MB presence table on the low hash bits rejects almost every training n-gram with one
        # cache-friendly lookup; only the few survivors pay for the binary search.
        self.presence = np.zeros(1 << 22, bool)
        self.presence[(self.unique & np.uint64((1 << 22) - 1)).astype(np.int64)] = True
        self.hits: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.stored = 0

    def add_batch(self, tok: Tokens, base: int) -> None:
        if self.unique.size == 0:
            return
        hashes, doc, pos = ngram_hashes(tok.hashes, tok.counts, self.n)
        maybe = np.flatnonzero(self.presence[(hashes & np.uint64((1 << 22) - 1)).astype(np.int64)])
        hashes, doc, pos = hashes[maybe], doc[maybe], pos[maybe]
        index = np.searchsorted(self.unique, hashes)
        index[index == self.unique.size] = 0
        hit = self.unique[index] == hashes
        if not hit.any():
            return
        u, d, p = index[hit], doc[hit], pos[hit]
        # Document frequency counts documents: each (n-gram, document) pair once.
        pairs = np.unique(u.astype(np.int64) * (tok.counts.size + 1) + d)
        self.doc_freq += np.bincount(pairs // (tok.counts.size + 1), minlength=self.unique.size)
        self.hits.append((u.astype(np.int64), d + base, p))
        self.stored += u.size
        if self.stored > 4 * (self.max_doc_freq + 1) * max(self.unique.size, 1024):
            self._compact()

    def _compact(self) -> None:
        if not self.hits:
            return
        u, d, p = (np.concatenate(parts) for parts in zip(*self.hits))
        keep = self.doc_freq[u] <= self.max_doc_freq
        self.hits = [(u[keep], d[keep], p[keep])]
        self.stored = int(keep.sum())

    def common_count(self) -> int:
        return int((self.doc_freq > self.max_doc_freq).sum())

    def matched_docs(self) -> np.ndarray:
        self._compact()
        return np.unique(self.hits[0][1]) if self.hits else np.empty(0, np.int64)

    def resolve(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Aligned spans of (test item, training document) from the kept hit positions."""
        empty_items = pl.DataFrame(schema={"item": pl.Int64, "matched_ngrams": pl.Int64, "longest_span_tokens": pl.Int64})
        self._compact()
        if not self.hits or self.hits[0][0].size == 0:
            return empty_items, pl.DataFrame()
        u, d, p = self.hits[0]
        train_table = pl.DataFrame({"u": u, "doc": d, "train_pos": p})
        joined = self.test_table.join(train_table, on="u")
        per_item = joined.group_by("item").agg(pl.col("test_pos").n_unique().alias("matched_ngrams"))
        pair_shared = joined.group_by(["item", "doc"]).agg(pl.col("test_pos").n_unique().alias("shared"))
        # A span is a run of consecutive n-gram positions on one diagonal (same train - test offset).
        spans = (
            joined.with_columns(diag=pl.col("train_pos") - pl.col("test_pos"))
            .unique(["item", "doc", "diag", "test_pos"])
            .with_columns(
                run=pl.col("test_pos") - pl.col("test_pos").rank("ordinal").over(["item", "doc", "diag"]).cast(pl.Int64)
            )
            .group_by(["item", "doc", "diag", "run"])
            .agg(pl.col("test_pos").min().alias("test_tok_start"), pl.len().cast(pl.Int64).alias("ngrams"))
            .with_columns(
                span_tokens=pl.col("ngrams") + (self.n - 1),
                train_tok_start=pl.col("test_tok_start") + pl.col("diag"),
            )
            .join(pair_shared, on=["item", "doc"])
            .drop(["diag", "run"])
        )
        longest = spans.group_by("item").agg(pl.col("span_tokens").max().alias("longest_span_tokens"))
        return per_item.join(longest, on="item"), spans


class _ChunkSearch:
    """Streaming chunk pass: embed each training batch's chunks, keep the k best per test chunk."""

    def __init__(self, stage: LeakageAudit, test_tok: Tokens):
        self.size = stage.chunk_tokens
        self.k = stage.k
        self.backend, self.model, self.batch_size = stage.backend, stage.model, stage.embed_batch_size
        self.test_hashes = test_tok.hashes
        self.stride = stage.chunk_stride or max(stage.chunk_tokens // 2, 1)
        self.item, starts, self.lengths, texts = token_chunks(test_tok, self.size, self.stride)
        self.test_tok_start = starts - test_tok.offsets[:-1][self.item]
        self.test_tokens = _padded(test_tok.hashes, starts, self.lengths, self.size)
        self.vectors = embed_chunks(texts, self.backend, self.model, self.batch_size) if texts else None
        t = self.item.size
        self.sim = np.full((t, self.k), -np.inf, np.float32)
        self.doc = np.full((t, self.k), -1, np.int64)
        self.train_tok_start = np.zeros((t, self.k), np.int64)
        # The k best training chunks' tokens, so the overlap ratio is computed once, at the end, for
        # the final neighbours only (memory: test chunks x k x chunk_tokens x 8 bytes).
        self.cand_tokens = np.zeros((t, self.k, self.size), np.uint64)
        self.cand_lengths = np.zeros((t, self.k), np.int64)
        self.ratio = np.zeros((t, self.k), np.float32)
        self.train_chunks = 0

    def add_batch(self, tok: Tokens, base: int) -> None:
        import faiss

        if self.vectors is None:
            return
        doc, starts, lengths, texts = token_chunks(tok, self.size, self.stride)
        if not texts:
            return
        self.train_chunks += len(texts)
        vectors = embed_chunks(texts, self.backend, self.model, self.batch_size)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors, np.float32))
        kk = min(self.k, len(texts))
        sim, nn = index.search(np.ascontiguousarray(self.vectors, np.float32), kk)
        within_doc = starts - tok.offsets[:-1][doc]
        all_sim = np.concatenate([self.sim, sim], axis=1)
        order = np.argsort(-all_sim, axis=1, kind="stable")[:, : self.k]
        if not (order >= self.k).any():
            return  # nothing in this batch beats the neighbours already kept
        take = np.take_along_axis
        batch_tokens = _padded(tok.hashes, starts[nn].reshape(-1), lengths[nn].reshape(-1), self.size)
        batch_tokens = batch_tokens.reshape(nn.shape[0], kk, self.size)
        self.sim = take(all_sim, order, 1)
        self.doc = take(np.concatenate([self.doc, doc[nn] + base], axis=1), order, 1)
        self.train_tok_start = take(np.concatenate([self.train_tok_start, within_doc[nn]], axis=1), order, 1)
        self.cand_lengths = take(np.concatenate([self.cand_lengths, lengths[nn]], axis=1), order, 1)
        self.cand_tokens = take(np.concatenate([self.cand_tokens, batch_tokens], axis=1), order[:, :, None], 1)

    def _overlap_ratios(self) -> None:
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
        self.ratio = ratio

    def candidate_docs(self) -> np.ndarray:
        return np.unique(self.doc[(self.doc >= 0) & np.isfinite(self.sim)])

    def resolve(self, n_items: int, stage: LeakageAudit) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        self._overlap_ratios()
        t, k = self.sim.shape
        valid = self.doc >= 0
        table = pl.DataFrame({
            "item": np.repeat(self.item, k),
            "chunk_tokens": np.repeat(self.lengths, k).astype(np.int64),
            "test_tok_start": np.repeat(self.test_tok_start, k),
            "rank": np.tile(np.arange(k), t),
            "sim": np.where(valid, self.sim, np.nan).reshape(-1).astype(np.float64),
            "ratio": self.ratio.reshape(-1).astype(np.float64),
            "doc": self.doc.reshape(-1),
            "train_tok_start": self.train_tok_start.reshape(-1),
        }).filter(pl.col("doc") >= 0)
        per_item = table.group_by("item").agg(
            pl.col("ratio").max().alias("chunk_overlap_ratio"), pl.col("sim").max().alias("max_similarity")
        )
        # The best chunk evidence: highest overlap ratio, then highest similarity.
        best = (
            table.sort(["ratio", "sim", "doc", "train_tok_start", "test_tok_start"],
                       descending=[True, True, False, False, False])
            .unique("item", keep="first", maintain_order=True)
            .select(
                "item", "doc", pl.col("chunk_tokens").alias("span_tokens"), "test_tok_start", "train_tok_start"
            )
        )
        chunk_hits = table.filter(pl.col("ratio") > stage.chunk_partial).with_columns(
            kind=pl.lit("chunk"), score=pl.col("ratio")
        )
        semantic_hits = table.filter(pl.col("sim") >= stage.similarity_thresholds[0]).with_columns(
            kind=pl.lit("semantic"), score=pl.col("sim")
        )
        matches = pl.concat([chunk_hits, semantic_hits]).rename({"chunk_tokens": "span_tokens"})
        return per_item, best, matches


class _Spans:
    """Token positions to character spans and text, for test items and the fetched training documents.

    Training offsets are computed one document at a time, in document order, and not kept: memory
    stays at the fetched texts however long the matched documents are.
    """

    def __init__(self, test_texts: list[str], test_tok: Tokens, starts: np.ndarray, ends: np.ndarray,
                 train_docs: pl.DataFrame):
        self.test_texts = test_texts
        self.test_base = test_tok.offsets
        self.test_counts = test_tok.counts
        self.test_starts, self.test_ends = starts, ends
        self.train_texts = train_docs.get_column("text").to_list()
        self.train_row = {d: i for i, d in enumerate(train_docs.get_column("doc").to_list())}
        self._cached: tuple[int, np.ndarray | None] = (-1, None)

    def _train_offsets(self, row: int) -> np.ndarray:
        if self._cached[0] != row:
            text = self.train_texts[row]
            self._cached = (row, word_spans(text))
        return self._cached[1]

    def _test_chars(self, item, tok_start, span):
        if item is None or tok_start is None or span is None:
            return None, None
        last = min(tok_start + span, int(self.test_counts[item])) - 1
        if tok_start < 0 or last < tok_start:
            return None, None
        s, e = int(self.test_starts[self.test_base[item] + tok_start]), int(self.test_ends[self.test_base[item] + last])
        return (s, e) if s >= 0 and e >= 0 else (None, None)

    def _train_chars(self, doc, tok_start, span):
        row = self.train_row.get(doc) if doc is not None else None
        if row is None or tok_start is None or span is None:
            return None, None
        offsets = self._train_offsets(row)
        last = min(tok_start + span, len(offsets)) - 1
        if tok_start < 0 or last < tok_start:
            return None, None
        return int(offsets[tok_start, 0]), int(offsets[last, 1])

    def char_spans(self, frame: pl.DataFrame) -> pl.DataFrame:
        frame = frame.with_row_index("_order").sort("doc", nulls_last=True)
        cols = {k: [] for k in ("test_char_start", "test_char_end", "train_char_start", "train_char_end")}
        for item, doc, span, ts, rs in frame.select(
            "item", "doc", "span_tokens", "test_tok_start", "train_tok_start"
        ).iter_rows():
            a = self._test_chars(item, ts, span)
            b = self._train_chars(doc, rs, span)
            cols["test_char_start"].append(a[0])
            cols["test_char_end"].append(a[1])
            cols["train_char_start"].append(b[0])
            cols["train_char_end"].append(b[1])
        frame = frame.with_columns(*(pl.Series(k, v, pl.Int64) for k, v in cols.items()))
        return frame.sort("_order").drop("_order")

    def attach(self, findings: pl.DataFrame) -> pl.DataFrame:
        findings = self.char_spans(findings)
        evidence, train_evidence = [], []
        for item, doc, s, e, ts, te in findings.select(
            "item", "doc", "test_char_start", "test_char_end", "train_char_start", "train_char_end"
        ).iter_rows():
            evidence.append(self.test_texts[item][s:e] if s is not None else None)
            row = self.train_row.get(doc) if doc is not None else None
            train_evidence.append(self.train_texts[row][ts:te] if row is not None and ts is not None else None)
        return findings.with_columns(
            pl.Series("evidence", evidence, pl.String), pl.Series("train_evidence", train_evidence, pl.String)
        )


def _matches_table(frames: list[pl.DataFrame], findings: pl.DataFrame, spans: _Spans,
                   train_docs: pl.DataFrame) -> pl.DataFrame:
    columns = ["item", "doc", "kind", "score", "span_tokens", "test_tok_start", "train_tok_start"]
    frames = [f.select(pl.col(c).cast(pl.Float64 if c == "score" else pl.String if c == "kind" else pl.Int64)
                       for c in columns) for f in frames if f.height]
    schema = {"test_id": pl.String, "train_id": pl.String, "kind": pl.String, "score": pl.Float64,
              "span_tokens": pl.Int64, "test_char_start": pl.Int64, "test_char_end": pl.Int64,
              "train_char_start": pl.Int64, "train_char_end": pl.Int64, "verdict": pl.String}
    if not frames:
        return pl.DataFrame(schema=schema)
    table = spans.char_spans(pl.concat(frames))
    table = table.join(findings.select("item", "test_id", "verdict"), on="item", how="left").join(
        train_docs.select("doc", "train_id"), on="doc", how="left"
    )
    return table.sort(
        ["item", "kind", "score", "doc", "test_tok_start", "train_tok_start"],
        descending=[False, False, True, False, False, False],
    ).select(list(schema))


# ------------------------------------------------------------------------ planted contamination

PLANT_KINDS = ("verbatim", "surface", "partial", "edited", "reordered", "rewritten")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def plant(text: str, kind: str, rng: np.random.Generator, host: str = "") -> str:
    """A test item made from training `text` the way leaks happen, for studies and calibration.

    verbatim: the text itself; surface: case, punctuation and whitespace changed; partial: a
    40-word span of it inside unrelated `host` text; edited: about one word in six replaced,
    deleted or swapped with its neighbour (breaks every 13-gram); reordered: its sentences in
    reverse order with every sentence edited a little; rewritten: words shuffled within each
    sentence and a third of them dropped (nothing of the word order survives).
    """
    words = text.split()
    if kind == "verbatim":
        return text
    if kind == "surface":
        out = [w.upper() if i % 2 else w.lower() for i, w in enumerate(words)]
        return "  ".join(re.sub(r"[.,;:]", " ; ", w) for w in out)
    if kind == "partial":
        start = int(rng.integers(0, max(len(words) - 40, 1)))
        host_words = host.split()
        cut = len(host_words) // 2
        return " ".join(host_words[:cut] + words[start : start + 40] + host_words[cut:])
    if kind == "edited":
        out = list(words)
        for i in range(int(rng.integers(0, 6)), len(out) - 1, 6):
            action = rng.integers(0, 3)
            if action == 0:
                out[i] = "the"
            elif action == 1:
                out[i] = ""
            else:
                out[i], out[i + 1] = out[i + 1], out[i]
        return " ".join(w for w in out if w)
    sentences = [s for s in _SENTENCE_END.split(" ".join(words)) if s]
    if kind == "reordered":
        return " ".join(plant(s, "edited", rng) for s in reversed(sentences))
    if kind == "rewritten":
        out = []
        for sentence in sentences:
            ws = sentence.split()
            ws = [ws[i] for i in rng.permutation(len(ws))]
            keep = rng.random(len(ws)) > 1 / 3
            out.append(" ".join(w for w, k in zip(ws, keep) if k))
        return " ".join(out)
    raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(PLANT_KINDS)}")


# -------------------------------------------------------------------------------- decontaminate


def merge_spans(starts: np.ndarray, ends: np.ndarray) -> list[tuple[int, int]]:
    """Union of half-open character intervals, sorted."""
    merged: list[tuple[int, int]] = []
    for s, e in sorted(zip(starts.tolist(), ends.tolist())):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


class Decontaminate(Stage):
    """Remove leaked content from the training corpus, using a `leakage_audit` step's `matches`.

    `mode: cut` follows GPT-3: each matched span is cut out with `margin_chars` either side, the
    document splits into pieces, pieces shorter than `min_piece_chars` go, and a document cut into
    more than `max_pieces` pieces goes whole. `mode: drop` removes every matched document. Whatever
    is removed lands in the side output `removed` (id, reason, text, span), so nothing goes silently.
    Kept pieces of a cut document become rows `<id>#<k>`; the column `decontaminated_from` names the
    original id (null for untouched rows).

    Parameters:
        text_column: column holding the training text
        id_column: column holding training ids (must match `train_id` in matches)
        mode: 'cut' removes matched spans (GPT-3), 'drop' removes whole documents
        kinds: which match kinds act: any of 'ngram', 'chunk', 'semantic'
        min_score: ignore matches scoring below this (n-gram/chunk overlap fraction, or similarity)
        margin_chars: characters also removed either side of a matched span (GPT-3: 200)
        min_piece_chars: drop kept pieces shorter than this (GPT-3: 200)
        max_pieces: drop a document whole when cutting leaves more pieces than this (GPT-3: 10)
    """

    name = "decontaminate"
    inputs = ("data", "matches")
    allow_empty_input = True

    def __init__(
        self,
        text_column: str = "text",
        id_column: str = "id",
        mode: Literal["cut", "drop"] = "cut",
        kinds: list[str] | None = None,
        min_score: float = 0.0,
        margin_chars: int = 200,
        min_piece_chars: int = 200,
        max_pieces: int = 10,
    ):
        self.text_column = text_column
        self.id_column = id_column
        self.mode = mode
        self.kinds = kinds
        self.min_score = min_score
        self.margin_chars = margin_chars
        self.min_piece_chars = min_piece_chars
        self.max_pieces = max_pieces

    def validate(self) -> None:
        if self.mode not in ("cut", "drop"):
            raise ParamError("mode", f"must be 'cut' or 'drop', got {self.mode!r}")
        bad = [k for k in (self.kinds or []) if k not in MATCH_KINDS]
        if bad:
            raise ParamError("kinds", f"unknown kind {bad[0]!r}; choose from {', '.join(MATCH_KINDS)}")
        if self.margin_chars < 0 or self.min_piece_chars < 0:
            raise ParamError("margin_chars", "margin_chars and min_piece_chars must be >= 0")
        if self.max_pieces < 1:
            raise ParamError("max_pieces", f"must be >= 1, got {self.max_pieces}")

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        return {
            "data": {self.text_column: "text_column", self.id_column: "id_column"},
            "matches": {"train_id": None, "kind": None, "score": None,
                        "train_char_start": None, "train_char_end": None, "test_id": None},
        }

    def run(self, ctx: Context, data: Dataset, matches: Dataset):
        kinds = self.kinds or ["ngram"]
        hits = matches.collect().filter(pl.col("kind").is_in(kinds) & (pl.col("score") >= self.min_score))
        by_doc = hits.group_by("train_id").agg(
            pl.col("train_char_start"), pl.col("train_char_end"), pl.col("test_id").unique().sort(), pl.col("kind").unique().sort()
        )
        targets = {
            row["train_id"]: row for row in by_doc.iter_rows(named=True)
        }
        removed_rows: list[dict] = []
        stats = {"documents_in": 0, "documents_dropped": 0, "documents_cut": 0, "pieces_kept": 0,
                 "chars_in": 0, "chars_removed": 0}

        def batches():
            for batch in data.iter_batches():
                stats["documents_in"] += batch.height
                stats["chars_in"] += int(batch.get_column(self.text_column).str.len_chars().sum() or 0)
                ids = batch.get_column(self.id_column).cast(pl.String)
                touched = ids.is_in(list(targets)) if targets else pl.Series([False] * batch.height)
                untouched = batch.filter(~touched).with_columns(decontaminated_from=pl.lit(None, pl.String))
                out = [untouched]
                for row in batch.filter(touched).iter_rows(named=True):
                    out.extend(self._clean_one(row, targets[str(row[self.id_column])], removed_rows, stats))
                out = [f for f in out if f.height]
                if out:
                    yield pl.concat(out, how="diagonal_relaxed").select(
                        list(batch.columns) + ["decontaminated_from"]
                    ).with_columns(pl.col(self.id_column).cast(pl.String))

        yield from batches()
        removed = pl.DataFrame(removed_rows, schema={
            "train_id": pl.String, "reason": pl.String, "char_start": pl.Int64, "char_end": pl.Int64,
            "text": pl.String, "test_ids": pl.List(pl.String), "kinds": pl.List(pl.String),
        })
        ctx.write_side_output("removed", removed)
        stats["documents_matched"] = len(targets)
        for k, v in stats.items():
            ctx.record(k, v)

    def _clean_one(self, row: dict, target: dict, removed: list[dict], stats: dict) -> list[pl.DataFrame]:
        text = row[self.text_column] or ""
        doc_id = str(row[self.id_column])
        base = {"train_id": doc_id, "test_ids": target["test_id"], "kinds": target["kind"]}
        starts = np.array([s for s in target["train_char_start"] if s is not None], np.int64)
        ends = np.array([e for e in target["train_char_end"] if e is not None], np.int64)
        if self.mode == "drop" or starts.size == 0:
            reason = "matched test item" if self.mode == "drop" else "matched test item (no character span to cut)"
            removed.append({**base, "reason": reason, "char_start": 0, "char_end": len(text), "text": text})
            stats["documents_dropped"] += 1
            stats["chars_removed"] += len(text)
            return []
        cuts = merge_spans(np.maximum(starts - self.margin_chars, 0), np.minimum(ends + self.margin_chars, len(text)))
        pieces, cursor = [], 0
        for s, e in cuts:
            pieces.append((cursor, s))
            removed.append({**base, "reason": f"matched span +/- {self.margin_chars} chars", "char_start": s,
                            "char_end": e, "text": text[s:e]})
            cursor = e
        pieces.append((cursor, len(text)))
        kept = []
        for s, e in pieces:
            if e - s >= max(self.min_piece_chars, 1):
                kept.append((s, e))
            elif e > s:
                removed.append({**base, "reason": f"piece shorter than {self.min_piece_chars} chars",
                                "char_start": s, "char_end": e, "text": text[s:e]})
        if len(kept) > self.max_pieces:
            for s, e in kept:
                removed.append({**base, "reason": f"document cut into more than {self.max_pieces} pieces",
                                "char_start": s, "char_end": e, "text": text[s:e]})
            kept = []
        stats["chars_removed"] += len(text) - sum(e - s for s, e in kept)
        if not kept:
            stats["documents_dropped"] += 1
            return []
        stats["documents_cut"] += 1
        stats["pieces_kept"] += len(kept)
        rows = []
        for k, (s, e) in enumerate(kept):
            piece = dict(row)
            piece[self.text_column] = text[s:e]
            piece[self.id_column] = f"{doc_id}#{k}"
            piece["decontaminated_from"] = doc_id
            rows.append(piece)
        return [pl.DataFrame(rows, infer_schema_length=None)]

    @classmethod
    def example(cls):
        from pydoc_data.topics import topics

        names = sorted(topics)[:6]
        data = pl.DataFrame({"id": names, "text": [topics[t] for t in names]})
        text = topics[names[2]]
        matches = pl.DataFrame({
            "test_id": ["q1"], "train_id": [names[2]], "kind": ["ngram"], "score": [1.0],
            "train_char_start": [min(300, len(text) // 2)], "train_char_end": [min(400, len(text))],
        })
        return {"margin_chars": 50, "min_piece_chars": 50}, {"data": data, "matches": matches}


__all__ = [
    "PLANT_KINDS", "Decontaminate", "LeakageAudit", "Tokens", "plant", "longest_common_run", "merge_spans",
    "ngram_hashes", "token_offsets", "tokenize",
]
