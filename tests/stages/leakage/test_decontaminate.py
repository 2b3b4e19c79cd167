"""decontaminate: matched spans leave the training corpus, and everything removed is accounted for."""

from __future__ import annotations

from pydoc_data.topics import topics

import polars as pl
import pytest

from pipeline.errors import InputDataError, ParamError
from stages.leakage import Decontaminate, LeakageAudit

TOPICS = sorted(topics)


@pytest.fixture(scope="module")
def corpus() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    train = pl.DataFrame({"id": TOPICS, "text": [topics[t] for t in TOPICS]})
    words = topics["lambda"].split()
    test = pl.DataFrame({
        "id": ["lambda-copy", "slicings-copy"],
        "text": [" ".join(words[10:70]), " ".join(topics["slicings"].split()[20:90]).upper()],
    })
    matches = LeakageAudit(chunk_overlap=False, semantic=False).execute(train=train, test=test).side_outputs["matches"]
    return train, test, matches


def test_cut_removes_the_matched_spans_with_a_margin(corpus):
    train, test, matches = corpus
    result = Decontaminate(margin_chars=200, min_piece_chars=200).execute(data=train, matches=matches)
    cleaned, removed = result.table, result.side_outputs["removed"]
    touched = set(matches["train_id"])
    assert touched >= {"lambda", "slicings"}
    untouched = cleaned.filter(pl.col("decontaminated_from").is_null())
    assert set(untouched["id"]) == set(TOPICS) - touched
    assert untouched.sort("id")["text"].equals(train.filter(~pl.col("id").is_in(touched)).sort("id")["text"])
    # Pieces of a cut document keep their origin; nothing of the matched span survives in them.
    pieces = cleaned.filter(pl.col("decontaminated_from") == "lambda")
    assert all(i.startswith("lambda#") for i in pieces["id"])
    span = matches.filter(pl.col("train_id") == "lambda").row(0, named=True)
    leaked = topics["lambda"][span["train_char_start"]:span["train_char_end"]]
    assert all(leaked not in t for t in pieces["text"])
    assert all(len(t) >= 200 for t in cleaned.filter(pl.col("decontaminated_from").is_not_null())["text"])
    # Every character of a touched document is either kept or in `removed`, with a reason.
    for doc in touched:
        kept = sum(len(t) for t in cleaned.filter(pl.col("decontaminated_from") == doc)["text"])
        gone = removed.filter(pl.col("train_id") == doc)
        assert kept + int((gone["char_end"] - gone["char_start"]).sum()) == len(topics[doc])
        assert gone["reason"].null_count() == 0 and gone["test_ids"].list.len().min() >= 1
    margin = removed.filter(pl.col("reason").str.starts_with("matched span")).row(0, named=True)
    assert margin["char_end"] - margin["char_start"] >= 200
    assert result.stats["documents_matched"] == len(touched)


def test_re_audit_after_decontamination_is_clean(corpus):
    train, test, matches = corpus
    cleaned = Decontaminate().apply(data=train, matches=matches)
    findings = LeakageAudit(chunk_overlap=False, semantic=False).apply(train=cleaned.drop("decontaminated_from"), test=test)
    assert findings["verdict"].to_list() == ["clean", "clean"]


def test_drop_mode_removes_whole_documents(corpus):
    train, _, matches = corpus
    result = Decontaminate(mode="drop").execute(data=train, matches=matches)
    touched = set(matches["train_id"])
    assert result.table.height == train.height - len(touched)
    removed = result.side_outputs["removed"]
    assert set(removed["train_id"]) == touched
    assert (removed["char_start"] == 0).all() and (removed["reason"] == "matched test item").all()


def test_too_many_pieces_drop_the_document():
    text = topics["lambda"]
    data = pl.DataFrame({"id": ["d"], "text": [text]})
    step = max(len(text) // 6, 1)
    matches = pl.DataFrame({
        "test_id": [f"q{i}" for i in range(5)], "train_id": ["d"] * 5, "kind": ["ngram"] * 5, "score": [1.0] * 5,
        "train_char_start": [i * step + 10 for i in range(1, 6)], "train_char_end": [i * step + 20 for i in range(1, 6)],
    })
    cut = Decontaminate(margin_chars=0, min_piece_chars=1, max_pieces=3).execute(data=data, matches=matches)
    assert cut.table.height == 0
    assert cut.side_outputs["removed"]["reason"].str.contains("more than 3 pieces").any()
    # Every document dropped: the table keeps its columns (it had none, and the next step refused it).
    assert cut.table.schema == pl.Schema({"id": pl.String, "text": pl.String, "decontaminated_from": pl.String})
    kept = Decontaminate(margin_chars=0, min_piece_chars=1, max_pieces=10).apply(data=data, matches=matches)
    assert kept.height == 6


def test_cut_pieces_keep_their_document_place(corpus):
    # They came after every untouched row of their batch: the corpus's order (a curriculum, a split by position) lost.
    train, _, matches = corpus
    cleaned = Decontaminate(margin_chars=0, min_piece_chars=1).apply(data=train, matches=matches)
    origin = cleaned.select(pl.coalesce("decontaminated_from", "id")).to_series().unique(maintain_order=True)
    assert origin.to_list() == train["id"].to_list()


def test_cut_pieces_keep_the_column_types(corpus):
    # A piece is built from a Python row: a Categorical or Enum column of the corpus came out as String.
    train, _, matches = corpus
    typed = train.with_columns(source=pl.lit("docs").cast(pl.Categorical), n=pl.int_range(pl.len(), dtype=pl.Int16),
                               kind=pl.lit("a").cast(pl.Enum(["a", "b"])))
    cleaned = Decontaminate().apply(data=typed, matches=matches)
    assert cleaned.filter(pl.col("decontaminated_from").is_not_null()).height > 0
    assert cleaned.schema == pl.Schema({**typed.schema, "decontaminated_from": pl.String})


def test_kinds_and_min_score_select_matches(corpus):
    train, _, matches = corpus
    untouched = Decontaminate(kinds=["semantic"]).apply(data=train, matches=matches)
    assert untouched.height == train.height and untouched["decontaminated_from"].null_count() == train.height
    halved = matches.with_columns(pl.col("score") / 2)  # every score <= 0.5 (above 1 is refused: see test_bad_params)
    none = Decontaminate(min_score=0.51).apply(data=train, matches=halved)
    assert none.height == train.height


def test_empty_matches_pass_the_corpus_through(corpus):
    train, _, matches = corpus
    out = Decontaminate().execute(data=train, matches=matches.head(0))
    assert out.table.height == train.height
    assert out.side_outputs["removed"].height == 0


@pytest.mark.parametrize("params, name", [({"mode": "trim"}, "mode"), ({"kinds": ["exact"]}, "kinds"),
                                          ({"max_pieces": 0}, "max_pieces"), ({"kinds": []}, "kinds"), ({"min_score": 5}, "min_score"),
                                          ({"min_score": -1.5}, "min_score")])
def test_bad_params(params, name):
    with pytest.raises(ParamError) as err:
        Decontaminate.from_params(params)
    assert err.value.param == name


def _refused(tmp_path, data, matches, name) -> InputDataError:
    paths = {"data": tmp_path / "data.parquet", "matches": tmp_path / "matches.parquet"}
    data.write_parquet(paths["data"])
    matches.write_parquet(paths["matches"])
    with pytest.raises(InputDataError) as err:
        Decontaminate().execute(data=str(paths["data"]), matches=str(paths["matches"]))
    assert err.value.file == str(paths[name])
    return err.value


MATCH = {"test_id": ["q0"], "train_id": ["d0"], "kind": ["ngram"], "score": [0.9],
         "train_char_start": [4], "train_char_end": [30]}
DATA = pl.DataFrame({"id": ["d0", "d1"], "text": ["x" * 300, "y" * 300]})


@pytest.mark.parametrize("column, value", [("score", "0.9"), ("train_id", 0)])
def test_matches_columns_of_the_wrong_type_are_refused(tmp_path, column, value):
    error = _refused(tmp_path, DATA, pl.DataFrame({**MATCH, column: [value]}), "matches")
    assert f"column '{column}'" in error.message
    assert "or name a" not in error.message  # fixed column names: no parameter could name another


def test_duplicate_training_ids_are_refused(tmp_path):
    error = _refused(tmp_path, pl.concat([DATA, DATA.head(1)]), pl.DataFrame(MATCH), "data")
    assert error.param == "id_column" and "duplicate ids" in error.message


def test_inverted_spans_are_refused(tmp_path):
    error = _refused(tmp_path, DATA, pl.DataFrame({**MATCH, "train_char_start": [30], "train_char_end": [4]}),
                     "matches")
    assert error.param == "train_char_start" and "30 to 4" in error.message


FIELDS = {"instruction": "prompt", "input": "context", "response": "completion"}


def test_train_fields_rows_are_cut_in_the_fields_the_audit_joined():
    # The audit's offsets are into "prompt\ncontext\ncompletion" stripped; they were applied to `text_column`.
    data = pl.DataFrame({"id": ["d"], "prompt": ["  Ask what the words say"], "context": pl.Series([None], dtype=pl.String),
                         "completion": ["they say LEAK and more"]})
    joined = "Ask what the words say\n\nthey say LEAK and more"  # as the audit reads it (the leading spaces stripped)
    start = joined.index("LEAK")
    cut = Decontaminate(margin_chars=0, min_piece_chars=1, train_fields=FIELDS).execute(data=data, matches=pl.DataFrame(
        {**MATCH, "train_id": ["d"], "train_char_start": [start], "train_char_end": [start + 4]}))
    assert cut.table.select("prompt", "context", "completion").rows() == [
        ("  Ask what the words say", None, "they say "), (None, None, " and more")]
    assert cut.side_outputs["removed"].select("char_start", "char_end", "text").rows() == [(start, start + 4, "LEAK")]
    # A span across the boundary cuts both fields (the line break between them belongs to neither); a null role is
    # left out of the join, as in the audit.
    joined = "Ask what the words say\nthey say LEAK and more"
    start, end = joined.index("say\n"), joined.index(" LEAK")
    across = Decontaminate(margin_chars=0, min_piece_chars=1, train_fields={**FIELDS, "input": None}).apply(
        data=data, matches=pl.DataFrame({**MATCH, "train_id": ["d"], "train_char_start": [start],
                                         "train_char_end": [end]}))
    assert across.select("prompt", "context", "completion").rows() == [
        ("  Ask what the words ", None, None), (None, None, " LEAK and more")]


def test_an_audit_of_train_fields_is_clean_after_decontaminating_them(corpus):
    _, test, _ = corpus
    passages = [topics[n].split() for n in TOPICS]
    train = pl.DataFrame({"id": TOPICS, "prompt": [" ".join(p[:40]) for p in passages], "context": [None] * len(TOPICS),
                          "completion": [" ".join(p[40:]) for p in passages]})
    audit = LeakageAudit(chunk_overlap=False, semantic=False, train_fields=FIELDS)
    matches = audit.execute(train=train, test=test).side_outputs["matches"]
    cleaned = Decontaminate(train_fields=FIELDS, margin_chars=20, min_piece_chars=20).apply(data=train, matches=matches)
    pieces = cleaned.filter(pl.col("decontaminated_from") == "slicings")
    # The leaked words 20..90 span the prompt (words 0..39) and the completion: each keeps its own side of the cut.
    assert pieces.select(pl.col("prompt", "completion").is_null()).rows() == [(False, True), (True, False)]
    assert pieces["prompt"][0].startswith("Slicings") and pieces["completion"][1].startswith("so any subscription")
    assert audit.apply(train=cleaned.drop("decontaminated_from"), test=test)["verdict"].to_list() == ["clean", "clean"]
    with pytest.raises(ParamError, match="unknown role 'question'"):
        Decontaminate(train_fields={"question": "prompt"}).validate()


def test_pieces_of_the_joined_text_give_back_every_field_whole():
    """Cut anywhere, the pieces' field parts put back together are the fields: the strip's offsets (Unicode spaces,
    a null or blank field first), the line breaks between fields and the last field's stripped end included."""
    import random

    from stages.leakage.decontaminate import field_pieces
    from stages.leakage.variants import training_text

    rng, alphabet = random.Random(0), "ab \n\t\x1c\u3000\u00a0é"
    for _ in range(300):
        fields = [None if rng.random() < 0.25 else "".join(rng.choices(alphabet, k=rng.randint(0, 6))) for _ in "abc"]
        frame = pl.DataFrame([fields], schema=dict.fromkeys(FIELDS.values(), pl.String), orient="row")
        joined = training_text(frame, "text", FIELDS)["text"][0]
        raw = "\n".join(f or "" for f in fields)
        lead = len(raw) - len(frame.select(pl.lit(raw).str.strip_chars_start()).item())
        cuts = sorted(rng.sample(range(1, len(joined)), min(len(joined) - 1, 2))) if len(joined) > 1 else []
        bounds = [0, *cuts, len(joined)]
        pieces = [field_pieces(fields, lead, s, e, len(joined)) for s, e in zip(bounds, bounds[1:])]
        if joined:
            assert ["".join(p[k] or "" for p in pieces) for k in range(3)] == [f or "" for f in fields], fields


def _span(train_id: str, start: int, end: int) -> pl.DataFrame:
    return pl.DataFrame({**MATCH, "train_id": [train_id], "train_char_start": [start], "train_char_end": [end]})


def test_a_second_pass_keeps_the_first_origin():
    # A second pass crashed on the column it had written (a duplicate 'decontaminated_from'), or, had it run, would
    # have set every row's origin again: a piece of a piece still comes from the original document.
    data = pl.DataFrame({"id": ["a", "b"], "text": ["x" * 50 + "LEAK" + "y" * 50 + "LEAK" + "z" * 50, "w" * 100]})
    cut = Decontaminate(margin_chars=0, min_piece_chars=1)
    first = cut.apply(data=data, matches=_span("a", 50, 54))
    assert first.rows() == [("a#0", "x" * 50, "a"), ("a#1", "y" * 50 + "LEAK" + "z" * 50, "a"), ("b", "w" * 100, None)]
    second = cut.apply(data=first, matches=pl.concat([_span("a#1", 50, 54), _span("b", 0, 10)]))
    assert second.rows() == [("a#0", "x" * 50, "a"), ("a#1#0", "y" * 50, "a"), ("a#1#1", "z" * 50, "a"),
                             ("b#0", "w" * 90, "b")]
    # Any type of origin column, anywhere: it comes out last, as String, as on a first pass.
    typed = data.insert_column(1, pl.Series("decontaminated_from", ["o", None], pl.Categorical))
    again = cut.apply(data=typed, matches=_span("a", 50, 54))
    assert again.schema == pl.Schema({"id": pl.String, "text": pl.String, "decontaminated_from": pl.String})
    assert again["decontaminated_from"].to_list() == ["o", "o", None]


def test_spans_past_the_text_this_step_reads_are_refused(corpus, tmp_path):
    """An audit of train_fields cut by a decontaminate without them (or the other way round) cut other characters,
    clipped at the text's end. An audit's own spans never pass the end of the text it read."""
    train, test, matches = corpus
    passages = [topics[n].split() for n in TOPICS]
    rows = pl.DataFrame({"id": TOPICS, "text": [" ".join(p[:40]) for p in passages],  # shorter than the fields joined
                         "long": ["filler " * 400 + topics[n] for n in TOPICS],  # longer
                         "prompt": [" ".join(p[:40]) for p in passages], "context": [None] * len(TOPICS),
                         "completion": [" ".join(p[40:]) for p in passages]})
    fielded = LeakageAudit(chunk_overlap=False, semantic=False, train_fields=FIELDS).execute(
        train=rows, test=test).side_outputs["matches"]
    plain = LeakageAudit(chunk_overlap=False, semantic=False, text_column="long").execute(
        train=rows, test=test.rename({"text": "long"})).side_outputs["matches"]
    # Cut as audited: no refusal.
    assert Decontaminate(train_fields=FIELDS).apply(data=rows, matches=fielded)["decontaminated_from"].count()
    assert Decontaminate(text_column="long").apply(data=rows, matches=plain)["decontaminated_from"].count()
    assert Decontaminate(min_piece_chars=1).apply(data=train, matches=matches)["decontaminated_from"].count()
    paths = {name: tmp_path / f"{name}.parquet" for name in ("data", "fielded", "plain")}
    for name, frame in (("data", rows), ("fielded", fielded), ("plain", plain)):
        frame.write_parquet(paths[name])
    for params, audited, param in (({}, "fielded", "text_column"), ({"train_fields": FIELDS}, "plain", "train_fields")):
        with pytest.raises(InputDataError) as err:
            Decontaminate(**params).execute(data=str(paths["data"]), matches=str(paths[audited]))
        assert err.value.param == param and err.value.file == str(paths["data"]) and "train_fields" in err.value.hint
        first = err.value.message.split("train_id '")[1].split("'")[0]
        assert first in set(pl.read_parquet(paths[audited])["train_id"])
    # Dropping whole documents reads no span: nothing to refuse.
    assert Decontaminate(mode="drop").apply(data=rows, matches=fielded).height < rows.height


def test_a_corpus_without_the_text_column_is_refused_with_a_hint_at_train_fields(tmp_path):
    data = DATA.rename({"text": "prompt"})
    error = _refused(tmp_path, data, pl.DataFrame(MATCH), "data")
    assert error.param == "text_column" and "no column 'text'" in error.message and "train_fields" in error.hint
    error = _refused(tmp_path, data.with_columns(text=pl.lit(1)), pl.DataFrame(MATCH), "data")
    assert error.param == "text_column" and "is Int32, not text" in error.message
    with pytest.raises(InputDataError, match="no column 'text'") as err:  # `pipeline validate`, from the schema
        Decontaminate().output_schema({"data": data.schema, "matches": pl.DataFrame(MATCH).schema})
    assert "train_fields" in err.value.hint


def test_an_enum_text_column_is_cut_into_strings():
    # A piece's text is none of the Enum's categories: cast back to the Enum, the cut failed.
    text = "x" * 50 + "LEAK" + "y" * 50
    data = pl.DataFrame({"id": ["a", "b"], "text": pl.Series([text, "z" * 100], dtype=pl.Enum([text, "z" * 100]))})
    cut = Decontaminate(margin_chars=0, min_piece_chars=1)
    schema = pl.Schema({"id": pl.String, "text": pl.String, "decontaminated_from": pl.String})
    out = cut.apply(data=data, matches=_span("a", 50, 54))
    assert out.schema == schema and out["text"].to_list() == ["x" * 50, "y" * 50, "z" * 100]
    assert cut.apply(data=data, matches=_span("c", 0, 1)).schema == schema  # whether or not a row is cut
    assert cut.output_schema({"data": data.schema}) == dict(schema)
    # A Categorical holds any text: it stays; `mode: drop` makes no pieces: the Enum stays.
    categorical = cut.apply(data=data.with_columns(pl.col("text").cast(pl.String).cast(pl.Categorical)),
                            matches=_span("a", 50, 54))
    assert categorical["text"].dtype == pl.Categorical and categorical["text"].to_list()[:2] == ["x" * 50, "y" * 50]
    assert Decontaminate(mode="drop").apply(data=data, matches=_span("a", 50, 54))["text"].dtype == data["text"].dtype


def test_documents_matched_counts_only_documents_of_data():
    # It counted the train_ids of matches: data that is not the corpus the audit read (a `split:test` wired in
    # by mistake) reported every match as a matched document while nothing was removed.
    matches = pl.DataFrame({**MATCH, "train_id": ["elsewhere"]})
    result = Decontaminate().execute(data=DATA, matches=matches)
    assert result.stats["documents_matched"] == 0 and result.table.height == DATA.height
    assert Decontaminate().execute(data=DATA, matches=pl.DataFrame(MATCH)).stats["documents_matched"] == 1


def test_a_list_id_column_is_refused_in_one_line():
    # The ids are matched as strings: a list id failed inside polars casting it (exit 1).
    with pytest.raises(InputDataError, match="not one value a row") as refused:
        Decontaminate().apply(data=DATA.with_columns(pl.Series("id", [[0], [1]])), matches=pl.DataFrame(MATCH))
    assert refused.value.param == "id_column"
