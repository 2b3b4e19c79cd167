"""The leakage report: report.html (one self-contained file, plots as inline SVG) and report.md.

Written for the person deciding whether a benchmark score can be trusted: totals first, then where
the leaked items concentrate (by subset), how the evidence scores are distributed, and the worst
items with test and training text side by side and the shared span highlighted.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

VERDICT_ORDER = {"contaminated": 0, "partial": 1, "clean": 2}
VERDICT_COLOURS = {"clean": "#4c9a2a", "partial": "#e0a100", "contaminated": "#c0392b"}
CONTEXT_CHARS = 300


def _totals(findings: pl.DataFrame, by: str | None) -> pl.DataFrame:
    if by is None:
        by = "subset"
        findings = findings.with_columns(pl.lit("all").alias(by))
    table = findings.group_by(by).agg(
        pl.len().alias("items"),
        *[(pl.col("verdict") == v).sum().alias(v) for v in ("clean", "partial", "contaminated")],
    )
    table = table.with_columns(
        (100.0 * (pl.col("partial") + pl.col("contaminated")) / pl.col("items")).round(1).alias("dirty_%")
    )
    # Where leakage concentrates comes first.
    return table.sort(["dirty_%", "items", by], descending=[True, True, False]).with_columns(
        pl.col("dirty_%").cast(pl.String)
    )


def worst_items(findings: pl.DataFrame, limit: int) -> pl.DataFrame:
    return (
        findings.filter(pl.col("verdict") != "clean")
        .with_columns(pl.col("verdict").replace_strict(VERDICT_ORDER, return_dtype=pl.Int64).alias("_rank"))
        .sort(
            ["_rank", "longest_span_tokens", "chunk_overlap_ratio", "max_similarity"],
            descending=[False, True, True, True], nulls_last=True,
        )
        .head(limit)
    )


SCORES = (
    ("ngram_overlap", "n-gram overlap (fraction of item n-grams)"),
    ("chunk_overlap_ratio", "chunk overlap ratio r (RETRO)"),
    ("max_similarity", "best chunk cosine similarity"),
)


def _histogram_svg(findings: pl.DataFrame, column: str, title: str, bins: int = 20) -> str:
    """A stacked histogram (one colour per verdict) as inline SVG: no plotting library, no files."""
    width, height, left, bottom, top = 360, 200, 34, 28, 22
    values = findings.select(column, "verdict").drop_nulls()
    lo = min(0.0, float(values[column].min()))
    edges = np.linspace(lo, 1.0, bins + 1)
    counts = {}
    for verdict in ("clean", "partial", "contaminated"):
        part = values.filter(pl.col("verdict") == verdict)[column].to_numpy()
        counts[verdict] = np.histogram(np.clip(part, lo, 1.0), bins=edges)[0]
    peak = max(int(sum(c for c in counts.values()).max()), 1)
    bar_w = (width - left - 6) / bins
    scale = (height - bottom - top) / peak
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>",
             f"<text x='{width / 2}' y='14' font-size='11' text-anchor='middle'>{html.escape(title)}</text>"]
    for b in range(bins):
        y = height - bottom
        for verdict in ("clean", "partial", "contaminated"):
            n = int(counts[verdict][b])
            if n:
                h = n * scale
                y -= h
                parts.append(f"<rect x='{left + b * bar_w:.1f}' y='{y:.1f}' width='{bar_w - 1:.1f}' height='{h:.1f}' "
                             f"fill='{VERDICT_COLOURS[verdict]}'><title>{verdict}: {n} items in "
                             f"[{edges[b]:.2f}, {edges[b + 1]:.2f})</title></rect>")
    axis_y = height - bottom
    parts.append(f"<line x1='{left}' y1='{axis_y}' x2='{width - 6}' y2='{axis_y}' stroke='#333'/>")
    for tick in (lo, (lo + 1) / 2, 1.0):
        x = left + (tick - lo) / (1.0 - lo) * (width - left - 6)
        parts.append(f"<text x='{x:.1f}' y='{axis_y + 14}' font-size='10' text-anchor='middle'>{tick:.2f}</text>")
    parts.append(f"<text x='{left - 4}' y='{top + 8}' font-size='10' text-anchor='end'>{peak}</text>")
    parts.append(f"<text x='{left - 4}' y='{axis_y}' font-size='10' text-anchor='end'>0</text>")
    parts.append("</svg>")
    return "".join(parts)


def _plots_svg(findings: pl.DataFrame) -> str:
    panels = [_histogram_svg(findings, c, t) for c, t in SCORES
              if c in findings.columns and findings[c].drop_nulls().len()]
    if not panels:
        return ""
    legend = " ".join(f"<span style='color:{VERDICT_COLOURS[v]}'>&#9632; {v}</span>"
                      for v in ("clean", "partial", "contaminated"))
    return f"<p class='meta'>test items per score bin; {legend}</p><div>{''.join(panels)}</div>"


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


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>#|"})


def _md_escape(text: str) -> str:
    """Quote arbitrary text in Markdown without its asterisks or brackets turning into markup."""
    return text.translate(_MD_SPECIAL)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _settings(stage: Any) -> list[tuple[str, str]]:
    params = stage.get_params()
    keys = ["n", "max_doc_freq", "chunk_tokens", "k", "backend", "ngram_contaminated", "chunk_partial",
            "chunk_contaminated"]
    passes = [p for p in ("ngram", "chunk_overlap", "semantic") if params.get(p)]
    sim_partial, sim_contaminated = stage.similarity_thresholds
    return [("passes", ", ".join(passes))] + [(k, _fmt(params[k])) for k in keys] + [
        ("similarity_partial", _fmt(sim_partial)), ("similarity_contaminated", _fmt(sim_contaminated))]


def render_markdown(findings: pl.DataFrame, test_texts: list[str], train_texts: dict[int, str],
                    docs: list[int | None], stage: Any, stats: dict) -> str:
    by = "subset" if "subset" in findings.columns else None
    lines = ["# Leakage audit", ""]
    counts = {v: int((findings["verdict"] == v).sum()) for v in ("clean", "partial", "contaminated")}
    total = max(findings.height, 1)
    lines.append(
        f"{findings.height} test items against {stats.get('train_rows', '?')} training rows "
        f"({stats.get('train_mb', '?')} MB): **{counts['contaminated']} contaminated** "
        f"({100 * counts['contaminated'] / total:.1f}%), **{counts['partial']} partial** "
        f"({100 * counts['partial'] / total:.1f}%), {counts['clean']} clean."
    )
    lines += ["", "Settings: " + "; ".join(f"{k} = {v}" for k, v in _settings(stage)), ""]
    lines += ["## Totals" + (" by subset" if by else ""), ""]
    table = _totals(findings, by)
    lines.append("| " + " | ".join(table.columns) + " |")
    lines.append("|" + "---|" * len(table.columns))
    for row in table.iter_rows():
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    lines += ["", "## Score distributions", ""]
    for column in ("ngram_overlap", "chunk_overlap_ratio", "max_similarity"):
        values = findings[column].drop_nulls()
        if values.len():
            qs = [values.quantile(q) for q in (0.5, 0.9, 0.99)]
            lines.append(f"- `{column}`: median {qs[0]:.3f}, p90 {qs[1]:.3f}, p99 {qs[2]:.3f}, max {values.max():.3f}")
    lines += ["", "(Histograms are in report.html.)", "", "## Worst items", ""]
    worst = worst_items(findings, stage.report_items)
    if worst.height == 0:
        lines.append("No test item matched the training data.")
    for row in worst.iter_rows(named=True):
        lines.append(
            f"### {row['test_id']} — {row['verdict']} (train id `{row['train_id']}`)"
        )
        lines.append("")
        lines.append(
            f"n-gram overlap {_fmt(row['ngram_overlap'])}, longest span {_fmt(row['longest_span_tokens'])} words, "
            f"chunk overlap {_fmt(row['chunk_overlap_ratio'])}, similarity {_fmt(row['max_similarity'])}; "
            f"evidence: {row['evidence_kind'] or '–'}"
        )
        lines.append("")
        item = findings["test_id"].to_list().index(row["test_id"])
        test_text = test_texts[item]
        doc = docs[item]
        train_text = train_texts.get(doc, "") if doc is not None else ""
        for label, text, s, e in (
            ("Test", test_text, row["test_char_start"], row["test_char_end"]),
            ("Train", train_text, row["train_char_start"], row["train_char_end"]),
        ):
            before, span, after = (_md_escape(t) for t in _window(text, s, e))
            # Markdown bold must hug its text: whitespace at the span's ends goes outside the markers.
            core = span.strip()
            marked = span[: len(span) - len(span.lstrip())] + f"**{core}**" + span[len(span.rstrip()):] if core else span
            quoted = (before + marked + after).replace("\n", " ")
            lines.append(f"> **{label}:** {quoted}")
            lines.append("")
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1em;margin-bottom:2em}
.pair pre{white-space:pre-wrap;word-wrap:break-word;background:#fafafa;border:1px solid #ddd;padding:8px;
font-size:12px;max-height:28em;overflow:auto}
mark{background:#ffd54f}.v-contaminated{color:#c0392b}.v-partial{color:#b07d00}.v-clean{color:#4c9a2a}
.meta{font-size:13px;color:#555}
"""


def render_html(findings: pl.DataFrame, test_texts: list[str], train_texts: dict[int, str],
                docs: list[int | None], stage: Any, stats: dict) -> str:
    esc = html.escape
    by = "subset" if "subset" in findings.columns else None
    counts = {v: int((findings["verdict"] == v).sum()) for v in ("clean", "partial", "contaminated")}
    total = max(findings.height, 1)
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>Leakage audit</title>",
           f"<style>{_CSS}</style></head><body><h1>Leakage audit</h1>"]
    out.append(
        f"<p>{findings.height} test items against {esc(str(stats.get('train_rows', '?')))} training rows "
        f"({esc(str(stats.get('train_mb', '?')))} MB): "
        f"<b class='v-contaminated'>{counts['contaminated']} contaminated</b> "
        f"({100 * counts['contaminated'] / total:.1f}%), "
        f"<b class='v-partial'>{counts['partial']} partial</b> ({100 * counts['partial'] / total:.1f}%), "
        f"<span class='v-clean'>{counts['clean']} clean</span>.</p>"
    )
    out.append("<p class='meta'>" + "; ".join(f"{esc(k)} = {esc(v)}" for k, v in _settings(stage)) + "</p>")
    out.append("<h2>Totals" + (" by subset" if by else "") + "</h2>")
    table = _totals(findings, by)
    out.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in table.columns) + "</tr>")
    for row in table.iter_rows():
        out.append("<tr>" + "".join(f"<td>{esc(_fmt(v))}</td>" for v in row) + "</tr>")
    out.append("</table>")
    plots = _plots_svg(findings)
    if plots:
        out.append("<h2>Score distributions</h2>")
        out.append(plots)
    out.append(f"<h2>Worst items (up to {stage.report_items})</h2>")
    worst = worst_items(findings, stage.report_items)
    if worst.height == 0:
        out.append("<p>No test item matched the training data.</p>")
    ids = findings["test_id"].to_list()
    for row in worst.iter_rows(named=True):
        item = ids.index(row["test_id"])
        doc = docs[item]
        train_text = train_texts.get(doc, "") if doc is not None else ""
        out.append(
            f"<h3>{esc(str(row['test_id']))} — <span class='v-{row['verdict']}'>{row['verdict']}</span></h3>"
            f"<p class='meta'>n-gram overlap {_fmt(row['ngram_overlap'])}, longest span "
            f"{_fmt(row['longest_span_tokens'])} words, chunk overlap {_fmt(row['chunk_overlap_ratio'])}, "
            f"similarity {_fmt(row['max_similarity'])}; evidence: {esc(row['evidence_kind'] or '–')}; "
            f"training id <code>{esc(str(row['train_id']))}</code></p><div class='pair'>"
        )
        for label, text, s, e in (
            ("Test item", test_texts[item], row["test_char_start"], row["test_char_end"]),
            ("Training document", train_text, row["train_char_start"], row["train_char_end"]),
        ):
            before, span, after = _window(text, s, e)
            out.append(f"<div><b>{label}</b><pre>{esc(before)}<mark>{esc(span)}</mark>{esc(after)}</pre></div>")
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)


def write_reports(findings: pl.DataFrame, matches: pl.DataFrame, test_texts: list[str],
                  train_texts: dict[int, str], docs: list[int | None], stage: Any, stats: dict,
                  *, html_path: Path, md_path: Path) -> None:
    """Write both reports; `docs[i]` is the training row behind test item i's evidence (or None)."""
    html_path.write_text(render_html(findings, test_texts, train_texts, docs, stage, stats), encoding="utf-8")
    md_path.write_text(render_markdown(findings, test_texts, train_texts, docs, stage, stats), encoding="utf-8")
