"""`corpus_metrics` and `collapse_report`: metric arithmetic on hand-checked cases, and a small study end to end."""

from __future__ import annotations

import math
import pydoc_data.topics

import numpy as np
import polars as pl
import pytest
from conftest import check_side_outputs_declared

from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from stages.metrics import (
    CollapseReport,
    CorpusMetrics,
    mean_pairwise_cosine_distance,
    self_bleu,
    vendi_score,
)
from stages.synthetic import Generations
from stages.text import token_ids
from stages.text import token_table as tokenize


def pydoc_paragraphs(limit: int, min_words: int = 5) -> pl.DataFrame:
    rows = [{"id": f"{topic}:{i}", "text": para.strip()}
            for topic in sorted(pydoc_data.topics.topics)
            for i, para in enumerate(pydoc_data.topics.topics[topic].split("\n\n"))
            if len(para.split()) >= min_words]
    return pl.DataFrame(rows).head(limit)


def bleu_inputs(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    toks = tokenize(texts)
    return token_ids(toks["token"])[0], toks["doc"].to_numpy().astype(np.int64)


# ------------------------------------------------------------------------ metric functions


def test_self_bleu_of_identical_documents_is_one_and_of_unrelated_ones_near_zero():
    same = ["the quick brown fox jumps over the lazy dog"] * 3
    assert self_bleu(*bleu_inputs(same)) == pytest.approx(1.0)
    unrelated = ["Return the absolute value of a number .",
                 "Sockets carry bytes between two hosts over networks",
                 "Decorators wrap functions when they are defined here"]
    assert self_bleu(*bleu_inputs(unrelated)) < 0.05


def test_self_bleu_matches_a_hand_computed_case():
    # Hypothesis "a b c d" against the single reference "a b c e" (and vice versa): equal lengths,
    # so no brevity penalty; precisions 3/4, 2/3, 1/2, and 0 -> method-1 epsilon 0.1 over 1 n-gram.
    expected = math.exp((math.log(3 / 4) + math.log(2 / 3) + math.log(1 / 2) + math.log(0.1)) / 4)
    assert self_bleu(*bleu_inputs(["a b c d", "a b c e"])) == pytest.approx(expected)


def test_clipping_uses_the_largest_count_in_any_other_document():
    # "a a a a" vs "a a x y" and "a z z z": unigram 'a' is clipped to 2 (the second document), not 1.
    ids, doc = bleu_inputs(["a a a a", "a a x y", "a z z z"])
    # Compare with a direct, loop-based computation of the same definition.
    texts = [["a"] * 4, ["a", "a", "x", "y"], ["a", "z", "z", "z"]]
    scores = []
    for i, hyp in enumerate(texts):
        refs = [t for j, t in enumerate(texts) if j != i]
        log_p = 0.0
        for n in range(1, 5):
            grams = [tuple(hyp[k:k + n]) for k in range(len(hyp) - n + 1)]
            clipped = sum(min(grams.count(g), max([tuple(r[k:k + n]) for k in range(len(r) - n + 1)].count(g)
                                                   for r in refs)) for g in set(grams))
            log_p += math.log((clipped or 0.1) / len(grams)) / 4
        scores.append(math.exp(log_p))
    assert self_bleu(ids, doc) == pytest.approx(np.mean(scores))


def test_vendi_score_and_pairwise_distance_bounds():
    same = np.tile(np.array([[0.6, 0.8, 0.0]], np.float32), (5, 1))
    assert vendi_score(same) == pytest.approx(1.0)
    assert mean_pairwise_cosine_distance(same) == pytest.approx(0.0, abs=1e-6)
    # Copies of one text are at distance 0, never below: float32 rounding made half of these -1e-7.
    copies = [np.tile(v, (3, 1)) for v in np.random.default_rng(0).standard_normal((20, 1, 384)).astype(np.float32)]
    assert min(mean_pairwise_cosine_distance(c) for c in copies) == 0.0
    orthogonal = np.eye(4, dtype=np.float32)
    assert vendi_score(orthogonal) == pytest.approx(4.0)
    assert mean_pairwise_cosine_distance(orthogonal) == pytest.approx(1.0)


def test_zero_embeddings_count_as_one_item_orthogonal_to_the_rest():
    """The static backend embeds "" or an emoji as a zero vector: the zero rows are one item (as copies of
    one text are), orthogonal to every other; the measures stay within their bounds."""
    orthogonal, zeros = np.eye(4, dtype=np.float32), np.zeros((4, 4), np.float32)
    assert vendi_score(zeros) == pytest.approx(1.0)
    assert mean_pairwise_cosine_distance(zeros) == pytest.approx(0.0)
    with_zeros = np.vstack([orthogonal, zeros])  # the same as 4 distinct texts plus 4 copies of a fifth
    as_copies = np.vstack([np.eye(5, dtype=np.float32)[:4], np.tile(np.eye(5, dtype=np.float32)[4], (4, 1))])
    assert vendi_score(with_zeros) == pytest.approx(vendi_score(as_copies))
    assert mean_pairwise_cosine_distance(with_zeros) == pytest.approx(mean_pairwise_cosine_distance(as_copies))


# ------------------------------------------------------------------------ corpus_metrics


def test_perplexity_side_output_is_declared_when_a_reference_model_is_fit():
    df = pl.DataFrame({"generation": [0, 0, 1, 1], "text": ["a b a c", "a d", "a b a b", "a b"]})
    for order in (0, 2):
        stage = CorpusMetrics(self_bleu_sample=0, embedding_backend="none", perplexity_order=order)
        check_side_outputs_declared(stage, stage.execute(df))


def test_a_corpus_without_words_has_the_declared_column_types():
    # Every text empty: unigram_entropy_bits came out Int64 (numpy's bincount of no weights), not the Float64 declared.
    df = pl.DataFrame({"id": ["a", "b", "c"], "text": ["", "", ""]})
    stage = CorpusMetrics(self_bleu_sample=0, embedding_backend="none", perplexity_order=0)
    out = stage.apply(df)
    assert dict(out.schema) == stage.output_schema({"data": dict(df.schema)})
    assert out["unigram_entropy_bits"].to_list() == [0.0]


def test_counts_entropy_tail_and_divergence_on_a_hand_built_corpus():
    df = pl.DataFrame({
        "generation": [0, 0, 1, 1, 2],
        "text": ["a b a c", "a d", "a b a b", "a b", "x y"],
    })
    table = CorpusMetrics(self_bleu_sample=0, embedding_backend="none", perplexity_order=0,
                          rare_max_count=1).apply(df).sort("generation")
    g0, g1, g2 = table.iter_rows(named=True)
    assert (g0["docs"], g0["tokens"], g0["vocab_size"]) == (2, 6, 4)
    assert g0["type_token_ratio"] == pytest.approx(4 / 6) == g0["distinct_1"]
    # Bigrams within documents only: (a b) (b a) (a c) (a d): all distinct.
    assert g0["distinct_2"] == pytest.approx(1.0)
    p = np.array([3, 1, 1, 1]) / 6
    assert g0["unigram_entropy_bits"] == pytest.approx(-(p * np.log2(p)).sum())
    # Rare in generation 0 (count <= 1): b, c, d. Generation 1 is a a a b b b -> 3 of 6 tokens rare.
    assert g0["tail_mass"] == pytest.approx(3 / 6)
    assert g1["tail_mass"] == pytest.approx(3 / 6)
    assert g0["js_divergence"] == 0.0
    assert g2["js_divergence"] == pytest.approx(1.0)  # disjoint vocabularies
    assert g2["tail_mass"] == pytest.approx(1.0)  # words never seen in generation 0 are tail
    assert g1["reference_vocab_coverage"] == pytest.approx(2 / 4)
    q, p1 = np.array([3, 1, 1, 1]) / 6, np.array([3, 3, 0, 0]) / 6
    m = (q + p1) / 2
    kl = lambda a, b: float(np.sum(np.where(a > 0, a * np.log2(np.where(a > 0, a, 1) / b), 0)))  # noqa: E731
    assert g1["js_divergence"] == pytest.approx(0.5 * kl(p1, m) + 0.5 * kl(q, m))


def test_groups_default_to_schedule_and_generation_and_reference_is_generation_zero():
    docs = pydoc_paragraphs(200)
    study = Generations(generations=2, schedules=["replace", "accumulate"], corpus_size=60,
                        max_tokens=40).execute(docs, seed=3)
    result = CorpusMetrics(self_bleu_sample=30, embedding_backend="none").execute(study.table, seed=3)
    table = result.table
    assert table.select("schedule", "generation").rows() == [
        ("accumulate", 0), ("accumulate", 1), ("accumulate", 2), ("replace", 0), ("replace", 1), ("replace", 2)]
    # Both schedules share generation 0, and content-keyed samples make even sampled metrics agree.
    zero = table.filter(pl.col("generation") == 0).drop("schedule")
    assert zero.row(0) == pytest.approx(zero.row(1), nan_ok=True)
    # Under accumulate the corpus keeps every real word; replace cannot bring lost words back.
    acc = table.filter(pl.col("schedule") == "accumulate")
    assert acc["reference_vocab_coverage"].to_list() == [1.0, 1.0, 1.0]
    rep = table.filter(pl.col("schedule") == "replace")["vocab_size"].to_list()
    assert rep[0] > rep[1] > rep[2]
    ppl = result.side_outputs["perplexity"]
    assert ppl.height == study.table.height and {"schedule", "generation", "doc_id"} <= set(ppl.columns)
    # An explicit reference input gives the same figures as the implicit generation 0.
    gen0 = study.side_outputs["replace-gen-000"]
    explicit = CorpusMetrics(self_bleu_sample=30, embedding_backend="none").apply(
        data=study.table, reference=gen0, seed=3)
    assert explicit.equals(table)


def test_embedding_diversity_embeds_each_distinct_text_once(monkeypatch):
    import stages.embedding

    seen: list[int] = []

    def fake_encode(texts, backend, model=None, cache_dir=None, **_):
        # Character-frequency vectors: deterministic, and different texts get different vectors.
        seen.append(len(texts))
        return np.stack([np.bincount(np.frombuffer(t.encode(), np.uint8), minlength=256)
                         for t in texts]).astype(np.float32)

    monkeypatch.setattr(stages.embedding, "encode_texts", fake_encode)
    docs = pydoc_paragraphs(40)
    df = pl.concat([docs.with_columns(generation=pl.lit(0)), docs.with_columns(generation=pl.lit(1))])
    table = CorpusMetrics(embedding_backend="static", embedding_sample=40, self_bleu_sample=0).apply(df)
    assert seen == [40]  # two generations of the same 40 texts: 40 encodings
    assert table["vendi_score"][0] == pytest.approx(table["vendi_score"][1])
    assert 1.0 < table["vendi_score"][0] < 40.0


def test_plain_corpus_without_generations_is_one_group():
    table = CorpusMetrics(self_bleu_sample=10, embedding_backend="none").apply(pydoc_paragraphs(30))
    assert table.height == 1 and "schedule" not in table.columns
    assert math.isnan(table["tail_mass"][0])  # no reference: reference metrics are left empty
    assert 0 < table["self_bleu"][0] < 1
    # With a reference (here the first half), reference metrics and per-document perplexity appear.
    docs = pydoc_paragraphs(30)
    result = CorpusMetrics(self_bleu_sample=10, embedding_backend="none").execute(data=docs, reference=docs.head(15))
    assert 0 < result.table["tail_mass"][0] < 1
    assert result.side_outputs["perplexity"].columns == ["perplexity"]
    assert result.side_outputs["perplexity"].height == 30


def test_generation_0_perplexity_is_held_out_not_in_sample():
    # The reference model was fit on generation 0 and scored it too: a model that had memorised those documents
    # gave generation 0 a perplexity far below any unseen text's (2.5 against 160 on pydoc), biasing every curve.
    from stages.synthetic import NGramLM

    docs = pydoc_paragraphs(24)
    texts = docs["text"].to_list()
    df = pl.concat([docs.with_columns(generation=pl.lit(0)), docs.head(6).with_columns(generation=pl.lit(1))])
    result = CorpusMetrics(self_bleu_sample=0, embedding_backend="none", near_duplicate_threshold=0,
                           perplexity_order=2).execute(df)
    ppl = result.side_outputs["perplexity"]["perplexity"].to_numpy()
    for i in (0, 5, 23):  # each scored by the model fit on the other 23 documents
        held_out = NGramLM(order=2).fit(texts[:i] + texts[i + 1:]).perplexity([texts[i]])[0]
        assert ppl[i] == pytest.approx(held_out, rel=1e-9)
    # A real document a later generation keeps is held out there too: the same text, the same score.
    assert ppl[24:] == pytest.approx(ppl[:6], rel=1e-12)


def test_bad_inputs_are_named():
    with pytest.raises(ParamError) as err:
        CorpusMetrics.from_params({"self_bleu_sample": 1})
    assert err.value.param == "self_bleu_sample"
    with pytest.raises(ParamError):
        CorpusMetrics.from_params({"rare_max_count": -1})
    df = pl.DataFrame({"generation": [1, 2], "text": ["some words here", "other words"]})
    with pytest.raises(InputDataError, match="generation == 0"):
        CorpusMetrics(embedding_backend="none").apply(df)
    with pytest.raises(InputDataError, match="no column 'body'"):
        CorpusMetrics(text_column="body").apply(df)
    with pytest.raises(InputDataError, match="has no rows"):
        CorpusMetrics().apply(df.head(0))


# ------------------------------------------------------------------------ collapse_report


def test_study_end_to_end_report_shows_collapse_under_replace(tmp_path):
    docs = pydoc_paragraphs(300)
    study = Generations(generations=3, schedules=["replace", "accumulate"], max_tokens=60).execute(docs, seed=0)
    metrics = CorpusMetrics(self_bleu_sample=50, embedding_backend="none").execute(
        study.side_outputs["samples"], seed=0)
    corpus_metrics = CorpusMetrics(self_bleu_sample=0, perplexity_order=0, embedding_backend="none").apply(
        study.table)
    report = CollapseReport(relative=True, metrics=["vocab_size", "tail_mass", "js_divergence"]).execute(
        metrics=metrics.table, perplexity=metrics.side_outputs["perplexity"], corpus_metrics=corpus_metrics,
        workdir=tmp_path / "report")
    out = tmp_path / "report"
    for name in ("report.html", "curves.png", "corpus-curves.png", "perplexity.png", "metric-tail_mass.png"):
        assert (out / name).stat().st_size > 1000, name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "<table>" in html
    long = report.table
    assert set(long.columns) == {"schedule", "generation", "metric", "value", "relative_to_first"}
    assert long.height == 2 * 4 * 3  # schedules x generations x metrics
    first = long.filter(pl.col("generation") == 0)
    assert first.filter(pl.col("metric") == "js_divergence")["relative_to_first"].null_count() == 2
    assert (first.filter(pl.col("metric") != "js_divergence")["relative_to_first"] == 1.0).all()
    tail = long.filter(pl.col("metric") == "tail_mass")
    replace = tail.filter(pl.col("schedule") == "replace")["value"].to_list()
    accumulate = tail.filter(pl.col("schedule") == "accumulate")["value"].to_list()
    # The generator's tails vanish under replace and are held up by accumulating real data.
    assert replace[0] > replace[1] > replace[2] > replace[3]
    assert accumulate[3] > replace[3]


def test_report_refuses_a_table_without_the_metrics():
    with pytest.raises(InputDataError, match="no column 'vocab_size'"):
        CollapseReport(metrics=["vocab_size"]).apply(metrics=pl.DataFrame({"generation": [0], "x": [1.0]}))
    with pytest.raises(ParamError, match="none of the metrics"):
        CollapseReport().apply(metrics=pl.DataFrame({"generation": [0, 1], "other": [1.0, 2.0]}))


def test_a_default_group_column_that_holds_lists_is_refused_naming_group_by():
    data = pl.DataFrame({"text": ["a b", "c d", "e f", "g h"], "generation": [[0], [0], [1], [1]]})
    stage = CorpusMetrics(embedding_backend="none", self_bleu_sample=0)
    for attempt in (lambda: stage.apply(data), lambda: stage.output_schema({"data": dict(data.schema)})):
        with pytest.raises(InputDataError, match="'generation' .*not one value a row") as err:
            attempt()
        assert err.value.param == "group_by"


def test_a_nan_group_key_is_refused_naming_group_by(tmp_path):
    # NaN equals nothing: cut into partitions, its rows made one NaN group per partition in the output, exit 0.
    path = tmp_path / "d.parquet"
    texts = pydoc_paragraphs(40)["text"]
    pl.DataFrame({"g": [1.0, float("nan")] * 20, "text": texts}).write_parquet(path)
    _refused_in_one_line(tmp_path, path, "{group_by: [g], embedding_backend: none, self_bleu_sample: 0, perplexity_order: 0}",
                         "step 'm' (stage 'corpus_metrics'), parameter 'group_by'", f"file '{path}'",
                         "input 'data' column 'g' has 20 NaN values")
    stage = CorpusMetrics(embedding_backend="none", self_bleu_sample=0, perplexity_order=0)
    with pytest.raises(InputDataError, match="column 'generation' has 1 NaN values") as err:  # a default group too
        stage.apply(pl.DataFrame({"generation": [0.0, 0.0, float("nan")], "text": texts[:3]}))
    assert err.value.param == "group_by"
    null_keys = pl.DataFrame({"g": [1.0, None] * 20, "text": texts})  # null is a key that merges: one group
    assert CorpusMetrics(group_by=["g"], embedding_backend="none", self_bleu_sample=0,
                         perplexity_order=0).apply(null_keys)["docs"].to_list() == [20, 20]


def test_a_generation_column_of_strings_is_refused_naming_reference_generation(tmp_path):
    # Compared with the integer reference_generation, it failed inside polars (exit 1, a ComputeError).
    path = tmp_path / "d.parquet"
    pl.DataFrame({"generation": ["0", "0", "1", "1"], "text": pydoc_paragraphs(4)["text"]}).write_parquet(path)
    # Found by the check before the run, which names the config file.
    _refused_in_one_line(tmp_path, path, "{embedding_backend: none, self_bleu_sample: 0}",
                         "step 'm' (stage 'corpus_metrics'), parameter 'reference_generation'",
                         "column 'generation' is String", "cast the column to integers")
    stage = CorpusMetrics(embedding_backend="none", self_bleu_sample=0)
    with pytest.raises(InputDataError, match="'generation' is String") as err:
        stage.check_input_data({"data": Dataset.from_parquet(path)})
    assert err.value.param == "reference_generation" and err.value.file == str(path)
    # With a reference input, the generation column is only a group: strings are fine.
    reference = pl.DataFrame({"text": pydoc_paragraphs(8)["text"]})
    data = pl.DataFrame({"generation": ["a", "b"], "text": pydoc_paragraphs(2)["text"]})
    assert stage.apply(data, reference=reference)["generation"].to_list() == ["a", "b"]


def test_a_text_column_without_any_text_is_refused(tmp_path):
    # Null texts count as empty documents; all of them null gave every metric as 0 with exit 0.
    stage = CorpusMetrics(embedding_backend="none", self_bleu_sample=0, perplexity_order=0)
    with pytest.raises(InputDataError, match=r"column 'text' holds no text \(all 3 rows null\); .*; check that "
                                             "text_column names the right column") as err:
        stage.apply(pl.DataFrame({"generation": [0, 0, 1], "text": [None, None, None]}, schema_overrides={"text": pl.String}))
    assert err.value.param == "text_column"
    # A reference of nothing but nulls failed in the n-gram fit, naming no parameter or file.
    nulls = pl.DataFrame({"text": [None, None]}, schema={"text": pl.String})
    with pytest.raises(InputDataError, match=r"input 'reference' column 'text' holds no text") as err:
        CorpusMetrics(embedding_backend="none", self_bleu_sample=0).apply(
            pl.DataFrame({"text": pydoc_paragraphs(3)["text"]}), reference=nulls)
    assert err.value.param == "text_column"


def test_a_bad_embedding_model_is_named_as_this_stage_names_it(tmp_path):
    # The encoder's error named parameter 'model', which corpus_metrics does not have.
    stage = CorpusMetrics(embedding_backend="sentence-transformers", embedding_model=str(tmp_path / "no-such-model"),
                          self_bleu_sample=0, perplexity_order=0)
    with pytest.raises(ParamError) as err:
        stage.apply(pl.DataFrame({"text": pydoc_paragraphs(4)["text"]}))
    assert err.value.param == "embedding_model"


def _refused_in_one_line(tmp_path, path, params: str, *expected: str) -> None:
    """A one-step corpus_metrics config over `path` fails with exit 2 in one line holding every `expected` piece."""
    from cli_failures import fails_cleanly

    proc = fails_cleanly(tmp_path, f"""
name: bad
steps:
  - id: m
    stage: corpus_metrics
    inputs: {path}
    params: {params}
""", *expected)
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_generation_of_empty_documents_has_no_shares_of_its_tokens():
    # A generator that wrote nothing had tail mass and type-token ratio 0 (total collapse) and a JS divergence of
    # 0.5 from the reference: shares of no tokens are undefined. Two-word texts have no trigram: distinct_3 too.
    df = pl.DataFrame({"generation": [0, 0, 1, 1], "text": ["the cat", "a dog", "", " "]})
    table = CorpusMetrics(self_bleu_sample=0, embedding_backend="none", perplexity_order=0).apply(df)
    g0, g1 = table.sort("generation").iter_rows(named=True)
    assert (g1["tokens"], g1["vocab_size"], g1["reference_vocab_coverage"]) == (0, 0, 0.0)
    for column in ("type_token_ratio", "distinct_1", "distinct_2", "distinct_3", "tail_mass", "js_divergence"):
        assert math.isnan(g1[column]), column
    assert g1["unigram_entropy_bits"] == 0.0 and math.copysign(1, g1["unigram_entropy_bits"]) == 1
    assert (g0["distinct_2"], g0["js_divergence"]) == (1.0, 0.0) and math.isnan(g0["distinct_3"])
