"""The neural model-collapse study: the LSTM generator, seeds, and the quick config end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from pipeline.errors import ParamError
from pipeline.runner import run_pipeline
from stages.neural_lm import LSTMGenerator, nucleus_filter
from stages.synthetic import Generations, make_generator

torch = pytest.importorskip("torch")


def pydoc_paragraphs(n: int) -> list[str]:
    import pydoc_data.topics

    paras = [p.strip() for k in sorted(pydoc_data.topics.topics)
             for p in pydoc_data.topics.topics[k].split("\n\n") if len(p.strip()) >= 40]
    return paras[:n]


def tiny(**extra) -> LSTMGenerator:
    return make_generator("lstm", {"embedding": 16, "hidden": 32, "max_steps": 20, "eval_every": 10, **extra})


def fit_and_sample(gen: LSTMGenerator, texts, seed: int, generation: int = 1, schedule: str = "replace"):
    gen.reseed(seed)
    gen.fit(pl.Series(texts), generation=generation, schedule=schedule)
    return gen.sample(20, np.random.default_rng(seed), generation=generation, schedule=schedule, prompts=None,
                      prompt_tokens=None, max_tokens=20, temperature=1.0, top_p=0.9)


def test_same_seed_same_texts_and_another_seed_differs():
    texts = pydoc_paragraphs(60)
    a, b, c = (fit_and_sample(tiny(), texts, s) for s in (5, 5, 6))
    assert a == b
    assert a != c
    assert len(a) == 20 and sum(bool(t) for t in a) == 20  # the first token is never end-of-document


def test_fine_tuning_keeps_the_first_vocabulary_and_continues_only_its_own_schedule():
    texts = pydoc_paragraphs(60)
    gen = tiny(fine_tune=True)
    first = fit_and_sample(gen, texts, 1)
    vocab = gen.vocab.to_list()
    fit_and_sample(gen, first, 2, generation=2)
    assert gen.vocab.to_list() == vocab
    fit_and_sample(gen, texts, 3, generation=1, schedule="accumulate")
    log = gen.training_log
    assert [e["fine_tuned"] for e in log] == [False, True, False]
    # From scratch, the vocabulary is refit on what the previous generation wrote: it can only shrink.
    scratch = tiny()
    fit_and_sample(scratch, first, 2, generation=2)
    assert set(scratch.vocab.to_list()) <= set(vocab)


def test_prompts_are_continued():
    gen = tiny()
    gen.reseed(0)
    gen.fit(pl.Series(pydoc_paragraphs(40)), generation=1, schedule="replace")
    out = gen.sample(3, np.random.default_rng(0), generation=1, schedule="replace",
                     prompts=["The import statement", "A", ""], prompt_tokens=2, max_tokens=5,
                     temperature=0.7, top_p=1.0)
    assert len(out) == 3


def test_nucleus_filter_keeps_the_top_p_prefix_and_bans_ids():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    probs = nucleus_filter(logits.clone(), 1.0, 0.7, banned=[])
    assert torch.allclose(probs, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    probs = nucleus_filter(logits.clone(), 1.0, 1.0, banned=[0])
    assert probs[0, 0] == 0 and math.isclose(float(probs.sum()), 1.0, rel_tol=1e-6)


def test_bad_generator_params_name_the_parameter():
    with pytest.raises(ParamError, match="hidden must be a positive integer"):
        make_generator("lstm", {"hidden": 0})
    with pytest.raises(ParamError, match="takes: embedding"):
        make_generator("lstm", {"hiden": 8})
    with pytest.raises(ParamError, match="validation_fraction"):
        make_generator("lstm", {"validation_fraction": 1.0})


def test_seeds_are_replicas_with_their_own_draws_and_one_generation_zero():
    docs = pl.DataFrame({"id": [f"d{i}" for i in range(80)], "text": pydoc_paragraphs(80)})
    result = Generations(generations=1, seeds=2, schedules=["replace", "keep_real"], max_tokens=30).execute(docs, seed=3)
    table = result.table
    assert table.columns[:2] == ["schedule", "seed"]
    assert sorted(table["seed"].unique().to_list()) == [0, 1]
    gen1 = table.filter(pl.col("generation") == 1)
    by_seed = [gen1.filter((pl.col("schedule") == "replace") & (pl.col("seed") == s))["text"].to_list() for s in (0, 1)]
    assert by_seed[0] != by_seed[1]
    gen0 = table.filter(pl.col("generation") == 0)
    assert gen0.group_by("schedule", "seed").agg(pl.col("doc_id").sort())["doc_id"].n_unique() == 1
    assert "seed1-replace-gen-001" in result.side_outputs
    settings = result.side_outputs["settings"]
    assert settings["seed"][0] == 3 and json.loads(settings["params"][0])["seeds"] == 2


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("collapse")
    run_pipeline("configs/model_collapse_neural_quick.yaml", workdir=workdir)
    return workdir / "model_collapse_neural_quick"


def read(path):
    return pl.read_parquet(str(path / "*.parquet"))


def test_quick_study_structure(quick):
    metrics = read(quick / "metrics")
    assert set(metrics["schedule"]) == {"replace", "keep_real", "accumulate"}
    assert metrics.group_by("schedule", "seed").len()["len"].to_list() == [4] * 6  # generations 0..3
    settings = read(quick / "generations@settings")
    training = json.loads(settings["training"][0])
    assert len(training) == 2 * 3 * 3  # seeds x schedules x generations
    for fit in training:
        # Every model beats a uniform guess over its vocabulary (ln V nats per word) by a wide margin.
        assert fit["validation_loss"] < math.log(fit["vocabulary"] + 3) - 0.5
        assert fit["stopped_by"] in ("patience", "max_steps")
    html = (quick / "report" / "report.html").read_text()
    for text in ("lower is worse", "higher is worse", "2 seeds (replicas): lines are means over seeds, bands span min",
                 "duplicate_rate", "near_duplicate_rate", "Pipeline seed 42", "How each generation's model was trained"):
        assert text in html, text
    for schedule in ("replace", "keep_real", "accumulate"):
        assert f"<li>{schedule}: at generation 3, tail_mass" in html
    for column in metrics.columns:
        assert f"<th>{column}</th>" in html


def test_replace_loses_vocabulary_every_generation_in_every_seed(quick):
    metrics = read(quick / "metrics").sort("schedule", "seed", "generation")
    for seed in range(2):
        vocab = metrics.filter((pl.col("schedule") == "replace") & (pl.col("seed") == seed))["vocab_size"].to_list()
        assert all(a > b for a, b in zip(vocab, vocab[1:])), vocab
        assert vocab[-1] < 0.6 * vocab[0]
    # The training corpora of accumulate keep every real document, so all of generation 0's words.
    corpus = read(quick / "corpus_metrics")
    acc = corpus.filter(pl.col("schedule") == "accumulate")
    assert (acc["reference_vocab_coverage"] == 1.0).all()
    replace_last = corpus.filter((pl.col("schedule") == "replace") & (pl.col("generation") == 3))
    assert (replace_last["reference_vocab_coverage"] < 0.6).all()


@pytest.mark.parametrize("name", ["model_collapse_neural", "model_collapse_neural_quick"])
def test_the_report_title_counts_the_seeds_the_config_runs(name):
    # The quick config (2 seeds) kept the full study's title, "..., 3 seeds", above a page that said "2 seeds".
    from pathlib import Path

    import yaml

    config = yaml.safe_load((Path(__file__).parents[2] / "configs" / f"{name}.yaml").read_text())
    params = {step["id"]: step.get("params", {}) for step in config["steps"]}
    assert params["report"]["title"].endswith(f", {params['generations']['seeds']} seeds")
