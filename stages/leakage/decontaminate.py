"""Decontamination: remove what a leakage audit matched from the training corpus (GPT-3's cut, or drop)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl

from pipeline.columns import COLUMN_KINDS, polars_schema
from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.params import Cosine, NonNegativeInt, PositiveInt
from pipeline.stage import Context, Stage
from stages._ids import refuse_bad_id_column
from stages.leakage.evidence import match_kinds
from stages.leakage.field_checks import present_roles
from stages.leakage.variants import (
    FIELD_SEPARATOR,
    check_train_fields,
    joined_fields,
    text_expr,
    train_columns,
)

# The `removed` side output: whatever decontamination took out, and why.
_ROW = "_decontaminate_row"  # each row's place in its batch, while pieces are made
_TEXT = "_decontaminate_text"  # a matched row's text as the audit read it (the text column, or the fields joined)
_LEAD = "_decontaminate_lead"  # characters the join's strip took off that text's start (`field_pieces`)
ORIGIN = "decontaminated_from"  # the output column naming a piece's original document
REMOVED_SCHEMA = {"train_id": pl.String, "reason": pl.String, "char_start": pl.Int64, "char_end": pl.Int64,
                  "text": pl.String, "test_ids": pl.List(pl.String), "kinds": pl.List(pl.String)}


def merge_spans(starts: np.ndarray, ends: np.ndarray) -> list[tuple[int, int]]:
    """Union of half-open character intervals, sorted."""
    merged: list[tuple[int, int]] = []
    for s, e in sorted(zip(starts.tolist(), ends.tolist())):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def field_pieces(fields: list[str | None], lead: int, start: int, end: int, length: int) -> list[str | None]:
    """What the piece [start, end) of a row's joined text (`length` characters) holds of each field; None: nothing.

    The audit's offsets are into the fields joined with FIELD_SEPARATOR and stripped (`variants.training_text`);
    `lead` is the characters the strip took off the start. A piece at either end keeps what the strip took there.
    """
    at = -lead  # where the current field starts, in the joined text's offsets
    start = at if start == 0 else start
    out = []
    for value in fields:
        text = "" if value is None else str(value)
        lo, hi = max(start - at, 0), len(text) if end == length else min(end - at, len(text))
        out.append(text[lo:hi] if hi > lo else None)
        at += len(text) + len(FIELD_SEPARATOR)
    return out


class Decontaminate(Stage):
    """Remove leaked content from the training corpus, using a `leakage_audit` step's `matches`.

    `mode: cut` follows GPT-3: each matched span is cut out with `margin_chars` either side, the
    document splits into pieces, pieces shorter than `min_piece_chars` go, and a document cut into
    more than `max_pieces` pieces goes whole. `mode: drop` removes every matched document. Whatever
    is removed lands in the side output `removed` (id, reason, text, span), so nothing goes silently.
    Kept pieces of a cut document become rows `<id>#<k>`; the column `decontaminated_from` names the
    original id (null for untouched rows). A second pass over decontaminated data keeps the first origin: a row's
    `decontaminated_from` stays, and its pieces take it (a piece of a piece still comes from the original
    document); only a null one is filled, with the row's id. Training ids must be unique and not null: a repeated id
    would take every match of its twins and come out twice. Each span in matches needs
    train_char_start <= train_char_end (or both null: no span, so the document is dropped); an
    inverted or half-given span is refused, not skipped, since skipping it would keep leaked text.
    Instruction-tuning data audited with `train_fields` is cut with the same `train_fields`: the audit's offsets
    are into the fields joined, so each piece of that text is mapped back to the fields it covers (a field it does
    not reach is null in that piece); `removed` keeps the joined text's offsets, as in `matches`. Pieces keep their
    row's column types, but in cut mode an Enum text column (or field) comes out as String, cut or not: a piece's
    text is none of its categories (a Categorical one stays: it takes any text). A span ending past
    its row's text as this step reads it is refused (an audit's spans lie within the text it read): the audit read
    other text, with train_fields and this step without them, or the other way round, or another text_column.

    Parameters:
        text_column: column holding the training text
        id_column: column holding training ids (unique; must match `train_id` in matches)
        mode: 'cut' removes matched spans (GPT-3), 'drop' removes whole documents
        kinds: which match kinds act: any of 'ngram', 'chunk', 'semantic' (null: 'ngram' only, GPT-3's rule)
        min_score: ignore matches scoring below this (n-gram/chunk overlap fraction in [0, 1], or cosine similarity in [-1, 1])
        margin_chars: characters also removed either side of a matched span (GPT-3: 200)
        min_piece_chars: drop kept pieces shorter than this (GPT-3: 200)
        max_pieces: drop a document whole when cutting leaves more pieces than this (GPT-3: 10)
        train_fields: the leakage_audit step's train_fields, when it read instruction-tuning rows ({instruction: prompt, input: context, response: completion}; instead of text_column): its offsets are into those fields joined, so each field is cut where the joined text is
    """

    name = "decontaminate"
    version = "5"  # 5: documents_matched counts the documents of data matched; 4: in cut mode an Enum text column comes out as String; 3: pieces keep the column types; 2: a cut document's pieces stay in its place (they came after the rest
    # of their batch)
    inputs = ("data", "matches")
    allow_empty_input = True

    def __init__(
        self,
        text_column: str = "text",
        id_column: str = "id",
        mode: Literal["cut", "drop"] = "cut",
        kinds: list[str] | None = None,
        min_score: Cosine = 0.0,
        margin_chars: NonNegativeInt = 200,
        min_piece_chars: NonNegativeInt = 200,
        max_pieces: PositiveInt = 10,
        train_fields: dict[str, str | None] | None = None,
    ):
        self.text_column = text_column
        self.id_column = id_column
        self.mode = mode
        self.kinds = kinds
        self.min_score = min_score
        self.margin_chars = margin_chars
        self.min_piece_chars = min_piece_chars
        self.max_pieces = max_pieces
        self.train_fields = present_roles(train_fields)  # a null role is an absent one, as in the audit

    def validate(self) -> None:
        check_train_fields(self.train_fields)
        known = match_kinds()
        if self.kinds == []:  # else it acted as null does, on the n-gram matches
            raise ParamError("kinds", "is empty, so no match would act; name the kinds, or leave it out for 'ngram'")
        bad = [k for k in (self.kinds or []) if k not in known]
        if bad:
            raise ParamError("kinds", f"unknown kind {bad[0]!r}; choose from {', '.join(known)}")

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        # Without train_fields the text column is checked by `_refuse_no_text`, whose refusal hints at train_fields.
        text = {c: "train_fields" for c in self._text_columns()} if self.train_fields else {}
        return {
            "data": {**text, self.id_column: "id_column"},
            "matches": {"train_id": None, "kind": None, "score": None,
                        "train_char_start": None, "train_char_end": None, "test_id": None},
        }

    def required_column_types(self) -> dict[str, dict[str, str]]:
        # The matches columns compared with training ids and with min_score, and cut at: refused at validate time.
        matches = {"train_id": "text", "test_id": "text", "kind": "text", "score": "numeric",
                   "train_char_start": "numeric", "train_char_end": "numeric"}
        data = {**super().required_column_types().get("data", {}), self.id_column: "scalar"}  # a list id: a failed cast
        return {"data": data, "matches": matches}

    def _text_columns(self) -> list[str]:
        return train_columns(self.text_column, self.train_fields)

    def _refuse_no_text(self, schema: dict, label: str | None) -> None:
        """The checks of `required_columns` for text_column (no train_fields): a missing one may be a corpus of
        instruction-tuning rows, which the audit read with train_fields, so the refusal says so."""
        if self.train_fields:
            return
        if self.text_column not in schema:
            raise InputDataError(f"input 'data' has no column '{self.text_column}' (named by parameter 'text_column'); "
                                 f"the available columns are: {list(schema)}", param="text_column", file=label,
                                 hint="for instruction-tuning rows, pass the leakage_audit step's train_fields")
        is_text, what = COLUMN_KINDS["text"]
        if not is_text(schema[self.text_column]):
            raise InputDataError(f"input 'data' column '{self.text_column}' (named by parameter 'text_column') is "
                                 f"{schema[self.text_column]}, not {what}", param="text_column", file=label)

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        self._refuse_no_text(polars_schema(inputs["data"].schema), inputs["data"].label)
        refuse_bad_id_column(inputs["data"], self.id_column, input_name="data")
        matches = inputs["matches"]
        start, end = pl.col("train_char_start"), pl.col("train_char_end")
        bad = (start > end) | (start.is_null() != end.is_null())
        bad_spans = matches.lazy().filter(bad).select("train_id", "train_char_start", "train_char_end").collect()
        if bad_spans.height:
            first = bad_spans.row(0, named=True)
            raise InputDataError(
                f"input 'matches' has {bad_spans.height:,} spans with train_char_start after train_char_end or only "
                f"one of the two given (e.g. train_id {first['train_id']!r}: {first['train_char_start']} to "
                f"{first['train_char_end']}); fix or drop those rows (both null = no span: the document is dropped)",
                param="train_char_start", file=matches.label)

    def output_schema(self, inputs):
        self._refuse_no_text(inputs["data"], None)  # (`pipeline validate`: the file is named from "input 'data'")
        return self._output_types(inputs["data"])

    def _output_types(self, schema: dict) -> dict:
        """The output's columns given the data's: the ids as String, `decontaminated_from` last, and in cut mode an
        Enum text column as String (a piece's text is none of its categories; a Categorical takes any text)."""
        cut = set(self._text_columns()) if self.mode == "cut" else set()
        out = {c: pl.String if c in cut and isinstance(t, pl.Enum) else t for c, t in schema.items() if c != ORIGIN}
        return {**out, self.id_column: pl.String, ORIGIN: pl.String}

    def side_output_names(self):
        return ("removed",)

    def side_output_schemas(self, inputs):
        return {"removed": REMOVED_SCHEMA}

    def run(self, ctx: Context, data: Dataset, matches: Dataset):
        kinds = self.kinds or ["ngram"]
        hits = matches.collect().filter(pl.col("kind").is_in(kinds) & (pl.col("score") >= self.min_score))
        by_doc = hits.group_by("train_id").agg(
            pl.col("train_char_start"), pl.col("train_char_end"), pl.col("test_id").unique().sort(), pl.col("kind").unique().sort()
        )
        last_ends = by_doc.select("train_id", pl.col("train_char_end").list.max().alias("last_end"))
        targets = {
            row["train_id"]: row for row in by_doc.iter_rows(named=True)
        }
        removed_rows: list[dict] = []
        stats = {"documents_in": 0, "documents_matched": 0, "documents_dropped": 0, "documents_cut": 0,
                 "pieces_kept": 0, "chars_in": 0, "chars_removed": 0}

        def batches():
            for batch in data.iter_batches():
                stats["documents_in"] += batch.height
                stats["chars_in"] += int(batch.select(self._text().str.len_chars().sum()).item() or 0)
                ids = batch.get_column(self.id_column).cast(pl.String)
                touched = ids.is_in(list(targets)) if targets else pl.Series([False] * batch.height)
                columns = [c for c in batch.columns if c != ORIGIN]  # a second pass's input has it: kept, as String
                origin = pl.col(ORIGIN).cast(pl.String) if ORIGIN in batch.columns else pl.lit(None, pl.String)
                batch = batch.with_row_index(_ROW).with_columns(origin.alias(ORIGIN))  # pieces take their row's place
                untouched = batch.filter(~touched)
                out = [untouched]
                texts = self._with_texts(batch.filter(touched))
                stats["documents_matched"] += texts.height  # (a train_id of matches not in data is not one)
                if self.mode == "cut":
                    self._refuse_spans_past_the_end(texts, last_ends, data.label)
                for row in texts.iter_rows(named=True):
                    out.extend(self._clean_one(row, targets[str(row[self.id_column])], removed_rows, stats))
                out = [f for f in out if f.height]
                if out:
                    # Pieces are built from Python rows: a Categorical or Enum column came back as String.
                    types = self._output_types({c: t for c, t in batch.schema.items() if c in columns})
                    yield pl.concat(out, how="diagonal_relaxed").sort(_ROW, maintain_order=True).select(
                        list(types)).cast(types)

        written = False
        for frame in batches():
            written = True
            yield frame
        if not written:
            # Every document dropped (or none in): the table still has its columns, or the step had none and the
            # next one refused it as "has no column 'text'".
            yield pl.DataFrame(schema=self.output_schema({"data": polars_schema(data.schema)}))
        removed = pl.DataFrame(removed_rows, schema=REMOVED_SCHEMA)
        ctx.write_side_output("removed", removed)
        for k, v in stats.items():
            ctx.record(k, v)

    def _text(self) -> pl.Expr:
        return text_expr(self.text_column, self.train_fields).cast(pl.String).fill_null("")

    def _with_texts(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` with each row's text as the audit read it, and what the join's strip took off its start."""
        if not self.train_fields:
            return frame.with_columns(self._text().alias(_TEXT), pl.lit(0).alias(_LEAD))
        raw = joined_fields(self.train_fields)
        return frame.with_columns(self._text().alias(_TEXT),
                                  (raw.str.len_chars() - raw.str.strip_chars_start().str.len_chars()).alias(_LEAD))

    def _refuse_spans_past_the_end(self, texts: pl.DataFrame, last_ends: pl.DataFrame, label: str) -> None:
        """Refuse a matched row whose text (`_with_texts`) ends before a span of its matches does.

        An audit's spans lie within the text it read, so such a span means this step reads another text: the
        audit joined train_fields and this step was given none (or the other way round), or another text_column.
        Cutting would then cut other characters than the audit matched, clipped at the text's end, and keep the leak.
        """
        lengths = texts.select(pl.col(self.id_column).cast(pl.String).alias("train_id"),
                               pl.col(_TEXT).str.len_chars().alias("length"))
        past = lengths.join(last_ends, on="train_id").filter(pl.col("last_end") > pl.col("length"))
        if not past.height:
            return
        first = past.row(0, named=True)
        read = "the train_fields joined" if self.train_fields else f"column '{self.text_column}'"
        raise InputDataError(
            f"a span in matches ends past its document's text as this step reads it ({read}): train_id "
            f"{first['train_id']!r} has a span to character {first['last_end']} of {first['length']}, so the audit "
            "read another text", param="train_fields" if self.train_fields else "text_column", file=label,
            hint="pass the leakage_audit step's own train_fields here, or none and its text_column if it read one")

    def _piece(self, row: dict, start: int, end: int) -> dict:
        """The text columns of the piece [start, end) of `row`'s text (`field_pieces` with train_fields)."""
        text = row[_TEXT]
        if not self.train_fields:
            return {self.text_column: text[start:end]}
        columns = self._text_columns()
        return dict(zip(columns, field_pieces([row[c] for c in columns], row[_LEAD], start, end, len(text))))

    def _clean_one(self, row: dict, target: dict, removed: list[dict], stats: dict) -> list[pl.DataFrame]:
        text = row[_TEXT]
        doc_id = str(row[self.id_column])
        base = {"train_id": doc_id, "test_ids": target["test_id"], "kinds": target["kind"]}
        starts = np.array([s for s in target["train_char_start"] if s is not None], np.int64)
        ends = np.array([e for e in target["train_char_end"] if e is not None], np.int64)
        if self.mode == "drop" or starts.size == 0:
            reason = "matched test item" if self.mode == "drop" else "matched test item (no character span to cut)"
            removed.append({**base, "reason": reason, "char_start": 0, "char_end": len(text), "text": text})
            stats["documents_dropped"] += 1
            stats["chars_removed"] += len(text)
            return []
        cuts = merge_spans(np.maximum(starts - self.margin_chars, 0), np.minimum(ends + self.margin_chars, len(text)))
        pieces, cursor = [], 0
        for s, e in cuts:
            pieces.append((cursor, s))
            removed.append({**base, "reason": f"matched span +/- {self.margin_chars} chars", "char_start": s,
                            "char_end": e, "text": text[s:e]})
            cursor = e
        pieces.append((cursor, len(text)))
        kept = []
        for s, e in pieces:
            columns = self._piece(row, s, e) if e - s >= max(self.min_piece_chars, 1) else {}
            if any(v is not None for v in columns.values()):  # (with train_fields, not only the line breaks between)
                kept.append((s, e, columns))
            elif e > s:
                removed.append({**base, "reason": f"piece shorter than {self.min_piece_chars} chars",
                                "char_start": s, "char_end": e, "text": text[s:e]})
        if len(kept) > self.max_pieces:
            for s, e, _ in kept:
                removed.append({**base, "reason": f"document cut into more than {self.max_pieces} pieces",
                                "char_start": s, "char_end": e, "text": text[s:e]})
            kept = []
        stats["chars_removed"] += len(text) - sum(e - s for s, e, _ in kept)
        if not kept:
            stats["documents_dropped"] += 1
            return []
        stats["documents_cut"] += 1
        stats["pieces_kept"] += len(kept)
        rows = []
        for k, (_, _, columns) in enumerate(kept):
            piece = {**row, **columns}
            piece[self.id_column] = f"{doc_id}#{k}"
            piece[ORIGIN] = doc_id if row[ORIGIN] is None else row[ORIGIN]  # a piece of a piece: the first origin
            rows.append(piece)
        return [pl.DataFrame(rows, infer_schema_length=None)]

    @classmethod
    def example(cls):
        from pydoc_data.topics import topics

        names = sorted(topics)[:6]
        data = pl.DataFrame({"id": names, "text": [topics[t] for t in names]})
        text = topics[names[2]]
        matches = pl.DataFrame({
            "test_id": ["q1"], "train_id": [names[2]], "kind": ["ngram"], "score": [1.0],
            "train_char_start": [min(300, len(text) // 2)], "train_char_end": [min(400, len(text))],
        })
        return {"margin_chars": 50, "min_piece_chars": 50}, {"data": data, "matches": matches}


