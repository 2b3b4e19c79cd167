"""Instruction/response training data (`train_fields`, stages/leakage/variants.py)."""

from __future__ import annotations

from pydoc_data.topics import topics

import polars as pl
import pytest

from pipeline.errors import ParamError
from stages.leakage import LeakageAudit


def test_training_pairs_are_joined_so_question_plus_answer_leaks_are_found(tmp_path):
    names = sorted(topics)
    passages = [topics[n].split() for n in names[:12]]
    # Training data in instruction-tuning form: the first 40 words of a passage ask, the next 40 answer.
    train = pl.DataFrame({"id": names[:12], "prompt": [" ".join(p[:40]) for p in passages],
                          "completion": [" ".join(p[40:80]) for p in passages]})
    # A test item that spans the prompt/response boundary: found only when the pair is read as one text.
    test = pl.DataFrame({"id": ["leaked", "clean"], "text": [" ".join(passages[4][20:60]),
                                                            " ".join(topics[names[40]].split()[:40])]})
    audit = LeakageAudit(chunk_overlap=False, semantic=False, train_fields={"instruction": "prompt", "response": "completion"})
    out = audit.execute(train=train, test=test, workdir=tmp_path).table
    leaked = out.filter(pl.col("test_id") == "leaked").row(0, named=True)
    assert leaked["verdict"] == "contaminated" and leaked["ngram_overlap"] == 1.0
    assert leaked["train_id"] == names[4]
    assert passages[4][50] in leaked["train_evidence"]  # the span read back from the joined pair, past the boundary
    assert out.filter(pl.col("test_id") == "clean")["verdict"][0] == "clean"
    assert "train_fields" in audit.required_columns()["train"].values()


def test_bad_train_fields_are_refused():
    with pytest.raises(ParamError, match="unknown role 'question'"):
        LeakageAudit(train_fields={"question": "q"}).validate()
    with pytest.raises(ParamError, match="names no column"):
        LeakageAudit(train_fields={}).validate()


def test_a_passage_and_question_item_also_gets_its_question_alone():
    from stages.leakage.variants import question_tail, raw_variants

    passage = ("This question refers to the following information. The tariff of 1828 raised duties on imported "
               "goods and angered the planters of the southern states, who sold cotton abroad.")
    item = f"{passage} Which of the following was a direct response to the tariff described above?"
    assert question_tail(item) == "Which of the following was a direct response to the tariff described above?"
    assert question_tail("What is the capital of France?") is None  # one sentence: the item is its own question
    assert question_tail(f"{passage} Why?") is None  # too short to stand alone
    statement = f"{passage} The planters then threatened to nullify the tariff in their state."
    assert question_tail(statement) and question_tail(statement, questions_only=True) is None
    # With a passage field, the question column is the tail variant as it is.
    frame = pl.DataFrame({"p": [passage], "q": ["Which act answered it?"]})
    names = [name for name, _ in raw_variants(frame, {"question": "q", "passage": "p"})[0]]
    assert names == ["question", "question tail"]


def test_a_question_after_a_cited_passage_is_its_own_line():
    """Exam items cite their passage's source on a line of its own, with no full stop, right before the
    question: the line break ends the sentence. Wrapped prose, whose lines end inside a sentence, is not cut."""
    from stages.leakage.variants import question_tail

    item = ("This question refers to the following information.\n\"The far-reaching, the boundless future will be "
            "the era of American greatness.\"\nJohn L. O'Sullivan, \"The Great Nation of Futurity,\" 1839\n"
            "By what means did the United States take possession of the Oregon Territory?")
    assert question_tail(item) == "By what means did the United States take possession of the Oregon Territory?"
    assert question_tail(item, questions_only=True) == question_tail(item)
    unfinished = item.rsplit("\n", 1)[0] + "\nBecause of the Charter of Privileges, Pennsylvania became"
    assert question_tail(unfinished) == "Because of the Charter of Privileges, Pennsylvania became"
    wrapped = ("The tariff of 1828 raised the duties on imported goods of every kind and angered the planters of the "
               "south, who feared that Britain would answer it with duties of its own. The planters of the "
               "southern\nStates sold their cotton abroad and bought their goods from Europe.")
    assert question_tail(wrapped) == ("The planters of the southern\nStates sold their cotton abroad and bought "
                                      "their goods from Europe.")
    # A wrapped line that ends in a year or a name is as long as the line before it: not a source line.
    wrapped_year = ("The tariff of 1828 raised the duties on imported goods of every kind and angered the\n"
                    "planters of the south, who feared that Britain would answer the tariff with duties of\n"
                    "its own and sell them nothing. The planters of the south sold cotton to a company and\n"
                    "then to Britain. The company that the planters of the south founded in 1990\n"
                    "The Hague office opened later, so how many offices did the company have by then?")
    assert question_tail(wrapped_year) == wrapped_year.split("Britain. ")[1]
    assert question_tail(item.replace("\n", "\r\n")) == question_tail(item)  # Windows line ends
    poem = ("Remember, Christians, Negroes, black as Cain,\nMay be refin'd, and join th' angelic train.\n"
            "\u2014Phillis Wheatley, Poems on Various Subjects, Religious and Moral, 1773\n"
            "The point of the poem can best be compared to which of the following?")
    assert question_tail(poem) == "The point of the poem can best be compared to which of the following?"


def test_training_rows_with_every_field_null_are_refused_not_skipped(tmp_path):
    # A pair with one role null is legitimate (an instruction with no input); a row with all of them null has no
    # text, like a null training text, and was read as '' without a word: the item it leaked read 'clean' (exit 0).
    from cli_failures import fails_cleanly

    from pipeline.errors import InputDataError

    names = sorted(topics)
    passages = [topics[n].split() for n in names[:6]]
    train = pl.DataFrame({"id": names[:6], "prompt": [" ".join(p[:40]) for p in passages],
                          "context": [None] * 6, "completion": [" ".join(p[40:80]) for p in passages]})
    fields = {"instruction": "prompt", "input": "context", "response": "completion"}
    test = pl.DataFrame({"id": ["leaked"], "text": [" ".join(passages[4][20:60])]})
    audit = LeakageAudit(chunk_overlap=False, semantic=False, train_fields=fields)
    assert audit.apply(train=train.with_columns(completion=pl.lit(None, pl.String)), test=test).height == 1
    emptied = train.with_columns(pl.when(pl.col("id").is_in(names[3:5])).then(None).otherwise(pl.col(c)).alias(c)
                                 for c in ("prompt", "completion"))
    with pytest.raises(InputDataError, match="input 'train' has 2 rows with no text \\(columns 'prompt', 'context', "
                                             "'completion' all null\\); a training document") as err:
        audit.apply(train=emptied, test=test)
    assert err.value.param == "train_fields"
    emptied.write_parquet(tmp_path / "train.parquet")
    test.write_parquet(tmp_path / "test.parquet")
    proc = fails_cleanly(tmp_path, f"""
name: bad
steps:
  - id: audit
    stage: leakage_audit
    inputs: {{train: {tmp_path / 'train.parquet'}, test: {tmp_path / 'test.parquet'}}}
    params: {{chunk_overlap: false, semantic: false, train_fields: {{instruction: prompt, input: context, response: completion}}}}
""", "step 'audit' (stage 'leakage_audit'), parameter 'train_fields'", f"file '{tmp_path / 'train.parquet'}'",
                         "input 'train' has 2 rows with no text")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "bad" / "audit").exists()
