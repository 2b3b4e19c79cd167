"""Checks of library-function arguments (`encode_texts`, `near_duplicate_rate`, `Index.search`), each naming the
parameter, where a Python type slip would otherwise give a wrong answer or an error from deep inside polars.

A stage's constructor arguments are checked by their declarations (`pipeline.params`); these are for the
plain functions beside the stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError


def refuse_bare_string(values: Any, param: str) -> None:
    """TypeError for one string where a list of texts is expected (it would be taken character by character)."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{param} must be a list of strings, got {type(values).__name__}; "
                        f"wrap a single text in a list: [{param}]")


def text_list(texts: Any, param: str = "texts", nulls: bool = False) -> list:
    """`texts` (a sequence of strings, `None` too with `nulls`) as a list, each valid Unicode.

    A lone surrogate ("\\ud800": text decoded with errors='surrogateescape', or a broken JSON escape) cannot
    be hashed or embedded; it is refused with the position of the first text that holds one.
    """
    refuse_bare_string(texts, param)
    if isinstance(texts, pl.Series):
        return text_series(texts, param).to_list()
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str) and not (nulls and t is None)), None)
    if bad is not None:
        allowed = "strings or None" if nulls else "strings"
        raise InputDataError(f"{param}[{bad}] is {type(texts[bad]).__name__}, not a string; {param} must all be "
                             f"{allowed}", param=param)
    refuse_surrogates(texts, param)
    return texts


def text_series(texts: pl.Series, param: str = "texts") -> pl.Series:
    """A polars Series of texts, refused unless it holds strings (or only nulls)."""
    if texts.dtype not in (pl.String, pl.Null):
        raise InputDataError(f"{param} is a Series of {texts.dtype}, not of strings; cast it or pass the text "
                             "column", param=param)
    return texts.cast(pl.String)


def refuse_surrogates(texts: Sequence[str | None], param: str) -> None:
    """InputDataError naming the first text with a lone surrogate.

    `str.isascii` is O(1) in CPython, so only the non-ASCII texts are encoded (once, joined): about 4 ns a
    character of those, far below what hashing or embedding them costs.
    """
    wide = [i for i, t in enumerate(texts) if t is not None and not t.isascii()]
    try:
        "".join([texts[i] for i in wide]).encode("utf-8")
    except UnicodeEncodeError as exc:
        ends = np.cumsum([len(texts[i]) for i in wide])
        within = int(np.searchsorted(ends, exc.start, side="right"))
        index, start = wide[within], exc.start - (int(ends[within - 1]) if within else 0)
        raise InputDataError(
            f"{param}[{index}] holds a lone surrogate {texts[index][start]!r} at character {start}, which is not "
            "valid Unicode; repair it, e.g. text.encode('utf-8', 'replace').decode()", param=param) from None


def int_arg(value: Any, param: str, minimum: int | None = None) -> int:
    """`value` as a Python int; ParamError for a bool, float or string (no silent truncation of 2.5 to 2)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ParamError(param, f"expects int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ParamError(param, f"must be at least {minimum}, got {value}")
    return value
