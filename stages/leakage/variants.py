"""Eval-aware test items: the texts a structured test item leaks as, built from the fields a test set names.

A multiple-choice item leaks as its question alone, as the question with its correct answer, or as the
whole prompt with every option; a reading item as passage + question. `LeakageAudit(fields={question:
q, choices: options, answer: label})` names the test columns; each item then gets one variant per
form that its fields allow, and the paraphrase kind scores every variant (the item keeps its best).
The built-in kinds read one text per item (`item_texts`): the text column where the test set has one,
else the fullest variant (the full prompt with choices). Without `fields`, an item has its text column
as a variant. Either way, an item of several sentences
also gets its last sentence (`question_tail`; without `fields`, only when it asks a question), the
question a passage + question item is leaked as.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError
from stages.leakage.evidence import TestSide
from stages.text import tokenize

FIELD_ROLES = ("question", "choices", "answer", "passage")
# Training data in instruction-tuning form: the roles are joined (in this order) into the text the audit reads.
TRAIN_ROLES = ("instruction", "input", "response")
FIELD_SEPARATOR = "\n"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SENTENCE_END = re.compile(r"(?<=[.?!])\s+(?=\S)")
# A line break also ends a sentence after a source line: exam items cite their passage on a line of its own
# ("John L. O'Sullivan, 1839", "—Jane Addams, Twenty Years at Hull House, 1912") with no full stop, right
# before the question. Such a break follows no comma, the next line starts with a capital, and the
# line it ends is short beside the lines before it (at most SOURCE_LINE_SHARE of the longest: the passage).
# Wrapped prose breaks its lines inside sentences at a steady width, so a line ending in "1990" or "IBM" is
# not cut.
LINE_BREAK = re.compile(r"(?<=[^\s,;:\-])[ \t]*\n\s*(?=[A-Z])")
SOURCE_LINE_SHARE = 0.75
ATTRIBUTION_DASHES = ("\u2014", "\u2015")  # "—Jane Addams, ...": an attribution line, whatever its length (after a poem)
TAIL_MIN_WORDS = 6  # a shorter last sentence ("Why?") matches too much by chance to stand alone


def _tail_start(text: str) -> int:
    """Where the last sentence of `text` starts: after the last full stop, or after the last source line."""
    start = max((m.end() for m in SENTENCE_END.finditer(text)), default=0)
    longest_before = scanned = 0  # the longest line ending before `scanned`, read once however many breaks
    for m in LINE_BREAK.finditer(text, start):
        line_start = text.rfind("\n", 0, m.start()) + 1
        while (end := text.find("\n", scanned, line_start)) >= 0:
            longest_before, scanned = max(longest_before, len(text[scanned:end].strip())), end + 1
        line = text[line_start : m.start()].strip()
        if line.startswith(ATTRIBUTION_DASHES) or len(line) <= SOURCE_LINE_SHARE * longest_before:
            start = m.end()
    return start


def question_tail(text: str, questions_only: bool = False) -> str | None:
    """The last sentence of a longer item (the question after a reading passage or a preamble), or None.

    A passage + question item is leaked as the question alone more often than as the passage; the whole
    item's vector and word bag are dominated by the passage, so the question gets its own variant when it
    is at least TAIL_MIN_WORDS words and at most half the item. `questions_only`: only a last sentence
    that ends with "?" (items of unknown shape: prose or code windows would pay re-scoring for nothing).
    """
    text = text.replace("\r\n", "\n").strip()
    start = _tail_start(text)
    tail = text[start:]
    if start == 0 or (questions_only and not tail.endswith("?")):
        return None
    words = len(tail.split())
    return tail if TAIL_MIN_WORDS <= words <= len(text.split()) // 2 else None


def item_texts(test_df: pl.DataFrame, text_column: str, fields: dict[str, str] | None, label: str) -> pl.Series:
    """Each test item's text: its text column, or (with `fields` and no such column) its full prompt.

    A null or blank text is refused: an item with nothing to audit would be reported `clean`, and a test column of
    empty strings would read as a clean audit.
    """
    if fields and text_column not in test_df.columns:  # the fullest variant (prompt, or question + answer) stands for it
        # not the question tail, which is last when the item has neither choices nor answer: passage + question
        # would be audited as its last sentence
        texts = pl.Series([[t for name, t in v if name != "question tail"][-1] for v in raw_variants(test_df, fields)],
                          dtype=pl.String)
        where, param = f"items built from fields {sorted(set(fields.values()))}", "fields"
    else:
        texts = test_df.get_column(text_column).cast(pl.String)
        where, param = f"column '{text_column}'", "text_column"
    if texts.null_count():
        raise InputDataError(f"input 'test' {where} has {texts.null_count():,} null texts; an item with no text cannot "
                             "be audited (it would count as clean); drop or fill them first", param=param, file=label)
    blank = int(texts.str.strip_chars().str.len_bytes().eq(0).sum())
    if blank:
        raise InputDataError(f"input 'test' {where} has {blank:,} empty texts (nothing but spaces); an item with no "
                             "text cannot be audited (it would count as clean); drop them first", param=param,
                             file=label)
    return texts


def check_fields(fields: dict[str, str] | None) -> None:
    if fields is None:
        return
    bad = [role for role in fields if role not in FIELD_ROLES]
    if bad:
        raise ParamError("fields", f"unknown role {bad[0]!r}; roles are {', '.join(FIELD_ROLES)}")
    if "question" not in fields:
        raise ParamError("fields", "needs a 'question' column (e.g. fields: {question: q, choices: options, answer: label})")


def check_train_fields(train_fields: dict[str, str] | None) -> None:
    if train_fields is None:
        return
    bad = [role for role in train_fields if role not in TRAIN_ROLES]
    if bad:
        raise ParamError("train_fields", f"unknown role {bad[0]!r}; roles are {', '.join(TRAIN_ROLES)}")
    if not train_fields:
        raise ParamError("train_fields", "names no column (e.g. train_fields: {instruction: prompt, response: completion})")


def train_columns(text_column: str, train_fields: dict[str, str] | None) -> list[str]:
    """The training columns the audit reads for text: the text column, or the instruction/response fields."""
    return [train_fields[r] for r in TRAIN_ROLES if r in train_fields] if train_fields else [text_column]


def training_text(batch: pl.DataFrame, text_column: str, train_fields: dict[str, str] | None) -> pl.DataFrame:
    """The batch with `text_column` holding each row's text: an instruction/response pair joined (question, then
    answer, as a test item leaks as question + answer), or the text column as it is."""
    if not train_fields:
        return batch
    return batch.with_columns(text_expr(text_column, train_fields).alias(text_column))


def text_expr(text_column: str, train_fields: dict[str, str] | None) -> pl.Expr:
    """Each row's text as every kind reads it (`training_text`): the text column, or the fields joined and stripped."""
    return joined_fields(train_fields).str.strip_chars() if train_fields else pl.col(text_column)


def joined_fields(train_fields: dict[str, str]) -> pl.Expr:
    """A row's fields in role order, a line break between them (a null one as ""), before `training_text` strips the
    whole; `decontaminate` maps the audit's character offsets back into the fields with it."""
    parts = [pl.col(c).cast(pl.String).fill_null("") for c in train_columns("", train_fields)]
    return pl.concat_str(parts, separator=FIELD_SEPARATOR)


def _answer_text(choices: list[str] | None, answer: Any, indexed: bool) -> str:
    """The correct answer as text: an index or letter into `choices`, or the answer itself.

    `indexed` (the fields name a choices role): an integer answer is a 0-based index (`field_checks` refuses one
    out of range), and an item whose choices are missing has no answer text. Otherwise an integer is the answer
    itself (a GSM8K-style final number), as is a boolean (a BoolQ-style yes/no).
    """
    if answer is None:
        return ""
    if indexed and isinstance(answer, int) and not isinstance(answer, bool):
        return choices[answer] if choices and 0 <= answer < len(choices) else ""
    if choices:
        key = str(answer).strip().upper()
        if len(key) == 1 and key in LETTERS[: len(choices)]:
            return choices[LETTERS.index(key)]
    return str(answer)


def raw_variants(frame: pl.DataFrame, fields: dict[str, str]) -> list[list[tuple[str, str]]]:
    """Per test row, its (variant name, text) pairs."""
    missing = [c for c in fields.values() if c not in frame.columns]
    if missing:
        raise InputDataError(f"leakage_audit: fields names column {missing[0]!r}, which the test set lacks; "
                             f"columns: {', '.join(frame.columns)}")

    def column(role: str) -> list[Any]:
        return frame.get_column(fields[role]).to_list() if role in fields else [None] * frame.height

    out = []
    for question, choices, answer, passage in zip(*(column(r) for r in ("question", "choices", "answer", "passage"))):
        q = " ".join(filter(None, [passage, question]))
        options = [str(c) for c in choices] if isinstance(choices, (list, tuple)) else None
        variants = [("question", q)]
        tail = question if passage and question else question_tail(q)
        if tail:
            variants.append(("question tail", tail))
        answer_text = _answer_text(options, answer, "choices" in fields)
        if answer_text:
            variants.append(("question+answer", f"{q} {answer_text}"))
        if options:
            variants.append(("prompt", q + " " + " ".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(options[:26]))))
        out.append(variants)
    return out


def _text_variants(text: str) -> list[tuple[str, str]]:
    tail = question_tail(text, questions_only=True)
    return [("text", text), ("question tail", tail)] if tail else [("text", text)]


def item_variants(audit: Any, test: TestSide, shared: dict[str, Any]) -> tuple[np.ndarray, list[str], list[str]]:
    """(item of each variant, variant names, normalised variant texts), shared by every kind of one audit."""
    if "variants" not in shared:
        frame = shared.get("test_frame")
        if audit.fields and frame is not None:
            per_item = raw_variants(frame, audit.fields)
        else:
            per_item = [_text_variants(t) for t in test.texts.to_list()]
        item = np.repeat(np.arange(len(per_item), dtype=np.int64), [len(v) for v in per_item])
        names = [name for v in per_item for name, _ in v]
        tok = tokenize(pl.Series([text for v in per_item for _, text in v], dtype=pl.String))
        offsets = tok.offsets
        words = tok.words.to_list()
        texts = [" ".join(words[offsets[i] : offsets[i + 1]]) for i in range(len(names))]
        shared["variants"] = (item, names, texts)
    return shared["variants"]
