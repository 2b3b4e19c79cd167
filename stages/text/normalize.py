"""Text normalisation, vectorised over a polars Series (Rust string kernels, no per-row Python)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import polars as pl

NormalizeMode = Literal["none", "whitespace", "full"]
NORMALIZE_MODES: tuple[str, ...] = ("none", "whitespace", "full")

# Unicode punctuation (P*) and symbols (S*): what GPT-3's and datatrove's decontamination fold away.
PUNCTUATION_REGEX = r"[\p{P}\p{S}]+"
WHITESPACE_REGEX = r"\s+"


def as_series(texts: pl.Series | Sequence[str | None]) -> pl.Series:
    """A String Series with nulls as empty texts, whatever sequence of strings came in."""
    series = texts if isinstance(texts, pl.Series) else pl.Series("text", list(texts), dtype=pl.String)
    return series.cast(pl.String).fill_null("")


def normalize(texts: pl.Series | Sequence[str | None], mode: NormalizeMode = "full") -> pl.Series:
    """Normalise every text; nulls become "".

    - "none": unchanged (nulls still become "");
    - "whitespace": runs of whitespace folded into one space, ends stripped;
    - "full": GPT-3 / datatrove style: Unicode NFKC, lower case, every run of punctuation or symbols
      replaced by one space, then whitespace folded and stripped. Two texts that differ only in case,
      punctuation, spacing or compatibility forms (full-width letters, ligatures) become equal.

    NFKC runs only on the rows that hold a non-ASCII character (it is the costly step and a no-op on
    ASCII).
    """
    series = as_series(texts)
    if mode == "none":
        return series
    if mode == "whitespace":
        return series.str.replace_all(WHITESPACE_REGEX, " ").str.strip_chars()
    if mode != "full":
        raise ValueError(f"normalisation mode must be one of {NORMALIZE_MODES}, got {mode!r}")
    non_ascii = (series.str.len_bytes() != series.str.len_chars()).arg_true()
    if len(non_ascii):
        series = series.scatter(non_ascii, series.gather(non_ascii).str.normalize("NFKC"))
    return (
        series.str.to_lowercase()
        .str.replace_all(PUNCTUATION_REGEX, " ")
        .str.replace_all(WHITESPACE_REGEX, " ")
        .str.strip_chars()
    )
