"""Real prose for the synthetic-data tests: paragraphs of the Python reference that ship in pydoc_data."""

from __future__ import annotations

import pydoc_data.topics

import polars as pl


def pydoc_paragraphs(limit: int | None = None, min_words: int = 5) -> pl.DataFrame:
    """Paragraphs of the Python reference that ships in pydoc_data: real prose, available offline."""
    rows = []
    for topic in sorted(pydoc_data.topics.topics):
        for i, para in enumerate(pydoc_data.topics.topics[topic].split("\n\n")):
            if len(para.split()) >= min_words:
                rows.append({"id": f"{topic}:{i}", "text": para.strip()})
    df = pl.DataFrame(rows)
    return df.head(limit) if limit else df


def origin_counts(table: pl.DataFrame, schedule: str, generation: int) -> dict[str, int]:
    """Rows per origin (human / synthetic) in one generation of one schedule."""
    part = table.filter((pl.col("schedule") == schedule) & (pl.col("generation") == generation))
    return dict(zip(*part["origin"].value_counts().sort("origin").to_dict(as_series=False).values()))
