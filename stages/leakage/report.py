"""The leakage report: report.html (one self-contained file, SVG histograms inline) and report.md.

Written for the person deciding whether a benchmark score can be trusted: totals first, then where
the leaked items concentrate (by subset), how the evidence scores are distributed, and the worst
items with test and training text side by side and the shared span highlighted. Which scores exist
is not known here: every evidence kind declares its columns (`Evidence.scores`), and the report
loops over them.
"""

from __future__ import annotations

import re
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from stages._report import render
from stages._report.diff import diff_ratio, word_diff
from stages._report.svg import stacked_histogram
from stages.leakage.evidence import VERDICTS, Evidence, Score

VERDICT_ORDER = {"contaminated": 0, "partial": 1, "clean": 2}
VERDICT_COLOURS = {"clean": "#4c9a2a", "partial": "#e0a100", "contaminated": "#c0392b"}
CONTEXT_CHARS = 300
NEAR_COPY_RATIO = 0.5  # a worst item gets a word diff when test and training window share this much of their words


def _scores(kinds: list[type[Evidence]], findings: pl.DataFrame) -> list[Score]:
    return [s for cls in kinds for s in cls.scores if s.column in findings.columns]


def _totals(findings: pl.DataFrame, by: str | None) -> pl.DataFrame:
    if by is None:
        by = "subset"
        findings = findings.with_columns(pl.lit("all").alias(by))
    table = findings.group_by(by).agg(
        pl.len().alias("items"), *[(pl.col("verdict") == v).sum().alias(v) for v in VERDICTS],
    )
    singles = table.filter(pl.col("items") == 1)
    if singles.height > 1:  # many one-item subsets would drown the table: one row sums them
        folded = singles.select(pl.lit(f"({singles.height} one-item subsets)").alias(by), pl.len().cast(pl.UInt32).alias("items"),
                                *[pl.col(v).sum() for v in VERDICTS])
        table = pl.concat([table.filter(pl.col("items") > 1), folded.cast(table.schema)])
    table = table.with_columns(
        (100.0 * (pl.col("partial") + pl.col("contaminated")) / pl.col("items")).round(1).alias("dirty_%")
    )
    # Where leakage concentrates comes first.
    return table.sort(["dirty_%", "items", by], descending=[True, True, False]).with_columns(
        pl.col("dirty_%").cast(pl.String)
    )


def worst_items(findings: pl.DataFrame, limit: int, kinds: list[type[Evidence]]) -> pl.DataFrame:
    """Dirty items, contaminated first, then by each evidence kind's sort column (larger first)."""
    keys = [c.sort_column for c in kinds if c.sort_column and c.sort_column in findings.columns]
    return (
        findings.filter(pl.col("verdict") != "clean")
        .with_columns(pl.col("verdict").replace_strict(VERDICT_ORDER, return_dtype=pl.Int64).alias("_rank"))
        .sort(["_rank", *keys], descending=[False, *([True] * len(keys))], nulls_last=True)
        .head(limit)
    )


def _histogram(findings: pl.DataFrame, score: Score, thresholds: list[float] = (), bins: int = 20) -> str:
    """A stacked histogram of one score column (one colour per verdict), as inline SVG."""
    values = findings.select(score.column, "verdict").drop_nulls()
    lo = min(0.0, float(values[score.column].min()))
    hi = max(1.0, float(values[score.column].max()))
    edges = np.linspace(lo, hi, bins + 1)
    layers = [(v, VERDICT_COLOURS[v], np.histogram(np.clip(
        values.filter(pl.col("verdict") == v)[score.column].to_numpy(), lo, hi), edges)[0]) for v in VERDICTS]
    return stacked_histogram(edges, layers, title=score.title, ylabel="test items", thresholds=thresholds)


def _window(text: str, start: int | None, end: int | None) -> tuple[str, str, str]:
    """(before, span, after) around the highlighted span, trimmed to a readable window."""
    if start is None or end is None:
        return "", "", text[: 2 * CONTEXT_CHARS] + ("…" if len(text) > 2 * CONTEXT_CHARS else "")
    before = text[max(0, start - CONTEXT_CHARS):start]
    after = text[end:end + CONTEXT_CHARS]
    span = text[start:end]
    if len(span) > 4 * CONTEXT_CHARS:
        span = span[: 2 * CONTEXT_CHARS] + " … " + span[-2 * CONTEXT_CHARS:]
    return ("…" if start > CONTEXT_CHARS else "") + before, span, after + ("…" if end + CONTEXT_CHARS < len(text) else "")


_WORD = re.compile(r"\S+")
_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>#|"})


def aligned_window(test: str, train: str, test_span: tuple, train_span: tuple) -> str:
    """The part of `train` that lines up with the whole test item around the matched spans (all of it without spans)."""
    (ts, te), (rs, re_) = test_span, train_span
    if None in (ts, te, rs, re_):
        return train
    # As many words before and after the training span as the test item has around its span (whitespace
    # differs between the two texts, so counting characters would cut words). One slice of `train`, not
    # words joined by spaces: a span that ends inside a word ("access" of "access.") stays one word.
    n_before, n_after = len(test[:ts].split()), len(test[te:].split())
    after = [m.end() for m in islice(_WORD.finditer(train, re_), n_after)]  # not the rest of a 20 MB document
    end = after[-1] if after else re_
    return train[_words_back(train, rs, n_before):end]


def _words_back(text: str, end: int, n: int) -> int:
    """Where the n-th word before `end` starts (0 if there are fewer), reading back only as far as it must."""
    reach = 64 * (n + 1)
    while n:
        lo = max(0, end - reach)
        starts = [m.start() for m in _WORD.finditer(text, lo, end)]
        # The first word of a window that starts mid-text may be cut: count it only at the text's start.
        if lo == 0 or len(starts) > n:
            return starts[-n] if len(starts) >= n else (starts[0] if starts else end)
        reach *= 4
    return end


def near_copy_diff(test: str, train: str, test_span: tuple, train_span: tuple) -> list[tuple[str, str]] | None:
    """Word diff of the test item against its aligned training window, or None when they are not near-copies."""
    if not train:
        return None
    runs = word_diff(test, aligned_window(test, train, test_span, train_span))
    identical = all(op == "equal" for op, _ in runs)  # a verbatim copy: the highlighted span already says it all
    return runs if not identical and diff_ratio(runs) >= NEAR_COPY_RATIO else None


def _md_escape(text: str) -> str:
    """Quote arbitrary text in Markdown without its asterisks or brackets turning into markup."""
    return text.translate(_MD_SPECIAL)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _settings(stage: Any, kinds: list[type[Evidence]], stats: dict[str, Any]) -> list[tuple[str, str]]:
    passes = [c.kind for c in kinds if stage.enabled(c)]
    seen: dict[str, str] = {}
    for cls in kinds:
        if stage.enabled(cls):
            seen.update((k, _fmt(v)) for k, v in cls.settings(stage, stats))
    return [("passes", ", ".join(passes)), *seen.items()]


class _Report:
    """What both renderings share: counts, totals, settings and the worst items with their text."""

    def __init__(self, findings: pl.DataFrame, test_texts: list[str], train_texts: dict[int, str],
                 docs: list[int | None], stage: Any, stats: dict):
        self.findings, self.stage, self.stats = findings, stage, stats
        self.test_texts, self.train_texts, self.docs = test_texts, train_texts, docs
        self.kinds = stage.evidence_classes()
        self.scores = _scores(self.kinds, findings)
        self.by = "subset" if "subset" in findings.columns else None
        self.counts = {v: int((findings["verdict"] == v).sum()) for v in VERDICTS}
        total = max(findings.height, 1)
        self.percent = {v: 100 * n / total for v, n in self.counts.items()}
        self.totals = _totals(findings, self.by)
        self.settings = _settings(stage, self.kinds, stats) + [("seed", _fmt(stats.get("seed")))]
        self.thresholds = {c: v for cls in self.kinds if stage.enabled(cls) for c, v in cls.thresholds(stage, findings).items()}
        self.quality = stats.get("evidence_precision_recall") or {}
        self._worst: list[dict] | None = None

    def all_items(self) -> dict:
        """Every item, with its verdict and every score, for the sortable, filterable table."""
        extra = [c for cls in self.kinds for c in cls.report_columns if c in self.findings.columns]
        cols = ["test_id", "verdict", *(["subset"] if self.by else []), *[s.column for s in self.scores], *extra,
                "train_id"]
        return {"columns": cols, "rows": [[_fmt(v) for v in r] for r in self.findings.select(cols).iter_rows()]}

    def next_steps(self) -> list[str]:
        dirty = self.counts["partial"] + self.counts["contaminated"]
        if not dirty:
            return ["No item matched: report the score on the full test set; keep this report with the results."]
        return [f"Score the model on the clean split (`clean` side output, {self.counts['clean']} items) and on all items; "
                "the gap is what leakage is worth (GPT-3's clean-vs-all comparison).",
                "Decontaminate the training corpus with the `decontaminate` stage (inputs: the corpus and this step's "
                "`matches`), or drop the dirty items from the test set.",
                "Check the worst items by hand: near-copies are clear; paraphrase and semantic matches near the drawn "
                "thresholds are the ones to read."]

    def worst(self) -> list[dict]:
        """The worst items with their text, built once for both renderings (each word diff costs)."""
        if self._worst is None:
            self._worst = self._build_worst()
        return self._worst

    def _build_worst(self) -> list[dict]:
        ids = self.findings["test_id"].to_list()
        out = []
        for row in worst_items(self.findings, self.stage.report_items, self.kinds).iter_rows(named=True):
            item = ids.index(row["test_id"])
            doc = self.docs[item]
            train_text = self.train_texts.get(doc, "") if doc is not None else ""
            test_span = (row["test_char_start"], row["test_char_end"])
            train_span = (row["train_char_start"], row["train_char_end"])
            out.append({
                "diff": near_copy_diff(self.test_texts[item], train_text, test_span, train_span),
                "test_id": str(row["test_id"]), "verdict": row["verdict"], "train_id": str(row["train_id"]),
                "evidence_kind": row["evidence_kind"] or "–",
                "scores": [(s.label, _fmt(row[s.column])) for s in self.scores],
                "sides": [
                    dict(zip(("label", "before", "span", "after"), (label, *_window(text, s, e))))
                    for label, text, s, e in (
                        ("Test item", self.test_texts[item], *test_span),
                        ("Training document", train_text, *train_span),
                    )
                ],
            })
        return out

    def html(self) -> str:
        plots = [_histogram(self.findings, s, self.thresholds.get(s.column, [])) for s in self.scores
                 if s.histogram and self.findings[s.column].drop_nulls().len()]
        return render(
            "leakage.html.j2", title="Leakage audit", items=self.findings.height,
            train_rows=self.stats.get("train_rows", "?"), train_mb=self.stats.get("train_mb", "?"),
            counts=self.counts, percent=self.percent, settings=self.settings, by_subset=self.by is not None,
            totals={"columns": self.totals.columns, "rows": [[_fmt(v) for v in r] for r in self.totals.iter_rows()]},
            plots=plots, report_items=self.stage.report_items, worst=self.worst(), all_items=self.all_items(),
            quality=self.quality, next_steps=self.next_steps(), null=self.stats.get("paraphrase_null"),
            duplicates=self.stats.get("duplicates"),
            config=sorted((k, _fmt(v)) for k, v in self.stage.get_params().items()),
        )

    def markdown(self) -> str:
        c, p = self.counts, self.percent
        lines = ["# Leakage audit", "",
                 f"{self.findings.height} test items against {self.stats.get('train_rows', '?')} training rows "
                 f"({self.stats.get('train_mb', '?')} MB): **{c['contaminated']} contaminated** "
                 f"({p['contaminated']:.1f}%), **{c['partial']} partial** ({p['partial']:.1f}%), {c['clean']} clean.",
                 "", "Settings: " + "; ".join(f"{k} = {v}" for k, v in self.settings), "",
                 "## Totals" + (" by subset" if self.by else ""), "",
                 "| " + " | ".join(self.totals.columns) + " |", "|" + "---|" * len(self.totals.columns)]
        lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in self.totals.iter_rows()]
        lines += ["", "## Score distributions", ""]
        for score in self.scores:
            values = self.findings[score.column].drop_nulls()
            if values.len():
                qs = [values.quantile(q) for q in (0.5, 0.9, 0.99)]
                lines.append(f"- `{score.column}`: median {qs[0]:.3f}, p90 {qs[1]:.3f}, p99 {qs[2]:.3f}, "
                             f"max {values.max():.3f}")
        lines += ["", "(Histograms with the thresholds drawn, and a sortable table of every item, are in report.html.)", ""]
        if self.stats.get("paraphrase_null"):
            lines += ["Paraphrase null (best score against a training passage the item owns, other than its best): "
                      + ", ".join(f"{k} {v}" for k, v in self.stats["paraphrase_null"].items()), ""]
        if self.quality:
            lines += ["## Precision and recall per evidence kind (truth labels given)", "",
                      "| evidence | precision | recall | FPR |", "|---|---|---|---|"]
            lines += [f"| {k} | {q['precision']:.3f} | {q['recall']:.3f} | {q['fpr']:.3f} |" for k, q in self.quality.items()]
            lines.append("")
        lines += _duplicates_markdown(self.stats.get("duplicates"))
        lines += ["## Next steps", "", *[f"- {step}" for step in self.next_steps()], "", "## Worst items", ""]
        worst = self.worst()
        if not worst:
            lines.append("No test item matched the training data.")
        for item in worst:
            lines += [f"### {item['test_id']} — {item['verdict']} (train id `{item['train_id']}`)", "",
                      ", ".join(f"{k} {v}" for k, v in item["scores"]) + f"; evidence: {item['evidence_kind']}", ""]
            for side in item["sides"]:
                before, span, after = (_md_escape(side[k]) for k in ("before", "span", "after"))
                # Markdown bold must hug its text: whitespace at the span's ends goes outside the markers.
                core = span.strip()
                marked = span[: len(span) - len(span.lstrip())] + f"**{core}**" + span[len(span.rstrip()):] if core else span
                label = "Test" if side["label"] == "Test item" else "Train"
                lines += [f"> **{label}:** " + (before + marked + after).replace("\n", " "), ""]
            if item["diff"]:
                marks = {"equal": "{}", "delete": "~~{}~~", "insert": "**{}**"}
                lines += ["Word diff (test → training; ~~only in test~~, **only in training**): "
                          + " ".join(marks[op].format(_md_escape(t)) for op, t in item["diff"]), ""]
        return "\n".join(lines) + "\n"


def _duplicates_markdown(dup: dict | None) -> list[str]:
    if not dup:
        return []
    lines = ["## Duplicates" + (f" (step {dup['step']})" if dup.get("step") else ""), "",
             f"{dup['removed_rows']} rows removed ("
             + ", ".join(f"{k}: {v}" for k, v in dup["reasons"].items()) + "); "
             + "; ".join(f"{k} {v}" for k, v in dup["stats"].items() if k != "cluster_size_histogram") + ".", "",
             f"Test items the dedup step matched (a removed training row duplicates them): {dup['test_items_matched']}, "
             f"of which this audit flags {dup['test_items_matched_and_flagged']}.", ""]
    ex = dup["examples"]
    if ex["rows"]:
        lines += ["| " + " | ".join(ex["columns"]) + " |", "|" + "---|" * len(ex["columns"])]
        lines += ["| " + " | ".join(_md_escape(str(v)) for v in r) + " |" for r in ex["rows"]]
        lines.append("")
    return lines


def write_reports(findings: pl.DataFrame, test_texts: list[str], train_texts: dict[int, str],
                  docs: list[int | None], stage: Any, stats: dict, *, html_path: Path, md_path: Path) -> None:
    """Write both reports; `docs[i]` is the training row behind test item i's evidence (or None)."""
    report = _Report(findings, test_texts, train_texts, docs, stage, stats)
    html_path.write_text(report.html(), encoding="utf-8")
    md_path.write_text(report.markdown(), encoding="utf-8")
