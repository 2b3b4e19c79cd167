"""From token positions to character spans and text: evidence shown as what a person can read."""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.io import Dataset
from stages.leakage.evidence import MATCH_COLUMNS, TRAIN_SPAN, with_train_span
from stages.text import Tokens, ascii_word_spans, word_offsets

# The `matches` side output: one row per (test item, training document, kind) piece of evidence.
MATCHES_SCHEMA = {"test_id": pl.String, "train_id": pl.String, "kind": pl.String, "score": pl.Float64,
                  "span_tokens": pl.Int64, "test_char_start": pl.Int64, "test_char_end": pl.Int64,
                  "train_char_start": pl.Int64, "train_char_end": pl.Int64, "verdict": pl.String}
SPAN_KEYS = ("item", "doc", "span_tokens", "test_tok_start", "train_tok_start", TRAIN_SPAN)
CHAR_COLUMNS = ("test_char_start", "test_char_end", "train_char_start", "train_char_end")


def item_ids(df: pl.DataFrame, id_column: str) -> pl.Series:
    if id_column in df.columns:
        return df.get_column(id_column).cast(pl.String)
    return pl.Series("id", [str(i) for i in range(df.height)], pl.String)


def fetch_train_docs(train: Dataset, docs: list[int], text_column: str, id_column: str,
                      batch_rows: int, first_row: int = 0) -> pl.DataFrame:
    """Read only the training rows that evidence points at (by row number in stream order), streaming.

    `train` may be one partition of the corpus, whose first row is row `first_row` of the corpus: `doc` and,
    without an id column, `train_id` name rows by their corpus-wide number, whatever the partitioning.

    A second read of the rows, not a copy kept while the corpus streamed past: kept copies, allocated
    between the batches' buffers, left ~25 MB more resident after the stream on the 31.5 MB benchmark
    (8% of the audit's peak), for ~0.05 s saved. Tried again in wave 15 with the rows a kind may name
    copied out batch by batch: 0.07-0.09 s saved at 31.5 MB, but peak RSS on the 377 MB distinct corpus rose
    from 318-323 to 349-366 MB (rows hit by n-grams that turn out common are copied before they are known
    to be), against the issue's "peak RSS no higher".
    """
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
                "doc": rows + first_row,
                "train_id": picked.get_column(id_column).cast(pl.String) if has_id
                else pl.Series([str(r) for r in (rows + first_row).tolist()], dtype=pl.String),
                # Copied out: a gathered string column still points into the whole batch's buffers, so a few kept
                # documents would pin every batch they came from. Arrow's large strings are one new buffer of
                # the picked texts only (10.7 MB of 31.5 MB fetched: 0.010-0.021 s through Python strings, 0.002-0.009 s so).
                "text": pl.from_arrow(picked.get_column(text_column).cast(pl.String).fill_null("").to_arrow(
                    compat_level=pl.CompatLevel.oldest())),
            }, schema=schema))
        base += batch.height
        if hi == wanted.size:
            break
    return pl.concat(found) if found else pl.DataFrame(schema=schema)


class SpanFinder:
    """Token positions to character spans and text, for test items and the fetched training documents.

    Vectorised: the training documents are split into words a group at a time (`GROUP_CHARS` characters
    of text each, in document order), and every span that points into a group is looked up at once. The
    offsets of a group are not kept: memory stays near the fetched texts however long the documents are
    (a whole 31.5 MB corpus's fetched documents at once added ~30 MB to the audit's peak). A group of 1 M
    characters holds a few MB of offsets, under a 4 MB training batch's tokens; groups of 256 K characters
    made the 10.7 MB fetched on the 31.5 MB benchmark 40 groups and took ~0.052 s, 1 M ~0.037 s.
    `train_docs` (`fetch_train_docs`' frame) must be sorted by `doc`.
    """

    GROUP_CHARS = 1 << 20

    def __init__(self, test_texts: pl.Series, test_tok: Tokens, starts: np.ndarray, ends: np.ndarray,
                 train_docs: pl.DataFrame):
        self.test_texts = test_texts
        self.test_base = test_tok.offsets
        self.test_counts = test_tok.counts
        self.test_starts, self.test_ends = starts, ends
        self.train_text = train_docs.get_column("text")
        self.train_doc = train_docs.get_column("doc").to_numpy()

    def _test_spans(self, item: np.ndarray, start: np.ndarray, span: np.ndarray, ok: np.ndarray):
        ok = ok & (item >= 0) & (item < self.test_counts.size)
        it = np.where(ok, item, 0)
        last = np.minimum(start + span, self.test_counts[it]) - 1
        ok &= (start >= 0) & (last >= start)
        base = self.test_base[it]
        s = np.where(ok, self.test_starts[np.where(ok, base + start, 0)], -1) if self.test_starts.size else np.full(ok.size, -1)
        e = np.where(ok, self.test_ends[np.where(ok, base + last, 0)], -1) if self.test_ends.size else np.full(ok.size, -1)
        ok &= (s >= 0) & (e >= 0)
        return np.where(ok, s, -1), np.where(ok, e, -1)

    def _train_spans(self, doc: np.ndarray, start: np.ndarray, span: np.ndarray, ok: np.ndarray):
        out_s, out_e = np.full(doc.size, -1, np.int64), np.full(doc.size, -1, np.int64)
        if not self.train_doc.size:
            return out_s, out_e
        row = np.clip(np.searchsorted(self.train_doc, doc), 0, self.train_doc.size - 1)
        ok = ok & (self.train_doc[row] == doc) & (start >= 0) & (span > 0)
        chars = self.train_text.str.len_chars().to_numpy().astype(np.int64)
        plain = self.train_text.str.len_bytes().to_numpy() == chars
        # ASCII documents (most of any corpus) and the others in groups of their own: an ASCII group's words
        # are tokenize's byte spans, read only where a span points (`ascii_word_spans`); every word's
        # character offsets are worked out only for the others (`word_offsets`).
        for ascii_ in (True, False):
            members = np.flatnonzero(plain == ascii_)
            group = np.cumsum(chars[members]) // self.GROUP_CHARS
            mine = ok & (plain[row] == ascii_)
            for g in np.unique(group[np.searchsorted(members, row[mine])]).tolist():
                rows = members[group == g]
                at = np.flatnonzero(mine & (row >= rows[0]) & (row <= rows[-1]))
                r = np.searchsorted(rows, row[at])
                texts = self.train_text.gather(rows)
                if ascii_:
                    starts, lengths, counts, text_starts = ascii_word_spans(texts)
                else:
                    starts, ends, counts = word_offsets(texts, "word")
                first = np.cumsum(counts) - counts
                last = np.minimum(start[at] + span[at], counts[r]) - 1
                fine = last >= start[at]
                at, r, last = at[fine], r[fine], last[fine]
                if ascii_:
                    out_s[at] = starts[first[r] + start[at]] - text_starts[r]
                    out_e[at] = starts[first[r] + last] + lengths[first[r] + last] - text_starts[r]
                else:
                    out_s[at], out_e[at] = starts[first[r] + start[at]], ends[first[r] + last]
        return out_s, out_e

    def char_spans(self, *frames: pl.DataFrame) -> list[pl.DataFrame]:
        """Each frame with its character spans (null where a position is missing or out of range)."""
        keys = pl.concat([f.select(pl.col(k).cast(pl.Int64) for k in SPAN_KEYS) for f in frames])
        item, doc, span, ts, rs, _ = (keys.get_column(k) for k in SPAN_KEYS)
        values = {k: keys.get_column(k).fill_null(-1).to_numpy() for k in SPAN_KEYS}
        known = span.is_not_null().to_numpy()
        test = self._test_spans(values["item"], values["test_tok_start"], values["span_tokens"],
                                known & item.is_not_null().to_numpy() & ts.is_not_null().to_numpy())
        train = self._train_spans(values["doc"], values["train_tok_start"], values[TRAIN_SPAN],
                                  known & doc.is_not_null().to_numpy() & rs.is_not_null().to_numpy())
        spans = pl.DataFrame(dict(zip(CHAR_COLUMNS, (*test, *train)))).select(
            pl.when(pl.col(k) >= 0).then(pl.col(k)).alias(k) for k in CHAR_COLUMNS)
        out, lo = [], 0
        for frame in frames:
            out.append(frame.with_columns(spans.get_column(c).slice(lo, frame.height) for c in CHAR_COLUMNS))
            lo += frame.height
        return out

    def attach(self, findings: pl.DataFrame, matches: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Findings with their evidence text (test and training side) and matches with their character spans.

        The evidence is cut in polars (`str.slice` counts characters, as Python's slices do): the fetched
        documents (10.7 MB on the 31.5 MB benchmark) never become Python strings.
        """
        findings, matches = self.char_spans(findings, matches)
        doc = findings.get_column("doc").fill_null(-1).to_numpy()  # -1: no document (fetched ones are >= 0)
        if self.train_doc.size:
            row = np.clip(np.searchsorted(self.train_doc, doc), 0, self.train_doc.size - 1)
            found, train = self.train_doc[row] == doc, self.train_text.gather(row)
        else:
            found, train = np.zeros(findings.height, bool), pl.repeat(None, findings.height, dtype=pl.String, eager=True)
        cut = pl.DataFrame({"test": self.test_texts.gather(findings.get_column("item")), "train": train,
                            "found": found}).hstack(findings.select(CHAR_COLUMNS)).select(
            _cut("test", "test_char_start", "test_char_end").alias("evidence"),
            pl.when("found").then(_cut("train", "train_char_start", "train_char_end")).alias("train_evidence"),
        )
        return findings.with_columns(cut.get_column("evidence"), cut.get_column("train_evidence")), matches


def _cut(text: str, start: str, end: str) -> pl.Expr:
    """`text[start:end]` (null without a start), as `SpanFinder.attach` cuts evidence."""
    return pl.col(text).str.slice(pl.col(start), pl.col(end) - pl.col(start))


def match_rows(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """The evidence kinds' match rows in one frame (`MATCH_COLUMNS` and `TRAIN_SPAN`), character spans still to come."""
    frames = [with_train_span(f, MATCH_COLUMNS) for f in frames if f.height]
    return pl.concat(frames) if frames else pl.DataFrame(schema={**MATCH_COLUMNS, TRAIN_SPAN: pl.Int64})


def matches_table(table: pl.DataFrame, findings: pl.DataFrame, train_docs: pl.DataFrame) -> pl.DataFrame:
    """The `matches` side output from match rows with their character spans (`SpanFinder.attach`)."""
    table = table.join(findings.select("item", "test_id", "verdict"), on="item", how="left").join(
        train_docs.select("doc", "train_id"), on="doc", how="left"
    )
    return table.sort(
        ["item", "kind", "score", "doc", "test_tok_start", "train_tok_start"],
        descending=[False, False, True, False, False, False],
    ).select(list(MATCHES_SCHEMA))
