"""The word n-gram model (stages/synthetic/ngram.py): sampling knobs, perplexity, errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from synthetic_corpus import pydoc_paragraphs

from pipeline.errors import PipelineError
from stages.synthetic import NGramLM
from stages.text import token_table as tokenize


@pytest.fixture(scope="module")
def corpus() -> pl.DataFrame:
    return pydoc_paragraphs(120)


def test_sampling_bias_knobs_narrow_the_output(corpus):
    model = NGramLM(order=3).fit(corpus["text"])
    plain = model.sample(200, np.random.default_rng(0), max_tokens=40)
    biased = model.sample(200, np.random.default_rng(0), max_tokens=40, temperature=0.5, top_p=0.5)
    assert tokenize(biased)["token"].n_unique() < tokenize(plain)["token"].n_unique()


def test_ngram_perplexity_prefers_real_word_order(corpus):
    model = NGramLM(order=3).fit(corpus["text"])
    real = model.perplexity(corpus["text"].head(40))
    # The same words in reverse order: same unigrams, implausible n-grams.
    reversed_text = [" ".join(reversed(t.split())) for t in corpus["text"].head(40)]
    assert np.median(real) < np.median(model.perplexity(reversed_text))
    assert np.isfinite(model.perplexity(["words never seen: zyzzyva quux"])).all()


def test_generator_errors_are_pipeline_errors():
    with pytest.raises(PipelineError, match="must be fit"):
        NGramLM().sample(2, np.random.default_rng(0))
