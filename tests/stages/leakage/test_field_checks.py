"""What `fields` / `train_fields` may name (stages/leakage/field_checks.py): null roles are left out; role columns
of the wrong kind, null in every row, items with no text and answers outside their choices are refused."""

from __future__ import annotations

from pydoc_data.topics import topics

import polars as pl
import pytest
from cli_failures import audit_config, fails_cleanly, refused_by_validate
from conftest import run_cli, write_config

from pipeline.errors import InputDataError
from stages.leakage import LeakageAudit
from stages.leakage.variants import raw_variants

NAMES = sorted(topics)
FIELDS = {"question": "q", "choices": "options", "answer": "label"}
QUICK = {"chunk_overlap": False, "semantic": False}


@pytest.fixture(scope="module")
def train():
    return pl.DataFrame({"id": NAMES[:6], "text": [topics[n] for n in NAMES[:6]]})


def _items(**columns) -> pl.DataFrame:
    """Three multiple-choice items; the first is a training passage's opening words (leaked)."""
    base = {"id": ["leaked", "b", "c"], "q": [" ".join(topics[n].split()[:40]) for n in (NAMES[3], NAMES[40], NAMES[41])],
            "options": [["x", "y"], ["x", "y"], ["x", "y"]], "label": [1, 0, 1]}
    return pl.DataFrame(base | columns)


def _config(tmp_path, train, test, fields="{question: q, choices: options, answer: label}", extra="") -> str:
    train.write_parquet(tmp_path / "train.parquet")
    test.write_parquet(tmp_path / "test.parquet")
    return audit_config(tmp_path, f"chunk_overlap: false, semantic: false, fields: {fields}{extra}")


def test_a_question_column_null_in_every_row_is_refused_not_reported_clean(train, tmp_path):
    # It was audited as bare options and every item came out 'clean' (exit 0).
    test = _items(q=pl.Series([None] * 3, dtype=pl.String))
    proc = fails_cleanly(tmp_path, _config(tmp_path, train, test),
                         "step 'audit' (stage 'leakage_audit'), parameter 'fields.question'",
                         f"file '{tmp_path / 'test.parquet'}'", "column 'q' (role question) is null in every row")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "bad" / "audit").exists()
    with pytest.raises(InputDataError, match="column 'label' \\(role answer\\) is null in every row.*leave the role out"):
        LeakageAudit(**QUICK, fields=FIELDS).apply(train=train, test=_items(label=pl.Series([None] * 3, dtype=pl.Int64)))


def test_rows_missing_some_roles_get_the_variants_they_can_build_and_items_with_no_text_are_named(train):
    some = _items(label=[1, None, 0], options=[["x", "y"], None, ["x", "y"]])
    findings = LeakageAudit(**QUICK, fields=FIELDS).apply(train=train, test=some)
    assert findings["verdict"].to_list() == ["contaminated", "clean", "clean"]
    assert [name for name, _ in raw_variants(some, FIELDS)[1]] == ["question"]
    # An integer answer is an index: without its item's choices it names no option (it was appended as '1').
    assert [n for n, _ in raw_variants(some.with_columns(label=pl.lit(1)), FIELDS)[1]] == ["question"]
    # A question missing where a passage stands is fine; an item with neither has no text at all.
    passages = some.with_columns(p=pl.Series(["", "A passage.", None]), q=pl.Series(["Why?", None, "  "]))
    with pytest.raises(InputDataError, match="has 1 item with no text \\(columns 'q' and 'p' null or empty\\), "
                                             "e.g. ids 'c'") as err:
        LeakageAudit(**QUICK, fields=FIELDS | {"passage": "p"}).apply(train=train, test=passages)
    assert err.value.param == "fields.question"


def test_null_roles_are_left_out_in_fields_and_train_fields(train, tmp_path):
    # A null role was refused by the parameter check ("expects dict[str, str]"), though README says it may be null.
    text = _config(tmp_path, train, _items(), fields="{question: q, choices: null, answer: null}",
                   extra=", train_fields: {instruction: text, input: null}")
    proc = run_cli("validate", str(write_config(tmp_path / "c.yaml", text)))
    assert proc.returncode == 0, proc.stderr
    audit = LeakageAudit(**QUICK, fields={"question": "q", "choices": "options", "answer": None},
                         train_fields={"instruction": "text", "response": None})
    assert audit.fields == {"question": "q", "choices": "options"} and audit.train_fields == {"instruction": "text"}
    assert audit.apply(train=train, test=_items())["verdict"][0] == "contaminated"


def test_role_columns_of_the_wrong_kind_are_refused_naming_role_column_and_kind(train, tmp_path):
    # An integer question was cast to text (or failed inside the audit with a TypeError); now validate refuses it.
    message = refused_by_validate(tmp_path / "c.yaml", _config(tmp_path, train, _items(q=[1, 2, 3])))
    assert "parameter 'fields.question'" in message and f"file '{tmp_path / 'test.parquet'}'" in message
    assert "column 'q' (named by parameter 'fields.question') is Int64, not text" in message
    with pytest.raises(InputDataError, match="2 integer answers outside their item's choices.*ids 'b', 'c'"):
        LeakageAudit(**QUICK, fields=FIELDS).apply(train=train, test=_items(label=[1, 2, -1]))
    # A float index was read as the answer's text: "1.0", not the second option.
    with pytest.raises(InputDataError, match="'label' \\(role answer\\) is Float64: with choices .* cast it to an integer"):
        LeakageAudit(**QUICK, fields=FIELDS).apply(train=train, test=_items(label=[1.0, 0.0, None]))
    with pytest.raises(InputDataError, match="'options' \\(role choices\\) is String, not a list"):
        LeakageAudit(**QUICK, fields=FIELDS).apply(train=train, test=_items(options=["x y", "x y", "x y"]))


def test_an_item_with_only_a_question_role_is_audited_whole_not_as_its_last_sentence(train):
    # Without choices or answer the last variant is the question tail, which stood for the whole item: a leaked
    # 40-word question was audited as its last 7 words and reported clean.
    findings = LeakageAudit(**QUICK, fields={"question": "q"}).apply(train=train, test=_items())
    assert findings["verdict"].to_list() == ["contaminated", "clean", "clean"]


def test_answers_without_choices_are_the_answer_itself_integers_and_booleans_included(train, tmp_path):
    # A GSM8K-style final number, or a BoolQ-style yes/no, is the answer's own text; only with a choices role is
    # an integer an index. (Wave 23's first cut refused both: a Boolean by validate, an integer when the step ran.)
    numbers = _items().with_columns(label=pl.Series([42, 7, 0]))
    variants = raw_variants(numbers, {"question": "q", "answer": "label"})
    assert [text.split()[-1] for name, text in variants[0] if name == "question+answer"] == ["42"]
    yes_no = _items().with_columns(label=pl.Series([True, False, True]))
    assert raw_variants(yes_no, {"question": "q", "answer": "label"})[1][-1] == ("question+answer",
                                                                                 f"{yes_no['q'][1]} False")
    proc = run_cli("validate", str(write_config(tmp_path / "c.yaml", _config(tmp_path, train, yes_no,
                                                                            fields="{question: q, answer: label}"))))
    assert proc.returncode == 0, proc.stderr
    assert LeakageAudit(**QUICK, fields={"question": "q", "answer": "label"}).apply(
        train=train, test=numbers)["verdict"].to_list() == ["contaminated", "clean", "clean"]


def test_the_built_in_kinds_read_the_prompt_as_documented(train):
    """README and the `fields` parameter: n-gram, chunk and semantic read one text per item, the full prompt (or the
    test's text column); an item leaked as question + answer scores lower there, since its wrong options count."""
    words = topics[NAMES[3]].split()
    question, answer = " ".join(words[:30]), " ".join(words[30:60])
    wrong = [" ".join(topics[NAMES[50]].split()[i * 30 : (i + 1) * 30]) for i in range(3)]
    items = pl.DataFrame({"id": ["x"], "q": [question], "options": [[wrong[0], answer, wrong[1], wrong[2]]], "label": [1]})
    prompt = LeakageAudit(**QUICK, fields=FIELDS).apply(train=train, test=items).row(0, named=True)
    assert prompt["verdict"] == "partial" and prompt["ngram_overlap"] < 0.5
    with_text = items.with_columns(text=pl.lit(f"{question} {answer}"))
    assert LeakageAudit(**QUICK, fields=FIELDS).apply(train=train, test=with_text)["ngram_overlap"].to_list() == [1.0]
    doc = next(spec.doc for spec in LeakageAudit.param_specs() if spec.name == "fields")
    assert "the built-in kinds (ngram, chunk_overlap, semantic) read one text per item" in doc
