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


def test_top_p_truncates_the_unigram_level_too():
    # A draw that backed off to the unigram level took the whole distribution: top_p never dropped a word there
    # (a unigram model sampled 'b', 'zzz' and early ends at top_p 0.5, where 'a' alone holds the nucleus).
    model = NGramLM(order=1, smoothing=0.01).fit(["a a a a b"] * 20 + ["zzz"])
    sampled = model.sample(100, np.random.default_rng(0), max_tokens=20, top_p=0.5)
    assert set(" ".join(sampled).split()) == {"a"} and all(len(t.split()) == 20 for t in sampled)


def test_ngram_perplexity_prefers_real_word_order(corpus):
    model = NGramLM(order=3).fit(corpus["text"])
    real = model.perplexity(corpus["text"].head(40))
    # The same words in reverse order: same unigrams, implausible n-grams.
    reversed_text = [" ".join(reversed(t.split())) for t in corpus["text"].head(40)]
    assert np.median(real) < np.median(model.perplexity(reversed_text))
    assert np.isfinite(model.perplexity(["words never seen: zyzzyva quux"])).all()


@pytest.mark.parametrize(("order", "smoothing"), [(3, 0.01), (2, 0.0), (1, 0.5)])
def test_leave_one_out_perplexity_is_the_refit_without_the_text(order, smoothing):
    # Exact for a count model: the text's own counts come out of every table (a repeated text loses one copy,
    # a word only it used leaves the vocabulary); a text the model was not fit on is scored as before.
    texts = pydoc_paragraphs(30)["text"].to_list()
    texts += [texts[3], "", "zyzzyva appears here alone"]
    model = NGramLM(order=order, smoothing=smoothing).fit(texts)
    loo = model.perplexity(texts + ["never seen text"], leave_one_out=True)
    for i in (0, 3, 30, 31, 32):
        refit = NGramLM(order=order, smoothing=smoothing).fit(texts[:i] + texts[i + 1:])
        assert loo[i] == pytest.approx(refit.perplexity([texts[i]])[0], rel=1e-9)
    assert loo[-1] == model.perplexity(["never seen text"])[0]
    assert np.isnan(NGramLM().fit(["a b c"]).perplexity(["a b c"], leave_one_out=True)).all()  # nothing left


def test_generator_errors_are_pipeline_errors():
    with pytest.raises(PipelineError, match="must be fit"):
        NGramLM().sample(2, np.random.default_rng(0))


def test_a_low_temperature_samples_the_likeliest_words_not_empty_documents():
    # count ** (1 / T) overflowed to inf at T = 0.01 for a count over 1,202 (and lost the other contexts' mass to
    # float round-off well before): every document came out empty instead of the near-greedy "a b".
    model = NGramLM(order=2).fit(["a b"] * 2000 + ["c d e"] * 5)
    texts = model.sample(20, np.random.default_rng(0), max_tokens=5, temperature=0.01)
    assert texts == ["a b"] * 20
    # At T = 0.1 a context of count 10,000 weighed 1e40 in the running sum, and the two equal continuations of
    # the context after it lost their weight to round-off (the sampler then backed off as if it were unseen).
    cum = NGramLM._biased_cumsum(np.array([1e4, 1.0, 1.0]), np.array([0, 1]), np.array([1, 3]), 0.1, 1.0)
    assert cum[2] - cum[1] == pytest.approx(cum[1] - cum[0]) and cum[2] > cum[0]
