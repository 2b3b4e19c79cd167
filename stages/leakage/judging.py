"""Judging each test item from what the evidence kinds found, once the training corpus has streamed past them.

The verdict (the kinds' own, combined), the evidence an item is shown with, character spans of the matches;
and the statistics of the run. Used by the `leakage_audit` stage's `finish` (audit.py).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.stage import Context
from stages.leakage.evidence import SPAN_COLUMNS, TRAIN_SPAN, VERDICTS, Evidence, TestSide, with_train_span
from stages.leakage.spans import SpanFinder, match_rows, matches_table
from stages.text import token_offsets


def judge(side: TestSide, evidences: list[Evidence], classes: list[type[Evidence]], ids: pl.Series,
          train_docs: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Findings (one row per test item, in item order, with `doc`) and the matches table."""
    findings = pl.DataFrame({"item": np.arange(side.n_items, dtype=np.int64), "test_id": ids})
    match_frames, bests = [], []
    for ev in evidences:
        resolved = ev.resolve()
        findings = findings.join(resolved.per_item, on="item", how="left")
        match_frames.append(resolved.matches)
        bests.append(with_train_span(resolved.best, SPAN_COLUMNS).with_columns(evidence_kind=pl.lit(ev.kind)))
    for cls in classes:  # kinds that did not run: their columns, as nulls
        findings = findings.with_columns(pl.lit(None, dtype).alias(c) for c, dtype in cls.columns.items()
                                         if c not in findings.columns)
    contaminated, partial, ranked = pl.lit(False), pl.lit(False), []
    for ev, best in zip(evidences, bests):
        c, p = ev.verdict()
        contaminated, partial = contaminated | c, partial | p
        said = findings.filter(c | p).get_column("item").implode()
        ranked.append(best.with_columns(said=pl.col("item").is_in(said)))
    findings = findings.with_columns(
        verdict=pl.when(contaminated).then(pl.lit("contaminated")).when(partial).then(pl.lit("partial"))
        .otherwise(pl.lit("clean"))
    )
    # Each item's evidence: the best span of the first kind (in evidence order) that flagged it, else of the
    # first that has one (a chunk kind's near-miss was shown for an item only the paraphrase kind flagged).
    empty = pl.DataFrame(schema={**SPAN_COLUMNS, TRAIN_SPAN: pl.Int64, "evidence_kind": pl.String, "said": pl.Boolean})
    evidence = (pl.concat([empty, *ranked]).sort("said", descending=True, maintain_order=True)
                .unique("item", keep="first", maintain_order=True).drop("said"))
    findings = findings.join(evidence, on="item", how="left").sort("item")
    starts, ends, _ = token_offsets(side.texts, side.tokens.counts)
    spans = SpanFinder(side.texts, side.tokens, starts, ends, train_docs)
    findings, matches = spans.attach(findings, match_rows(match_frames))
    findings = findings.with_columns(
        pl.col("doc").replace_strict(train_docs["doc"], train_docs["train_id"], default=None).alias("train_id")
    )
    return findings, matches_table(matches, findings, train_docs)


def record_stats(ctx: Context, side: TestSide, evidences: list[Evidence], verdicts: pl.Series, rows: int,
                 train_bytes: int, timings: dict, n: int) -> None:
    """The run's statistics: sizes, verdict counts, each kind's own, n-gram throughput and timings."""
    ctx.record("test_items", side.n_items)
    ctx.record("train_rows", rows)
    ctx.record("train_mb", round(train_bytes / 1e6, 3))
    ctx.record("verdicts", {v: int((verdicts == v).sum()) for v in VERDICTS})
    for ev in evidences:
        for key, value in ev.stats().items():
            ctx.record(key, value)
    ctx.record("items_shorter_than_n", int((side.tokens.counts < n).sum()))
    if "ngram_s" in timings:
        ctx.record("ngram_mb_per_s", round(train_bytes / 1e6 / max(timings["tokenize_s"] + timings["ngram_s"], 1e-9), 2))
    if "chunk_s" in timings or "semantic_s" in timings:
        ctx.record("chunk_pass_s", round(timings.get("chunk_s", 0.0) + timings.get("semantic_s", 0.0), 3))
    ctx.record("timings_s", {k: round(v, 3) for k, v in timings.items()})
