"""The evidence protocol: one class per kind of leakage evidence, peers in the audit and the report.

An evidence kind streams over the training corpus once and answers, per test item, with columns of
the findings table, match rows, and its best span. The audit (`audit.py`) holds a list of them and
never names one; the report (`report.py`) draws whatever columns they declare. A new kind is one
subclass plus `register_evidence`; the audit runs it when its name is in `LeakageAudit(evidence=...)`
(the three built-in kinds are switched by the audit's `ngram`, `chunk_overlap` and `semantic`).

Per audit, for each enabled kind (see `Evidence` for the exact signatures):
    ev = Kind(audit, test, shared)          test: the tokenised test side; shared: per-audit resources
    ev.add_batch(batch)                     every training batch, in order (TrainBatch: tokens, texts, base)
    ev.candidate_docs()                     training rows whose text the spans need (read once more)
    ev.resolve() -> Resolved                per-item columns, match rows, best span per item
    ev.verdict() -> (contaminated, partial) polars expressions over the findings columns
    ev.merge(other)                         fold in the state of the same kind over other training rows
    Kind.partial_attributes                 what add_batch accumulates (lets the audit run partitioned)
    Kind.reads_train_sample                 the kind reads shared["train_sample"] when built (corpus statistics)
Class-level declarations feed the report: `columns` (name -> dtype), `scores` (which columns are
score distributions and how to label them), `sort_column` (how worst items rank), `settings(audit, stats)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import polars as pl

from pipeline.registry import add_unique
from stages.text import Tokens

VERDICTS = ("clean", "partial", "contaminated")
# Columns of a match row and of a best-span row, whatever the kind.
MATCH_COLUMNS = {"item": pl.Int64, "doc": pl.Int64, "kind": pl.String, "score": pl.Float64,
                 "span_tokens": pl.Int64, "test_tok_start": pl.Int64, "train_tok_start": pl.Int64}
SPAN_COLUMNS = {"item": pl.Int64, "doc": pl.Int64, "span_tokens": pl.Int64, "test_tok_start": pl.Int64,
                "train_tok_start": pl.Int64}
# Optional in match and best-span rows: the training side's length in words where it is not `span_tokens` (a short
# test chunk against a whole training chunk or passage); absent or null = `span_tokens`, the same on both sides.
TRAIN_SPAN = "train_span_tokens"


def with_train_span(frame: pl.DataFrame, columns: dict[str, Any]) -> pl.DataFrame:
    """`frame`'s `columns` (match or span columns) and its `TRAIN_SPAN`: as given, else `span_tokens`."""
    given = pl.col(TRAIN_SPAN) if TRAIN_SPAN in frame.columns else pl.lit(None, pl.Int64)
    return frame.select(*(pl.col(c).cast(t) for c, t in columns.items()),
                        given.cast(pl.Int64).fill_null(pl.col("span_tokens").cast(pl.Int64)).alias(TRAIN_SPAN))


@dataclass
class TestSide:
    """The test set, held in memory for the whole audit."""

    __test__: ClassVar[bool] = False  # not a pytest test class, despite the name

    texts: pl.Series  # String, nulls as ""
    tokens: Tokens

    @property
    def n_items(self) -> int:
        return int(self.tokens.counts.size)


@dataclass
class TrainBatch:
    """One batch of the training stream; `base` is the row number of its first row in the corpus."""

    texts: pl.Series
    tokens: Tokens
    base: int
    ids: pl.Series | None = None  # the id column as strings, when the corpus has one


@dataclass
class Resolved:
    """What one evidence kind concluded.

    per_item: `item` plus the kind's declared columns (items without evidence may be absent);
    matches: rows with MATCH_COLUMNS; best: at most one row per item with SPAN_COLUMNS (its best span).
    """

    per_item: pl.DataFrame
    matches: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=MATCH_COLUMNS))
    best: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=SPAN_COLUMNS))


@dataclass(frozen=True)
class Score:
    """A findings column the report shows: as a distribution (histogram, quantiles) and per worst item."""

    column: str
    title: str  # histogram title
    label: str  # inline label in a worst item's line
    histogram: bool = True


class Evidence:
    """Base class of an evidence kind; subclasses override what they need."""

    kind: ClassVar[str]  # its name: the `kind` of its match rows and `evidence_kind` of its best spans
    columns: ClassVar[dict[str, Any]] = {}  # findings columns it adds (name -> polars dtype)
    scores: ClassVar[tuple[Score, ...]] = ()
    sort_column: ClassVar[str | None] = None  # worst items: larger first, in evidence order
    report_columns: ClassVar[tuple[str, ...]] = ()  # findings columns (not scores) the report's item table shows
    builtin_switch: ClassVar[str | None] = None  # the LeakageAudit boolean that enables a built-in kind
    order: ClassVar[int] = 100  # position among the built-in kinds (first = preferred best span)
    # The attributes `add_batch` accumulates into (the rest is built from the test side). Declaring
    # them lets the audit map partitions of the corpus in other processes and merge their states.
    partial_attributes: ClassVar[tuple[str, ...]] = ()
    # True for a kind that needs corpus statistics before the stream (`sample.py`): `shared["train_sample"]`
    # then holds the text of a fixed sample of the training corpus while the kinds are built (not after).
    reads_train_sample: ClassVar[bool] = False

    def __init__(self, audit: Any, test: TestSide, shared: dict[str, Any]):
        self.audit, self.test, self.shared = audit, test, shared

    @classmethod
    def settings(cls, audit: Any, stats: dict[str, Any]) -> list[tuple[str, Any]]:
        """(name, value) of the parameters and thresholds the report lists for this kind; `stats` are the
        step's, for what the run resolved (e.g. a precision chosen by "auto")."""
        return []

    @classmethod
    def thresholds(cls, audit: Any, findings: pl.DataFrame) -> dict[str, list[float]]:
        """Score column -> the thresholds its verdict uses (the report draws them on the histograms)."""
        return {}

    def add_batch(self, batch: TrainBatch) -> None:
        raise NotImplementedError

    def candidate_docs(self) -> np.ndarray:
        return np.empty(0, np.int64)

    def resolve(self) -> Resolved:
        raise NotImplementedError

    def verdict(self) -> tuple[pl.Expr, pl.Expr]:
        """(contaminated, partial) conditions over the findings columns."""
        return pl.lit(False), pl.lit(False)

    def merge(self, other: Evidence) -> None:
        """Fold in `other`: the same kind over other training rows (already numbered corpus-wide)."""
        raise NotImplementedError(f"evidence kind {self.kind!r} cannot merge partial states")

    def stats(self) -> dict[str, Any]:
        return {}


EVIDENCE_KINDS: dict[str, type[Evidence]] = {}


def register_evidence(cls: type[Evidence]) -> type[Evidence]:
    """Make an evidence kind available to `LeakageAudit(evidence=[cls.kind])` (usable as a decorator)."""
    return add_unique(EVIDENCE_KINDS, cls.kind, cls, "evidence kinds")


def builtin_kinds() -> list[type[Evidence]]:
    return sorted((cls for cls in EVIDENCE_KINDS.values() if cls.builtin_switch), key=lambda c: c.order)


def match_kinds() -> tuple[str, ...]:
    """Every registered kind: what a `matches` table's `kind` column may hold."""
    return tuple(EVIDENCE_KINDS)
