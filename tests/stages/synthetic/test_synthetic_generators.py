"""Generators other than the n-gram model (stages/synthetic/generators.py): external Parquet, a local HF model, callbacks."""

from __future__ import annotations

import polars as pl
import pytest
from synthetic_corpus import origin_counts, pydoc_paragraphs

from pipeline.errors import InputDataError, ParamError
from stages.synthetic import (
    Generations,
    make_generator,
)


@pytest.fixture(scope="module")
def corpus() -> pl.DataFrame:
    return pydoc_paragraphs(120)


def test_external_generator_mixes_the_users_parquet(corpus, tmp_path):
    synthetic_dir = tmp_path / "synthetic"
    synthetic_dir.mkdir()
    # The user's "generated" text: later paragraphs of the Python reference, none of them in `corpus`.
    users_text = pydoc_paragraphs()["text"].to_list()[500:620]
    for t in (1, 2):
        pl.DataFrame({"text": users_text[t * 40: t * 40 + 30]}).write_parquet(synthetic_dir / f"gen-{t:03d}.parquet")
    table = Generations(generations=2, schedules=["replace", "keep_real"], corpus_size=20, real_fraction=0.25,
                        generator="external", generator_params={"path": str(synthetic_dir)}).apply(corpus, seed=0)
    synthetic = table.filter(pl.col("origin") == "synthetic")
    assert set(synthetic["text"]) <= set(users_text)
    assert set(synthetic["generator"]) == {"external"}
    assert origin_counts(table, "keep_real", 2) == {"human": 5, "synthetic": 15}
    with pytest.raises(InputDataError, match="no synthetic data for generation 3"):
        Generations(generations=3, corpus_size=20, generator="external",
                    generator_params={"path": str(synthetic_dir)}).apply(corpus, seed=0)


def _tiny_gpt2(path, texts):
    """A randomly initialised one-layer GPT-2 with a word-level tokenizer trained on pydoc text."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"], vocab_size=400))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="<eos>",
                                        bos_token="<eos>", pad_token="<eos>")
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_head=2, n_embd=32, n_positions=64,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    import torch

    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


TRAINED: list[int] = []


def fake_finetune(generation, schedule, corpus, generator):
    """What a user's fine-tuning callback returns: the directory of the newly trained model."""
    TRAINED.append(generation)
    return generator.model_path


def test_hf_generator_continues_prompts_from_a_local_model(corpus, tmp_path):
    model_dir = _tiny_gpt2(tmp_path / "tiny-gpt2", corpus["text"].to_list())
    TRAINED.clear()
    stage = Generations.from_params({
        "generations": 2, "corpus_size": 6, "generator": "hf", "prompt_tokens": 8, "max_tokens": 6,
        "generator_params": {"model_path": str(model_dir), "batch_size": 4},
        "callback": "test_synthetic_generators:fake_finetune",
    })
    first = stage.apply(corpus, seed=1)
    synthetic = first.filter(pl.col("origin") == "synthetic")
    assert synthetic.height == 12
    assert set(synthetic["generator"]) == {"hf:tiny-gpt2"}
    assert synthetic["prompt_id"].null_count() == 0
    assert synthetic["text"].str.len_chars().max() > 0
    assert TRAINED == [1, 2]
    assert stage.apply(corpus, seed=1).equals(first)


def test_missing_model_path_says_what_would_be_right(tmp_path):
    with pytest.raises(ParamError, match="is not a model directory.*save_pretrained"):
        make_generator("hf", {"model_path": "/nonexistent/model"})
    with pytest.raises(ParamError, match="is not a model directory") as err:  # a directory, but not a model
        make_generator("hf", {"model_path": str(tmp_path)})
    assert err.value.param == "generator_params"
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')  # looks like one, has no weights
    with pytest.raises(ParamError, match="does not load as a causal LM") as err:
        make_generator("hf", {"model_path": str(tmp_path)}).fit([], generation=1, schedule="replace")
    assert err.value.param == "generator_params"
