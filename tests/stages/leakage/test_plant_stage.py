"""plant_leakage: planted rows appear in the training corpus with truth labels, reproducibly, and the audit finds them."""

from __future__ import annotations

from pydoc_data.topics import topics

import polars as pl
import pytest

from pipeline.errors import InputDataError, ParamError
from stages.leakage import HEAVY_KINDS, PLANT_KINDS, LeakageAudit, PlantLeakage

NAMES = sorted(topics)


@pytest.fixture(scope="module")
def corpora():
    train = pl.DataFrame({"id": NAMES[:30], "text": [topics[t] for t in NAMES[:30]]})
    items = [" ".join(topics[t].split()[:80]) for t in NAMES[30:] if len(topics[t].split()) >= 80][:32]
    test = pl.DataFrame({"id": [f"q{i}" for i in range(len(items))], "text": items,
                         "rephrased": [f"In other words: {t.lower()}" for t in items]})
    return train, test


def test_every_kind_is_planted_with_truth_labels(corpora):
    train, test = corpora
    stage = PlantLeakage(paraphrase_column="rephrased", rate=0.5)
    result = stage.execute(train=train, test=test, seed=3)
    out, truth = result.table, result.side_outputs["truth"]
    assert truth.height == test.height and truth["planted"].sum() == 16
    assert set(truth["plant_kind"].drop_nulls()) == set(PLANT_KINDS + HEAVY_KINDS + ("paraphrase",))
    planted = out.filter(pl.col("planted_from").is_not_null())
    assert planted.height == 16 and out.height == train.height + 16
    assert set(planted["id"]) == set(truth["train_id"].drop_nulls())
    by_item = dict(zip(truth["test_id"], truth["plant_kind"]))
    texts = dict(zip(test["id"], test["text"]))
    for test_id, text in zip(planted["planted_from"], planted["text"]):
        if by_item[test_id] == "verbatim":
            assert text == texts[test_id]
        if by_item[test_id] == "paraphrase":
            assert text.startswith("In other words")
        if by_item[test_id] == "heavy":
            assert text != texts[test_id] and len(set(text.split()) & set(texts[test_id].split())) > 20
    again = stage.execute(train=train, test=test, seed=3)
    assert again.table.equals(out) and again.side_outputs["truth"].equals(truth)
    assert not stage.execute(train=train, test=test, seed=4).side_outputs["truth"].equals(truth)


def test_the_default_audit_flags_planted_copies_and_not_controls(corpora, tmp_path):
    train, test = corpora
    result = PlantLeakage(kinds=["verbatim", "surface", "partial"], rate=0.5).execute(
        train=train, test=test, seed=1)
    audited = LeakageAudit(semantic=False, chunk_overlap=False, subset_column="id").execute(
        train=result.table, test=test, truth=result.side_outputs["truth"], workdir=tmp_path)
    findings = audited.table
    quality = audited.stats["evidence_precision_recall"]
    assert quality["ngram"]["recall"] == 1.0 and quality["verdict"]["positives"] == 16
    md = (tmp_path / "report.md").read_text()
    assert "Precision and recall per evidence kind" in md and "one-item subsets" in md
    judged = findings.join(result.side_outputs["truth"], on="test_id")
    planted = judged.filter("planted")
    assert (planted["verdict"] != "clean").all()
    # pydoc topics quote each other (e.g. "compound" holds "for"), so a control may be truly in the
    # corpus; what the plants must not do is make a control look leaked.
    flagged_controls = judged.filter(~pl.col("planted"), pl.col("verdict") != "clean")
    assert not flagged_controls["train_id"].str.starts_with("planted-").any()


def test_bad_kinds_are_param_errors():
    with pytest.raises(ParamError, match="kinds"):
        PlantLeakage(kinds=["photocopied"]).validate()
    with pytest.raises(ParamError, match="paraphrase_column"):
        PlantLeakage(kinds=["paraphrase"]).validate()


def test_integer_train_ids_come_out_as_strings_beside_planted_ids(corpora):
    train, test = corpora
    train = train.with_columns(id=pl.int_range(pl.len(), dtype=pl.Int64))
    stage = PlantLeakage(kinds=["verbatim"], rate=0.5)
    result = stage.execute(train=train, test=test, seed=0)
    out = result.table
    assert out.schema["id"] == pl.String == stage.output_schema({"train": train.schema})["id"]
    assert out["id"].head(train.height).to_list() == [str(i) for i in range(train.height)]
    assert set(out["id"].tail(16)) == set(result.side_outputs["truth"]["train_id"].drop_nulls())


def _refused(tmp_path, train, test, **params) -> InputDataError:
    path = tmp_path / "test.parquet"
    test.write_parquet(path)
    with pytest.raises(InputDataError) as err:
        PlantLeakage(**params).execute(train=train, test=str(path))
    assert err.value.file == str(path)
    return err.value


def test_without_training_ids_truth_names_each_plant_by_its_row_number(corpora):
    # Truth said 'planted-q3' for a row that had no id at all; the audit names an id-less row by its number.
    train, test = corpora
    result = PlantLeakage(kinds=["verbatim"], rate=0.25).execute(train=train.drop("id"), test=test, seed=3)
    out, truth = result.table, result.side_outputs["truth"]
    planted = truth.filter("planted")
    assert planted.height == 8
    for row in planted.iter_rows(named=True):
        at = int(row["train_id"])
        assert at >= train.height and out["planted_from"][at] == row["test_id"]
        assert out["text"][at] == test.filter(pl.col("id") == row["test_id"])["text"][0]


@pytest.mark.parametrize(("rate", "items", "planted"), [(0.5, 5, 3), (0.5, 7, 4), (0.15, 10, 2), (0.5, 1, 1)])
def test_the_planted_count_rounds_a_half_up_and_the_realised_rate_is_recorded(corpora, rate, items, planted):
    # Python's round (half to even) planted 2 of 5 at rate 0.5 and 1 of 10 at 0.15 (the float 1.4999...).
    train, test = corpora
    result = PlantLeakage(kinds=["verbatim"], rate=rate).execute(train=train, test=test.head(items), seed=3)
    assert result.side_outputs["truth"]["planted"].sum() == planted
    assert result.stats["planted_rate"] == round(planted / items, 6)


def test_duplicate_test_ids_are_refused(corpora, tmp_path):
    train, test = corpora
    error = _refused(tmp_path, train, test.with_columns(id=pl.lit(1)))
    assert error.param == "id_column" and "duplicate ids" in error.message


def test_null_test_texts_are_refused(corpora, tmp_path):
    train, test = corpora
    error = _refused(tmp_path, train, test.with_columns(text=pl.lit(None, pl.String)))
    assert error.param == "text_column" and "null texts" in error.message


def test_a_paraphrase_column_with_no_paraphrase_is_refused_but_some_nulls_are_controls(corpora, tmp_path):
    train, test = corpora
    error = _refused(tmp_path, train, test.with_columns(rephrased=pl.lit(None, pl.String)),
                     kinds=["paraphrase"], paraphrase_column="rephrased")
    assert error.param == "paraphrase_column" and "no paraphrase" in error.message
    some = test.with_columns(rephrased=pl.when(pl.int_range(pl.len()) % 2 == 0).then("rephrased"))
    result = PlantLeakage(kinds=["paraphrase"], paraphrase_column="rephrased", rate=1.0).execute(train=train, test=some)
    truth = result.side_outputs["truth"]
    assert truth["planted"].sum() == test.height // 2


def test_duplicate_training_ids_are_refused_in_one_line_naming_the_train_file(corpora, tmp_path):
    # A repeated training id was planted beside (exit 0): the audit then names either twin as the matched document.
    from cli_failures import fails_cleanly

    train, test = corpora
    train_path, test_path = tmp_path / "train.parquet", tmp_path / "test.parquet"
    pl.concat([train, train.head(2)]).write_parquet(train_path)
    test.write_parquet(test_path)
    proc = fails_cleanly(tmp_path, f"""
name: bad
steps:
  - id: plant
    stage: plant_leakage
    inputs: {{train: {train_path}, test: {test_path}}}
    params: {{kinds: [verbatim]}}
""", "step 'plant' (stage 'plant_leakage'), parameter 'id_column'", f"file '{train_path}'",
                         "input 'train' column 'id' holds duplicate ids (2 ids repeated")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "bad" / "plant").exists()
