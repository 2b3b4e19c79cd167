"""Precision and recall of an audit against truth labels (e.g. `plant_leakage`'s `truth` side output)."""

from __future__ import annotations

import polars as pl

from pipeline.errors import InputDataError
from stages.leakage.evidence import Evidence


def precision_recall(findings: pl.DataFrame, evidences: list[Evidence], truth: pl.DataFrame) -> dict[str, dict]:
    """Per evidence kind (and for the verdict): precision and recall of 'flagged' against truth labels."""
    if not {"test_id", "planted"} <= set(truth.columns):
        raise InputDataError("leakage_audit: input 'truth' needs columns test_id and planted (plant_leakage's truth)")
    judged = findings.join(truth.select(pl.col("test_id").cast(pl.String), pl.col("planted").cast(pl.Boolean)),
                           on="test_id", how="inner")
    flags = {ev.kind: (lambda c, p: c | p)(*ev.verdict()) for ev in evidences} | {"verdict": pl.col("verdict") != "clean"}
    out = {}
    for name, flag in flags.items():
        row = judged.select(tp=(flag & pl.col("planted")).sum(), fp=(flag & ~pl.col("planted")).sum(),
                            positives=pl.col("planted").sum(), negatives=(~pl.col("planted")).sum()).row(0, named=True)
        out[name] = {"precision": round(row["tp"] / max(row["tp"] + row["fp"], 1), 4),
                     "recall": round(row["tp"] / max(row["positives"], 1), 4),
                     "fpr": round(row["fp"] / max(row["negatives"], 1), 4), **row}
    return out
