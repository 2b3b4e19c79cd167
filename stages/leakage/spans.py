"""From token positions to character spans and text: evidence shown as what a person can read."""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.io import Dataset
from stages.leakage.evidence import MATCH_COLUMNS
from stages.text import Tokens, word_spans

# The `matches` side output: one row per (test item, training document, kind) piece of evidence.
MATCHES_SCHEMA = {"test_id": pl.String, "train_id": pl.String, "kind": pl.String, "score": pl.Float64,
                  "span_tokens": pl.Int64, "test_char_start": pl.Int64, "test_char_end": pl.Int64,
                  "train_char_start": pl.Int64, "train_char_end": pl.Int64, "verdict": pl.String}
SPAN_KEYS = ("item", "doc", "span_tokens", "test_tok_start", "train_tok_start")
CHAR_COLUMNS = ("test_char_start", "test_char_end", "train_char_start", "train_char_end")


def item_ids(df: pl.DataFrame, id_column: str) -> pl.Series:
    if id_column in df.columns:
        return df.get_column(id_column).cast(pl.String)
    return pl.Series("id", [str(i) for i in range(df.height)], pl.String)


def fetch_train_docs(train: Dataset, docs: list[int], text_column: str, id_column: str,
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
                # Copied out (through Python strings): a gathered string column still points into the
                # whole batch's buffers, so a few kept documents would pin every batch they came from.
                "text": pl.Series(picked.get_column(text_column).cast(pl.String).fill_null("").to_list(), dtype=pl.String),
            }, schema=schema))
        base += batch.height
        if hi == wanted.size:
            break
    return pl.concat(found) if found else pl.DataFrame(schema=schema)


class SpanFinder:
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

    def char_spans(self, *frames: pl.DataFrame) -> list[pl.DataFrame]:
        """Each frame with its character spans, in one pass over the training documents for all of them: a
        document is split into words once, however many rows of however many frames point into it."""
        keys = pl.concat([f.select(pl.col(k).cast(pl.Int64) for k in SPAN_KEYS) for f in frames])
        keys = keys.with_row_index("_order").sort("doc", nulls_last=True)
        cols: dict[str, list] = {k: [] for k in CHAR_COLUMNS}
        for item, doc, span, ts, rs in keys.select(*SPAN_KEYS).iter_rows():
            a = self._test_chars(item, ts, span)
            b = self._train_chars(doc, rs, span)
            cols["test_char_start"].append(a[0])
            cols["test_char_end"].append(a[1])
            cols["train_char_start"].append(b[0])
            cols["train_char_end"].append(b[1])
        spans = keys.select("_order").with_columns(pl.Series(k, v, pl.Int64) for k, v in cols.items()).sort("_order")
        out, lo = [], 0
        for frame in frames:
            out.append(frame.with_columns(spans.get_column(c).slice(lo, frame.height) for c in CHAR_COLUMNS))
            lo += frame.height
        return out

    def attach(self, findings: pl.DataFrame, matches: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Findings with their evidence text (test and training side) and matches with their character spans."""
        findings, matches = self.char_spans(findings, matches)
        evidence, train_evidence = [], []
        for item, doc, s, e, ts, te in findings.select(
            "item", "doc", *CHAR_COLUMNS
        ).iter_rows():
            evidence.append(self.test_texts[item][s:e] if s is not None else None)
            row = self.train_row.get(doc) if doc is not None else None
            train_evidence.append(self.train_texts[row][ts:te] if row is not None and ts is not None else None)
        findings = findings.with_columns(
            pl.Series("evidence", evidence, pl.String), pl.Series("train_evidence", train_evidence, pl.String)
        )
        return findings, matches


def match_rows(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """The evidence kinds' match rows in one frame (`MATCH_COLUMNS`), character spans still to come."""
    frames = [f.select(pl.col(c).cast(t) for c, t in MATCH_COLUMNS.items()) for f in frames if f.height]
    return pl.concat(frames) if frames else pl.DataFrame(schema=MATCH_COLUMNS)


def matches_table(table: pl.DataFrame, findings: pl.DataFrame, train_docs: pl.DataFrame) -> pl.DataFrame:
    """The `matches` side output from match rows with their character spans (`SpanFinder.attach`)."""
    table = table.join(findings.select("item", "test_id", "verdict"), on="item", how="left").join(
        train_docs.select("doc", "train_id"), on="doc", how="left"
    )
    return table.sort(
        ["item", "kind", "score", "doc", "test_tok_start", "train_tok_start"],
        descending=[False, False, True, False, False, False],
    ).select(list(MATCHES_SCHEMA))
