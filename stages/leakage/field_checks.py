"""What `fields` (eval-aware test items) and `train_fields` (instruction/response training data) may name.

A role given as null is a role left out (`{question: q, choices: null}` = `{question: q}`), so one config can
switch a role off. The test columns a role names must be of a kind the variants can use: question and passage
are text, choices are a list, an answer is one value a row: text (the answer, or its letter among the choices),
an integer (a 0-based index into the choices when a choices role is named, else the number itself) or a boolean.
A role column that is null in every row, or an item with neither a question nor a passage, would be audited
as nothing and reported `clean`: both are refused, naming the column or the ids.
"""

from __future__ import annotations

import polars as pl

from pipeline.errors import InputDataError
from pipeline.io import Dataset
from stages._ids import null_count

TEXT_ROLES = ("question", "passage")  # an item's own words: a role column of another type is refused
ROLE_KINDS = {"question": "text", "passage": "text", "answer": "scalar"}  # see `pipeline.columns.COLUMN_KINDS`
SHOWN_IDS = 3  # ids named in a refusal of some items


def present_roles(roles: dict[str, str | None] | None) -> dict[str, str] | None:
    """The roles that name a column: a null role is an absent one (README: 'a role may be null')."""
    return None if roles is None else {role: column for role, column in roles.items() if column is not None}


def field_param(role: str) -> str:
    """The parameter a refusal names: the role inside `fields`, so the line says which role is wrong."""
    return f"fields.{role}"


def field_column_kinds(fields: dict[str, str]) -> dict[str, str]:
    """{test column: kind} of the roles whose kind `pipeline validate` can check from a schema."""
    return {fields[role]: kind for role, kind in ROLE_KINDS.items() if role in fields}


def refuse_unusable_fields(test: Dataset, fields: dict[str, str], id_column: str) -> None:
    """Refuse, before the audit reads anything else, test data the fields cannot build variants from."""
    schema = test.lazy().collect_schema()
    choices = fields.get("choices")
    if choices is not None and not isinstance(schema[choices], (pl.List, pl.Array)):
        raise InputDataError(f"input 'test' column '{choices}' (role choices) is {schema[choices]}, not a list of "
                             "options; give each item's options as a list column", param=field_param("choices"),
                             file=test.label)
    answer = fields.get("answer")
    if test.num_rows:
        for role, column in fields.items():
            if null_count(test, column) == test.num_rows:
                raise InputDataError(
                    f"input 'test' column '{column}' (role {role}) is null in every row, so no item has a {role} to "
                    f"audit; name the column that holds them{'' if role == 'question' else ', or leave the role out'}",
                    param=field_param(role), file=test.label)
    if answer is not None and choices is not None and schema[answer].is_float():
        # 1.0 would be read as the answer's text "1.0", not as the second option (pandas reads an index column with
        # a missing value as floats).
        raise InputDataError(f"input 'test' column '{answer}' (role answer) is {schema[answer]}: with choices an answer "
                             "is a 0-based integer index, a letter or the answer's text; cast it to an integer",
                             param=field_param("answer"), file=test.label)
    frame = test.lazy().with_row_index("_row")
    _refuse_items_without_text(frame, fields, id_column, test.label)
    if answer is not None and choices is not None and schema[answer].is_integer():
        options = pl.col(choices)
        sizes = options.arr.len() if isinstance(schema[choices], pl.Array) else options.list.len()
        _refuse_answers_out_of_range(frame, answer, sizes, id_column, test.label)


def _refuse_items_without_text(frame: pl.LazyFrame, fields: dict[str, str], id_column: str, label: str) -> None:
    """Rows with neither a question nor a passage (null or blank): their only variants would be bare options."""
    columns = [fields[role] for role in TEXT_ROLES if role in fields]
    empty = pl.all_horizontal(pl.col(c).cast(pl.String).str.strip_chars().fill_null("") == "" for c in columns)
    count, ids = _offending(frame, empty, id_column)
    if count:
        roles = " and ".join(f"'{c}'" for c in columns)
        raise InputDataError(f"input 'test' has {count:,} item{'s' * (count != 1)} with no text (column{'s' * (len(columns) > 1)} "
                             f"{roles} null or empty), e.g. {ids}; an item with no text cannot be audited (it would "
                             "count as clean); drop or fill them first", param=field_param("question"), file=label)


def _refuse_answers_out_of_range(frame: pl.LazyFrame, answer: str, options: pl.Expr, id_column: str,
                                 label: str) -> None:
    """An integer answer indexes its item's choices (`options`: how many it has): one past them points at no option
    (a wrong column, or 1-based answers). An item without choices just has no question + answer variant."""
    bad = options.is_not_null() & ((pl.col(answer) < 0) | (pl.col(answer) >= options))
    count, ids = _offending(frame, bad, id_column)
    if count:
        raise InputDataError(f"input 'test' column '{answer}' (role answer) has {count:,} integer answers outside "
                             f"their item's choices (read as 0-based indices), e.g. {ids}; fix the answers "
                             "(a 1-based column needs 1 subtracted)", param=field_param("answer"), file=label)


def _offending(frame: pl.LazyFrame, condition: pl.Expr, id_column: str) -> tuple[int, str]:
    """How many rows meet `condition`, and the first few by id (or row number, without an id column)."""
    has_ids = id_column in frame.collect_schema()
    hits = frame.filter(condition.fill_null(False)).select(pl.col(id_column if has_ids else "_row").cast(pl.String))
    found = hits.collect().to_series()
    shown = ", ".join(repr(i) for i in found.head(SHOWN_IDS).to_list())
    return found.len(), f"{'ids' if has_ids else 'rows'} {shown}"
