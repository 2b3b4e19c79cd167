"""paraphrase evidence: static candidates + MiniLM re-scoring + a null-calibrated threshold; eval-aware variants."""

from __future__ import annotations

from pydoc_data.topics import topics

import numpy as np
import polars as pl
import pytest

from pipeline.errors import ParamError
from stages.leakage import LeakageAudit, TestSide, TrainBatch, plant
from stages.leakage.rescore import ParaphraseEvidence
from stages.leakage.variants import raw_variants
from stages.text import tokenize

NAMES = sorted(topics)
SOURCES = ["assignment", "class", "exceptions", "lambda", "with", "yield"]
CONTROLS = ["numbers", "dict", "floating", "import", "bitwise", "calls"]


def _passage(topic: str) -> str:
    return " ".join(topics[topic].split()[20:100])


@pytest.fixture(scope="module")
def train() -> pl.DataFrame:
    names = [n for n in NAMES if n not in CONTROLS][:60] + SOURCES
    return pl.DataFrame({"id": names, "text": [topics[t] for t in names]}).unique("id", keep="first", maintain_order=True)


def test_rewritten_leaks_score_above_the_null_and_controls_below(train, tmp_path):
    rng = np.random.default_rng(0)
    kinds = ["edited", "heavy", "reordered"]
    test = pl.DataFrame({
        "id": [f"{k}-{s}" for k, s in zip(kinds * 2, SOURCES)] + [f"control-{c}" for c in CONTROLS],
        "text": [plant(_passage(s), k, rng, host=_passage(c)) for k, s, c in zip(kinds * 2, SOURCES, CONTROLS)]
        + [_passage(c) for c in CONTROLS],
    })
    result = LeakageAudit(ngram=False, chunk_overlap=False, semantic=False, evidence=["paraphrase"], candidates=4,
                          report_items=3).execute(train=train, test=test, workdir=tmp_path)
    f = result.table
    leaked = f.filter(~pl.col("test_id").str.starts_with("control"))
    controls = f.filter(pl.col("test_id").str.starts_with("control"))
    # Every leak outscores every control, and the null sits below the leaks.
    assert leaked["paraphrase_score"].min() > controls["paraphrase_score"].max()
    assert (leaked["paraphrase_score"] > leaked["paraphrase_null"]).all()
    light = leaked.filter(~pl.col("test_id").str.starts_with("heavy"))
    assert (light["verdict"] != "clean").all() and (controls["verdict"] == "clean").all()
    null = result.stats["paraphrase_null"]
    assert null["items"] > 0 and null["threshold"] >= 0.5
    assert f["paraphrase_threshold"].drop_nulls().n_unique() <= 2  # one operating point (+ the short-item one)
    assert "paraphrase" in (tmp_path / "report.md").read_text()
    # The report names the precision the run used, not only the "auto" it was asked for.
    used = result.stats["paraphrase_precision"]
    assert used in ("float32", "bfloat16")
    assert f"precision = {used} (auto)" in (tmp_path / "report.md").read_text()


def test_candidates_of_two_shards_merge_into_the_one_pass_candidates(train):
    audit = LeakageAudit(ngram=False, chunk_overlap=False, semantic=False, evidence=["paraphrase"], candidates=3)
    texts = pl.Series([_passage(s) for s in SOURCES], dtype=pl.String)
    side = TestSide(texts=texts, tokens=tokenize(texts))

    def kind():
        return ParaphraseEvidence(audit, side, {"train_sample": train["text"]})

    whole, first, second = kind(), kind(), kind()
    corpus = train["text"]
    for lo in range(0, len(corpus), 10):
        batch = TrainBatch(texts=corpus[lo : lo + 10], tokens=tokenize(corpus[lo : lo + 10]), base=lo)
        whole.add_batch(batch)
        (first if lo < 30 else second).add_batch(batch)
    first.merge(second)
    for generator in ("dense", "lexical"):
        mine, theirs = getattr(whole.found, generator), getattr(first.found, generator)
        assert (mine.doc >= 0).all() and np.array_equal(mine.doc, theirs.doc)
        assert np.allclose(mine.sim, theirs.sim)


def test_eval_fields_build_question_answer_and_prompt_variants():
    frame = pl.DataFrame({"q": ["What is 2 + 2?", "Name the capital of France."],
                          "options": [["3", "4", "5"], ["Paris", "Lyon"]], "label": ["B", "a"]})
    variants = raw_variants(frame, {"question": "q", "choices": "options", "answer": "label"})
    assert variants[0] == [("question", "What is 2 + 2?"), ("question+answer", "What is 2 + 2? 4"),
                           ("prompt", "What is 2 + 2? A. 3 B. 4 C. 5")]
    assert variants[1][1] == ("question+answer", "Name the capital of France. Paris")
    by_index = raw_variants(frame.with_columns(label=pl.Series([2, 1])), {"question": "q", "choices": "options", "answer": "label"})
    assert by_index[0][1][1].endswith("5") and by_index[1][1][1].endswith("Lyon")
    with pytest.raises(ParamError, match="fields"):
        LeakageAudit(fields={"query": "q"}).validate()
    with pytest.raises(ParamError, match="question"):
        LeakageAudit(fields={"answer": "label"}).validate()


def test_an_eval_item_leaked_with_its_answer_is_found_through_its_fields(train):
    from pydoc_data.topics import topics as docs

    question = " ".join(docs["lambda"].split()[20:45])
    options = ["a syntax error", "an anonymous function object", "a generator", "a class"]
    leaked = f"Q: {question} Answer: {options[1]}"
    corpus = pl.concat([train, pl.DataFrame({"id": ["leak"], "text": [leaked]})])
    test = pl.DataFrame({"id": ["lam", "dict"], "q": [question, " ".join(docs["dict"].split()[30:55])],
                         "options": [options, ["a list", "a mapping", "a set", "a tuple"]], "label": [1, 1]})
    findings = LeakageAudit(ngram=False, chunk_overlap=False, semantic=False, evidence=["paraphrase"], candidates=4,
                            fields={"question": "q", "choices": "options", "answer": "label"},
                            ).apply(train=corpus, test=test)
    lam = findings.row(0, named=True)
    assert lam["train_id"] == "leak" and lam["paraphrase_variant"] in ("question", "question+answer", "prompt")
    assert lam["paraphrase_score"] > findings.row(1, named=True)["paraphrase_score"]


def test_candidates_reuse_the_chunk_pass_vectors_instead_of_embedding_the_corpus_again(train, monkeypatch):
    import stages.embedding as embedding
    from stages.leakage.chunks import ChunkEvidence

    audit = LeakageAudit(ngram=False, semantic=False, evidence=["paraphrase"], candidates=3)
    texts = pl.Series([_passage(s) for s in SOURCES], dtype=pl.String)
    side, shared = TestSide(texts=texts, tokens=tokenize(texts)), {}
    chunk, para = ChunkEvidence(audit, side, shared), ParaphraseEvidence(audit, side, shared)
    embedded: list[int] = []
    real = embedding.encode_texts
    monkeypatch.setattr(embedding, "encode_texts", lambda t, **kw: embedded.append(len(t)) or real(t, **kw))
    windows = embedding.encode_static_word_windows  # the static table embeds training chunks from their words
    monkeypatch.setattr(embedding, "encode_static_word_windows",
                        lambda w, s, n, *a: embedded.append(s.size) or windows(w, s, n, *a))
    corpus = train["text"]
    batch = TrainBatch(texts=corpus, tokens=tokenize(corpus), base=0)
    chunk.add_batch(batch)
    para.add_batch(batch)
    train_chunks = chunk.found.train_chunks
    # The corpus's chunks once (the chunk pass), then only the test variants for the candidates.
    assert embedded == [train_chunks, len(para.variant_texts)]
    assert para.found.train_chunks == train_chunks
    own = ParaphraseEvidence(audit, side, {})  # no chunk pass: it embeds the chunks itself, with the same result
    own.add_batch(batch)
    assert np.array_equal(own.found.dense.doc, para.found.dense.doc)


def test_a_passage_is_the_leak_of_the_one_item_it_matches_best_not_of_its_siblings(train, tmp_path):
    """Two near-identical test items (siblings of one subject) and one leaked passage: only the item the passage
    matches best is flagged; its sibling, which matches it almost as well, is not, and names the owner."""
    source = _passage("with")
    words = source.split()
    sibling = " ".join(words[:40] + ["generator", "protocol", "iterator", "suspended"] + words[44:])
    test = pl.DataFrame({"id": ["leaked", "sibling", "control"], "text": [source, sibling, _passage("numbers")]})
    result = LeakageAudit(ngram=False, chunk_overlap=False, semantic=False, evidence=["paraphrase"], candidates=4,
                          null_quantile=0.5, report_items=0).execute(train=train, test=test, workdir=tmp_path)
    f = {r["test_id"]: r for r in result.table.iter_rows(named=True)}
    assert f["sibling"]["paraphrase_owner"] == "leaked" and f["sibling"]["verdict"] == "clean"
    assert f["leaked"]["paraphrase_owner"] is None and f["leaked"]["verdict"] != "clean"
    # The sibling is scored on the passages it owns: far below the leak, and below the operating point.
    sibling_score = f["sibling"]["paraphrase_score"] or 0.0
    assert sibling_score < f["leaked"]["paraphrase_threshold"] < f["leaked"]["paraphrase_score"]
    assert "paraphrase_owner" in (tmp_path / "report.html").read_text()  # the item table says who took the passage


def test_passage_rivals_match_the_pairwise_definition():
    """The per-document scan gives, for every row, the best other item within reach that beats it."""
    from stages.leakage.rescore import passage_rivals

    rng = np.random.default_rng(3)
    n = 400
    item = rng.integers(0, 60, n)
    doc = rng.integers(0, 12, n)
    keep = np.unique(np.stack([item, doc], 1), axis=0, return_index=True)[1]  # one row per (item, doc)
    item, doc = item[keep], doc[keep]
    start = rng.integers(0, 500, item.size)
    score = np.round(rng.random(item.size), 1)  # ties on purpose
    reach = np.maximum(rng.integers(10, 120, 60), 64)[item]
    got = passage_rivals(item, doc, start, score, reach)
    for r in range(item.size):
        better = [(-score[p], item[p]) for p in range(item.size)
                  if doc[p] == doc[r] and item[p] != item[r] and abs(start[p] - start[r]) < max(reach[p], reach[r])
                  and (score[p] > score[r] or (score[p] == score[r] and item[p] < item[r]))]
        assert got[r] == (min(better)[1] if better else -1)
    assert (got >= 0).any() and (got < 0).any()


def test_bfloat16_rescoring_stays_within_a_hundredth_of_float32_on_real_text():
    """The speed-up may not move scores where a threshold could notice: same pairs, both precisions."""
    from stages.leakage.rescore import rescore, rescore_precision

    texts = [topics[k][:600] for k in sorted(topics)[:6]]
    a, b = texts[:3] + texts[:3], texts[:3] + texts[3:]  # three self-pairs (score ~1), three unrelated
    cos32, f132 = rescore(a, b, None, 8, "float32")
    cos16, f116 = rescore(a, b, None, 8, "bfloat16")
    assert np.all(cos32[:3] > 0.99) and np.all(cos32[3:] < 0.9)
    assert np.abs(cos16 - cos32).max() < 0.01 and np.abs(f116 - f132).max() < 0.01
    assert rescore_precision("float32") == "float32" and rescore_precision("bfloat16") == "bfloat16"
    assert rescore_precision("auto") in ("float32", "bfloat16")


def test_a_match_through_the_question_tail_points_at_the_question_not_the_passage(train):
    """The evidence of an item leaked as its question alone is that question: the report highlighted the whole
    passage + question, as if the passage had leaked too."""
    import json

    passage = json.__doc__.split("Encoding basic")[0].strip()  # three sentences of real prose
    question = "Which of the following best describes what the json module's dumps function returns?"
    leak = "Quiz notes. Which option best describes what the dumps function of the json module returns? More notes."
    corpus = pl.concat([train, pl.DataFrame({"id": ["leak"], "text": [leak]})])
    test = pl.DataFrame({"id": ["asked", "control"], "text": [f"{passage} {question}", _passage("numbers")]})
    findings = LeakageAudit(ngram=False, chunk_overlap=False, semantic=False, evidence=["paraphrase"], candidates=4,
                            ).apply(train=corpus, test=test)
    asked = findings.row(0, named=True)
    assert asked["train_id"] == "leak" and asked["paraphrase_variant"] == "question tail"
    shown = f"{passage} {question}"[asked["test_char_start"] : asked["test_char_end"]]
    assert shown == question.rstrip("?")
    assert "Which option best describes what the dumps function" in asked["train_evidence"]


def test_last_run_finds_the_last_occurrence_of_a_run():
    from stages.leakage.rescore import last_run

    values = np.array([5, 1, 2, 3, 1, 2, 3, 1, 2])
    assert last_run(values, np.array([1, 2, 3])) == 4
    assert last_run(values, np.array([1, 2])) == 7
    assert last_run(values, np.array([3, 2])) == -1
    assert last_run(values, values) == 0
