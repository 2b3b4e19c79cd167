"""leakage_audit: planted contamination of every kind is caught, clean controls stay clean.

Training text is the Python language reference (pydoc topics); planted items are 80-word passages of
it, copied, re-cased, embedded in other text, edited, reordered and rewritten; controls are module
docstrings of the standard library (same domain and vocabulary, different text).
"""

from __future__ import annotations

import importlib
import inspect
import json
from pydoc_data.topics import topics

import numpy as np
import polars as pl
import pytest

from pipeline.errors import InputDataError, ParamError
from stages.leakage import (
    PLANT_KINDS,
    LeakageAudit,
    longest_common_run,
    ngram_hashes,
    plant,
    token_offsets,
    tokenize,
)

TOPICS = sorted(topics)
CONTROL_MODULES = ["json", "csv", "heapq", "difflib", "shelve", "sched", "statistics", "pickle", "tarfile",
                   "logging", "argparse", "pprint"]
SOURCE_TOPICS = ["assignment", "class", "exceptions", "formatstrings", "lambda", "naming", "typesseq",
                 "with", "yield", "numeric-types", "sequence-types", "slicings"]


def _passage(topic: str, start: int = 40, words: int = 80) -> str:
    return " ".join(topics[topic].split()[start : start + words])


def _control(module: str) -> str:
    return " ".join((inspect.getdoc(importlib.import_module(module)) or "").split()[:80])


@pytest.fixture(scope="module")
def train() -> pl.DataFrame:
    return pl.DataFrame({"id": TOPICS, "text": [topics[t] for t in TOPICS]})


@pytest.fixture(scope="module")
def test_set() -> pl.DataFrame:
    rng = np.random.default_rng(7)
    rows = []
    for i, kind in enumerate(PLANT_KINDS):
        for j in range(2):
            source = SOURCE_TOPICS[(2 * i + j) % len(SOURCE_TOPICS)]
            host = _control(CONTROL_MODULES[(i + j) % len(CONTROL_MODULES)])
            rows.append({"id": f"{kind}-{j}", "text": plant(_passage(source), kind, rng, host=host),
                         "kind": kind, "source": source})
    for module in CONTROL_MODULES:
        rows.append({"id": f"control-{module}", "text": _control(module), "kind": "control", "source": None})
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def audit(train, test_set, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("audit")
    return LeakageAudit(subset_column="kind", report_items=5).execute(train=train, test=test_set, workdir=workdir)


def _by_kind(findings: pl.DataFrame, test_set: pl.DataFrame) -> pl.DataFrame:
    return findings.join(test_set.select(pl.col("id").alias("test_id"), "source"), on="test_id")


# ----------------------------------------------------------------------------- planted evidence


def test_every_planted_kind_is_caught_and_controls_stay_clean(audit, test_set):
    findings = audit.table
    assert findings.height == test_set.height
    assert findings["test_id"].to_list() == test_set["id"].to_list(), "findings keep test order"
    verdicts = dict(zip(findings["test_id"], findings["verdict"]))
    for kind in PLANT_KINDS:
        for j in range(2):
            assert verdicts[f"{kind}-{j}"] != "clean", f"planted {kind} item was not caught"
    for kind in ("verbatim", "surface", "edited"):
        assert verdicts[f"{kind}-0"] == "contaminated"
    for module in CONTROL_MODULES:
        assert verdicts[f"control-{module}"] == "clean", f"control {module} flagged"


def test_evidence_points_at_the_source_document(audit, test_set):
    # The reference repeats itself ("compound" contains "class"), so the source must be among the
    # matched documents, and is usually the best one.
    matches = audit.side_outputs["matches"]
    rows = _by_kind(audit.table, test_set).filter(pl.col("source").is_not_null())
    for row in rows.iter_rows(named=True):
        matched = set(matches.filter(pl.col("test_id") == row["test_id"])["train_id"])
        assert row["source"] in matched | {row["train_id"]}, row["test_id"]
    assert (rows["train_id"] == rows["source"]).mean() >= 0.75


def test_exact_copies_have_full_ngram_overlap_and_matching_spans(audit, train, test_set):
    findings = audit.table.filter(pl.col("test_id").is_in(["verbatim-0", "surface-0"]))
    assert findings["ngram_overlap"].to_list() == [1.0, 1.0]
    texts = dict(zip(test_set["id"], test_set["text"]))
    train_texts = dict(zip(train["id"], train["text"]))
    for row in findings.iter_rows(named=True):
        assert row["longest_span_tokens"] == tokenize(pl.Series([texts[row["test_id"]]])).counts[0]
        assert row["evidence_kind"] == "ngram"
        assert texts[row["test_id"]][row["test_char_start"]:row["test_char_end"]] == row["evidence"]
        span = train_texts[row["train_id"]][row["train_char_start"]:row["train_char_end"]]
        assert span == row["train_evidence"]
        # The same words once case, punctuation and whitespace are normalised away.
        norm = lambda s: " ".join(tokenize(pl.Series([s])).words.to_list())  # noqa: E731
        assert norm(row["evidence"]) == norm(span)


def test_partial_span_is_partial_with_a_40_word_span(audit):
    rows = audit.table.filter(pl.col("test_id").str.starts_with("partial"))
    assert rows["longest_span_tokens"].min() >= 20
    assert (rows["ngram_overlap"] < 0.8).all()


def test_edits_and_rewrites_break_ngrams_but_not_similarity(audit):
    rows = audit.table.filter(pl.col("test_id").str.starts_with("edited") | pl.col("test_id").str.starts_with("rewritten"))
    assert (rows["longest_span_tokens"] == 0).all(), "13-grams should not survive these edits"
    assert (rows["max_similarity"] >= 0.9).all()
    controls = audit.table.filter(pl.col("test_id").str.starts_with("control"))
    assert controls["max_similarity"].max() < rows["max_similarity"].min()


def test_ngram_only_audit_misses_rewrites(train, test_set):
    findings = LeakageAudit(chunk_overlap=False, semantic=False).apply(train=train, test=test_set)
    verdicts = dict(zip(findings["test_id"], findings["verdict"]))
    assert verdicts["verbatim-0"] == verdicts["surface-1"] == "contaminated"
    assert verdicts["partial-0"] == "partial"
    assert verdicts["rewritten-0"] == "clean"
    assert findings["max_similarity"].null_count() == findings.height


# ---------------------------------------------------------------------------------- outputs


def test_side_outputs_split_the_test_set(audit, test_set):
    clean, dirty = audit.side_outputs["clean"], audit.side_outputs["dirty"]
    assert clean.height + dirty.height == test_set.height
    assert set(clean.columns) == set(test_set.columns)
    assert set(dirty["verdict"]) <= {"partial", "contaminated"}
    assert set(clean["id"]) == set(audit.table.filter(pl.col("verdict") == "clean")["test_id"])
    matches = audit.side_outputs["matches"]
    assert set(matches["kind"]) <= {"ngram", "chunk", "semantic"}
    assert set(matches["test_id"]) <= set(dirty["id"])
    assert matches.filter(pl.col("kind") == "ngram")["train_char_start"].null_count() == 0


def test_reports_are_self_contained(audit):
    html = (audit.artefact_dir / "report.html").read_text()
    md = (audit.artefact_dir / "report.md").read_text()
    assert "<svg" in html and "<rect" in html and "<mark>" in html
    # Self-contained: nothing is fetched (the SVG namespace is an identifier, not a request).
    assert "src=" not in html and "<link" not in html
    # Every item in one sortable, filterable table (inline script), thresholds drawn, next steps, the seed.
    assert html.count("<tr><td>") >= audit.table.height and "sortItems" in html
    assert "stroke-dasharray" in html and "Next steps" in html and "seed = 0" in html
    for kind in ("control", "verbatim", "rewritten"):
        assert f"| {kind} |" in md, "totals by subset"
    assert "## Worst items" in md and "**Test:**" in md
    assert audit.stats["verdicts"]["clean"] == len(CONTROL_MODULES)


# ------------------------------------------------------------------------------ n-gram rules


def test_common_ngrams_are_ignored_by_document_frequency():
    boiler = _passage("if", 0, 25)
    train = pl.DataFrame({"id": [f"d{i}" for i in range(12)],
                          "text": [f"{boiler} {_passage(t, 0, 30)}" for t in TOPICS[:12]]})
    test = pl.DataFrame({"id": ["q"], "text": [f"{boiler} {_control('json')}"]})
    common = LeakageAudit(chunk_overlap=False, semantic=False, max_doc_freq=10).execute(train=train, test=test)
    assert common.table["verdict"].to_list() == ["clean"]
    assert common.stats["common_ngrams_ignored"] > 0
    rare = LeakageAudit(chunk_overlap=False, semantic=False, max_doc_freq=12).apply(train=train, test=test)
    assert rare["verdict"].to_list() == ["partial"]
    assert rare["longest_span_tokens"].to_list()[0] >= tokenize(pl.Series([boiler])).counts[0]


def test_streaming_batches_do_not_change_findings(train, test_set):
    stage = dict(chunk_overlap=False, semantic=False, max_doc_freq=2)
    one = LeakageAudit(**stage).apply(train=train, test=test_set)
    many = LeakageAudit(**stage, batch_rows=7).apply(train=train, test=test_set)
    assert one.equals(many)


def test_train_read_from_parquet_parts(train, test_set, tmp_path):
    for i, part in enumerate(train.iter_slices(30)):
        part.write_parquet(tmp_path / f"part-{i:05d}.parquet")
    from_disk = LeakageAudit(chunk_overlap=False, semantic=False).apply(train=str(tmp_path), test=test_set)
    in_memory = LeakageAudit(chunk_overlap=False, semantic=False).apply(train=train, test=test_set)
    assert from_disk.equals(in_memory)


def test_normalisation_ignores_case_punctuation_width_and_whitespace():
    a = tokenize(pl.Series(["Ｔｈｅ  QUICK, brown—fox;\n jumps!"]))
    b = tokenize(pl.Series(["the quick brown fox jumps"]))
    assert a.words.to_list() == b.words.to_list() == ["the", "quick", "brown", "fox", "jumps"]
    assert np.array_equal(a.hashes, b.hashes)


def test_ngrams_do_not_cross_documents_and_offsets_align():
    texts = ["one two three four", "five six", "seven eight nine"]
    tok = tokenize(pl.Series(texts))
    hashes, doc, pos = ngram_hashes(tok.hashes, tok.counts, 3)
    assert doc.tolist() == [0, 0, 2] and pos.tolist() == [0, 1, 0]
    starts, ends, ok = token_offsets(texts, tok.counts)
    assert ok.all()
    assert [texts[0][s:e] for s, e in zip(starts[:4], ends[:4])] == ["one", "two", "three", "four"]
    # Order matters: the same words reordered hash differently.
    swapped = tokenize(pl.Series(["two one three"]))
    assert ngram_hashes(swapped.hashes, swapped.counts, 3)[0][0] != ngram_hashes(
        tokenize(pl.Series(["one two three"])).hashes, np.array([3]), 3)[0][0]


def test_longest_common_run_matches_a_plain_dynamic_programme():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(50, 12)).astype(np.uint64)
    b = rng.integers(0, 4, size=(50, 12)).astype(np.uint64)
    a_len, b_len = rng.integers(1, 13, 50), rng.integers(1, 13, 50)

    def slow(x, y):
        best = 0
        for i in range(len(x)):
            for j in range(len(y)):
                k = 0
                while i + k < len(x) and j + k < len(y) and x[i + k] == y[j + k]:
                    k += 1
                best = max(best, k)
        return best

    expected = [slow(a[p, : a_len[p]].tolist(), b[p, : b_len[p]].tolist()) for p in range(50)]
    assert longest_common_run(a, a_len, b, b_len).tolist() == expected
    runs, a_at, b_at = longest_common_run(a, a_len, b, b_len, positions=True)
    assert runs.tolist() == expected
    for p, run in enumerate(expected):  # where the run is: inside both texts, the same tokens
        assert a_at[p] + run <= a_len[p] and b_at[p] + run <= b_len[p]
        assert a[p, a_at[p] : a_at[p] + run].tolist() == b[p, b_at[p] : b_at[p] + run].tolist()


def test_a_short_item_s_semantic_evidence_is_the_whole_training_chunk(train):
    """The training side had the test chunk's length: a 24-word item was shown against the first 24 words of the
    64-word chunk it matched, words it does not hold."""
    words = tokenize(pl.Series([topics["attribute-access"]])).words.to_list()[340:364]
    test = pl.DataFrame({"id": ["reordered"], "text": [" ".join(reversed(words))]})
    row = LeakageAudit(ngram=False, chunk_overlap=False).execute(train=train, test=test).table.row(0, named=True)
    assert (row["evidence_kind"], row["verdict"], row["train_id"]) == ("semantic", "partial", "attribute-access")
    shown = tokenize(pl.Series([row["train_evidence"]])).words.to_list()
    assert len(shown) == 64 and set(words) <= set(shown)
    assert row["evidence"] == test["text"][0]


def test_chunk_evidence_spans_are_the_common_run_on_both_sides(train):
    """A chunk's training span was the training chunk's first words, up to a stride away from the copied ones:
    train_evidence showed other text, and decontaminate (kinds: [chunk]) cut beside the leak."""
    words = topics["attribute-access"].split()
    test = pl.DataFrame({"id": ["copy"], "text": [" ".join(words[500:540])]})  # not on a 32-word chunk start
    audit = LeakageAudit(ngram=False, semantic=False).execute(train=train, test=test)
    row = audit.table.row(0, named=True)
    assert (row["evidence_kind"], row["chunk_overlap_ratio"], row["train_id"]) == ("chunk", 1.0, "attribute-access")
    norm = lambda s: " ".join(tokenize(pl.Series([s])).words.to_list())  # noqa: E731
    assert norm(row["train_evidence"]) == norm(row["evidence"]) == norm(test["text"][0])
    for match in audit.side_outputs["matches"].iter_rows(named=True):
        span = topics[match["train_id"]][match["train_char_start"]:match["train_char_end"]]
        shown = test["text"][0][match["test_char_start"]:match["test_char_end"]]
        assert norm(span) == norm(shown) and match["span_tokens"] == len(norm(span).split())


# ------------------------------------------------------------------------ params and inputs


@pytest.mark.parametrize("params, name", [
    ({"n": 5}, "n"), ({"max_doc_freq": 0}, "max_doc_freq"), ({"chunk_partial": 1.5}, "chunk_partial"),
    ({"ngram": False, "chunk_overlap": False, "semantic": False}, "ngram"),
    ({"similarity_partial": 0.9, "similarity_contaminated": 0.5}, "similarity_contaminated"),
])
def test_bad_params_name_the_parameter(params, name):
    with pytest.raises(ParamError) as err:
        LeakageAudit.from_params(params)
    assert err.value.param == name


def test_missing_text_column_is_reported(train):
    test = pl.DataFrame({"id": ["a"], "question": ["what is a lambda?"]})
    with pytest.raises(InputDataError, match="question"):
        LeakageAudit(chunk_overlap=False, semantic=False).apply(train=train, test=test)


def test_null_test_text_is_refused_not_reported_clean(train):
    test = pl.DataFrame({"id": ["a", "b"], "text": ["what is a lambda?", None]})
    with pytest.raises(InputDataError, match="1 null texts; an item with no text cannot be audited") as err:
        LeakageAudit(chunk_overlap=False, semantic=False).apply(train=train, test=test)
    assert err.value.param == "text_column"


@pytest.mark.parametrize("blank", ["", "  \n "])
def test_an_empty_test_text_is_refused_like_a_null_one(train, blank):
    # It was audited as an item of no words and reported clean: a column of empty strings read as a clean audit.
    test = pl.DataFrame({"id": ["a", "b"], "text": ["what is a lambda?", blank]})
    with pytest.raises(InputDataError, match="1 empty texts \\(nothing but spaces\\); an item with no text") as err:
        LeakageAudit(chunk_overlap=False, semantic=False).apply(train=train, test=test)
    assert err.value.param == "text_column"


def test_null_training_text_is_refused_not_skipped(train, tmp_path):
    # A training row read as '' was skipped without a word (exit 0); now refused like a null test text.
    from cli_failures import audit_config, fails_cleanly

    train.with_columns(text=pl.when(pl.col("id") == TOPICS[3]).then(None).otherwise("text")).write_parquet(
        tmp_path / "train.parquet")
    pl.DataFrame({"id": ["a"], "text": [_passage("lambda")]}).write_parquet(tmp_path / "test.parquet")
    proc = fails_cleanly(tmp_path, audit_config(tmp_path), "step 'audit' (stage 'leakage_audit'), parameter 'text_column'",
                         f"file '{tmp_path / 'train.parquet'}'", "input 'train' column 'text' has 1 null texts")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "bad" / "audit").exists()


@pytest.mark.parametrize("ids, expected", [(["a", "a"], "duplicate ids"), (["a", None], "null ids")])
def test_repeated_or_null_test_ids_are_refused(train, ids, expected):
    # Findings are keyed by test id: two items under one id could not be told apart.
    test = pl.DataFrame({"id": ids, "text": ["what is a lambda?", "what is a closure?"]})
    with pytest.raises(InputDataError, match=expected) as err:
        LeakageAudit(chunk_overlap=False, semantic=False).apply(train=train, test=test)
    assert err.value.param == "id_column"


@pytest.mark.parametrize("column", ["verdict", "train_id"])
def test_a_test_column_the_dirty_split_adds_is_refused_not_overwritten(train, tmp_path, column):
    # `dirty` replaced the test set's own 'verdict' (a human label?) or 'train_id' with the audit's, silently.
    from cli_failures import audit_config, refused_by_validate

    test = pl.DataFrame({"id": ["a"], "text": [_passage("lambda")], column: ["the test set's own"]})
    with pytest.raises(InputDataError, match=f"input 'test' already has a column '{column}', which the side output "
                       "'dirty' adds"):
        LeakageAudit(chunk_overlap=False, semantic=False).apply(train=train, test=test)
    train.head(3).write_parquet(tmp_path / "train.parquet")
    test.write_parquet(tmp_path / "test.parquet")
    message = refused_by_validate(tmp_path / "c.yaml", audit_config(tmp_path))
    assert "step 'audit' (stage 'leakage_audit')" in message and f"file '{tmp_path / 'test.parquet'}'" in message
    assert f"column '{column}'" in message and "rename it first" in message


def test_ids_default_to_row_numbers_and_short_items_are_counted(train):
    test = pl.DataFrame({"text": [_passage("lambda"), "a lambda"]})
    result = LeakageAudit(chunk_overlap=False, semantic=False).execute(train=train, test=test)
    assert result.table["test_id"].to_list() == ["0", "1"]
    assert result.stats["items_shorter_than_n"] == 1
    assert result.table["ngram_overlap"].to_list()[1] is None


# -------------------------------------------------------------------- pipeline, config and CLI


def test_audit_command_runs_without_a_config(train, test_set, tmp_path):
    from conftest import run_cli

    train.write_parquet(tmp_path / "train.parquet")
    test_set.drop("source").write_ndjson(tmp_path / "test.jsonl")
    proc = run_cli("audit", str(tmp_path / "train.parquet"), str(tmp_path / "test.jsonl"),
                   "--workdir", str(tmp_path / "runs"), "--id-column", "id", "--subset-column", "kind",
                   "--no-semantic", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "contaminated" in proc.stdout
    step = tmp_path / "runs" / "audit" / "audit"
    assert (step / "report.html").exists() and step.with_name("audit@dirty").is_dir()
    manifest = json.loads((step / "_manifest.json").read_text())
    assert manifest["stats"]["verdicts"]["contaminated"] >= 4


def test_example_config_validates():
    from pathlib import Path

    from pipeline.config import load_config

    config = load_config(Path(__file__).parents[3] / "configs" / "audit.yaml")
    assert "leakage_audit" in [s.stage for s in config.steps]


def test_matches_get_spans_with_each_training_document_split_into_words_once(train, test_set, monkeypatch, tmp_path):
    """Findings and matches get their character spans in one pass over the fetched training documents."""
    import stages.leakage.spans as spans

    split = []
    real, real_ascii = spans.word_offsets, spans.ascii_word_spans
    monkeypatch.setattr(spans, "word_offsets", lambda texts, *a: split.extend(texts.to_list()) or real(texts, *a))
    monkeypatch.setattr(spans, "ascii_word_spans", lambda texts: split.extend(texts.to_list()) or real_ascii(texts))
    monkeypatch.setattr(spans.SpanFinder, "GROUP_CHARS", 2000)  # several groups of documents
    result = LeakageAudit(semantic=False, chunk_overlap=False, report_items=5).execute(
        train=train, test=test_set, workdir=tmp_path)
    matches = result.side_outputs["matches"].filter(pl.col("kind") == "ngram")
    assert matches.height > 0 and len(split) == len(set(split)) == matches["train_id"].n_unique()
    texts, train_texts = dict(zip(test_set["id"], test_set["text"])), dict(zip(train["id"], train["text"]))
    norm = lambda s: " ".join(tokenize(pl.Series([s])).words.to_list())  # noqa: E731
    for row in matches.iter_rows(named=True):
        test_span = texts[row["test_id"]][row["test_char_start"]:row["test_char_end"]]
        assert norm(test_span) == norm(train_texts[row["train_id"]][row["train_char_start"]:row["train_char_end"]])


def test_chunk_vectors_from_words_give_the_findings_of_embedding_chunk_texts(train, test_set, tmp_path,
                                                                              monkeypatch):
    """Static chunk vectors come from their words when the cache is off and from the chunk texts through the
    embedding cache when it is on: the same vectors, so the same findings and matches."""
    import stages.embedding as embedding

    from_words = []
    real = embedding.encode_static_word_windows
    monkeypatch.setattr(embedding, "encode_static_word_windows",
                        lambda w, s, n, *a: from_words.append(s.size) or real(w, s, n, *a))
    runs, paths = [], []
    for cache in (False, True):
        from_words.clear()
        runs.append(LeakageAudit(ngram=False, report_items=0, cache=cache).execute(
            train=train, test=test_set, workdir=tmp_path / str(cache)))
        paths.append(sum(from_words))
    assert paths[0] > 0 and paths[1] == 0, "off: vectors from words; on: chunk texts through the cache"
    assert runs[0].table.equals(runs[1].table)
    assert runs[0].side_outputs["matches"].equals(runs[1].side_outputs["matches"])


def test_an_item_of_a_few_words_is_not_chunk_evidence_for_being_in_some_chunk():
    """A run under 8 words (RETRO's 12.5% of a 64-word chunk) is a common phrase for any item: an item of a few
    words found inside a training chunk read r = 1.0, contaminated. A copied item of 8 words or more still is."""
    train = pl.DataFrame({"id": TOPICS[:40], "text": [topics[t] for t in TOPICS[:40]]})  # holds attribute-access
    words = topics["attribute-access"].split()
    test = pl.DataFrame({"id": ["short", "copy"], "text": [" ".join(words[500:503]), " ".join(words[500:510])]})
    audit = LeakageAudit(ngram=False, semantic=False).execute(train=train, test=test)
    ratios = dict(zip(audit.table["test_id"], audit.table["chunk_overlap_ratio"]))
    verdicts = dict(zip(audit.table["test_id"], audit.table["verdict"]))
    assert (ratios["short"], verdicts["short"]) == (0.0, "clean")
    assert (ratios["copy"], verdicts["copy"]) == (1.0, "contaminated")
