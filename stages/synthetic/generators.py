"""Generators of the `generations` stage: one small interface, and the built-in and external kinds.

`Generator` is what the loop needs from a model (fit on corpus t-1, sample n texts from a seeded
NumPy generator); `make_generator` builds one from the stage's `generator`/`generator_params` and
names bad keys; the callback helpers check and import a user's fine-tuning hook.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError, PipelineError, first_line
from pipeline.io import Dataset
from stages.synthetic.ngram import NGramLM

GENERATORS = ("ngram", "lstm", "hf", "external")

class Generator:
    """What the `generations` loop needs from a model: fit on a corpus, sample n texts, seeded.

    `fit` sees corpus t-1; `sample` gets a NumPy generator salted by schedule and generation, the
    prompts (full real documents, to be cut to `prompt_tokens`) or None, and the sampling-bias knobs.
    `load(path)` lets a fine-tuning callback hand over a newly trained model.
    """

    name: ClassVar[str] = ""

    def fit(self, texts: pl.Series, *, generation: int, schedule: str) -> None:
        raise NotImplementedError

    def sample(self, n: int, rng: np.random.Generator, *, generation: int, schedule: str,
               prompts: list[str] | None, prompt_tokens: int | None, max_tokens: int,
               temperature: float, top_p: float) -> list[str]:
        raise NotImplementedError

    def load(self, path: str | Path) -> None:
        raise PipelineError(f"the '{self.name}' generator cannot load a model; only 'hf' takes a callback's path")

    def label(self) -> str:
        return self.name


class NGramGenerator(Generator):
    """The built-in word n-gram model, refit from scratch on every generation's corpus."""

    name = "ngram"

    def __init__(self, order: int = 3, smoothing: float = 0.01):
        self.model = NGramLM(order=order, smoothing=smoothing)

    def fit(self, texts, *, generation, schedule):
        self.model.fit(texts)

    def sample(self, n, rng, *, generation, schedule, prompts, prompt_tokens, max_tokens, temperature, top_p):
        return self.model.sample(n, rng, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                 prompts=prompts, prompt_tokens=prompt_tokens)

    def label(self) -> str:
        return f"ngram-{self.model.order}"


class HFCausalLMGenerator(Generator):
    """A Hugging Face causal LM loaded from a local directory (never from the hub).

    The model is not trained here: `fit` is a no-op, and a study that fine-tunes between generations
    passes a `callback` that trains on corpus t-1 and returns the new model's directory.
    """

    name = "hf"

    def __init__(self, model_path: str, batch_size: int = 8, device: str = "cpu"):
        if not Path(model_path).is_dir() or not (Path(model_path) / "config.json").is_file():
            raise ParamError("generator_params",
                             f"model_path '{model_path}' is not a model directory (with a config.json); give a "
                             "local model saved with save_pretrained (models are never downloaded)")
        if batch_size < 1:
            raise ParamError("generator_params", f"batch_size must be >= 1, got {batch_size}")
        self.model_path = str(model_path)
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self._tokenizer = None

    def load(self, path):
        if not Path(path).is_dir():
            raise PipelineError(f"the callback returned '{path}', which is not a model directory")
        self.model_path, self._model = str(path), None

    def _ensure_loaded(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
                self._model = AutoModelForCausalLM.from_pretrained(self.model_path, local_files_only=True)
            except (OSError, ValueError) as exc:  # not a causal LM, a missing tokenizer, unreadable weights
                raise ParamError("generator_params", f"model_path '{self.model_path}' does not load as a "
                                 f"causal LM with its tokenizer: {first_line(exc)}") from None
            self._tokenizer.padding_side = "left"
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            self._model.to(self.device).eval()

    def fit(self, texts, *, generation, schedule):
        self._ensure_loaded()

    def sample(self, n, rng, *, generation, schedule, prompts, prompt_tokens, max_tokens, temperature, top_p):
        import torch

        self._ensure_loaded()
        tok, model = self._tokenizer, self._model
        start = tok.bos_token or tok.eos_token
        texts = list(prompts) if prompts is not None else [start] * n
        out: list[str] = []
        for lo in range(0, n, self.batch_size):
            batch = texts[lo:lo + self.batch_size]
            enc = tok(batch, return_tensors="pt", padding=True, truncation=prompt_tokens is not None,
                      max_length=prompt_tokens, add_special_tokens=prompts is None).to(self.device)
            torch.manual_seed(int(rng.integers(0, 2**31 - 1)))
            with torch.no_grad():
                gen = model.generate(**enc, do_sample=True, temperature=temperature, top_p=top_p,
                                     max_new_tokens=max_tokens, pad_token_id=tok.pad_token_id)
            out.extend(tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
        return out

    def label(self) -> str:
        return f"hf:{Path(self.model_path).name}"


class ExternalGenerator(Generator):
    """Synthetic documents the user produced elsewhere, one Parquet per generation.

    Looked up as `<path>/<schedule>/gen-001.parquet` when that exists, else `<path>/gen-001.parquet`
    (a file or a directory of parts); more rows than needed are subsampled with the study's seed.
    """

    name = "external"

    def __init__(self, path: str, text_column: str = "text"):
        if not Path(path).is_dir():
            raise ParamError("generator_params",
                             f"path '{path}' is not a directory; it should hold gen-001.parquet, "
                             "gen-002.parquet, ... (or <schedule>/gen-001.parquet)")
        self.path = Path(path)
        self.text_column = text_column

    def fit(self, texts, *, generation, schedule):
        pass

    def sample(self, n, rng, *, generation, schedule, prompts, prompt_tokens, max_tokens, temperature, top_p):
        name = f"gen-{generation:03d}.parquet"
        candidates = [self.path / schedule / name, self.path / schedule / name[:-8],
                      self.path / name, self.path / name[:-8]]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise InputDataError(f"no synthetic data for generation {generation}; looked for "
                                 f"{', '.join(str(c) for c in candidates)}")
        ds = Dataset.from_parquet(found)
        if self.text_column not in ds.columns:
            raise InputDataError(f"has no column '{self.text_column}'; columns are: {ds.columns}",
                                 param="generator_params", file=str(found))
        texts = ds.collect()[self.text_column].fill_null("")
        if len(texts) < n:
            raise InputDataError(f"holds {len(texts)} rows but generation {generation} needs {n} "
                                 "synthetic documents", file=str(found))
        pick = np.sort(rng.choice(len(texts), size=n, replace=False)) if len(texts) > n else np.arange(n)
        return texts.gather(pick).to_list()


_GENERATOR_CLASSES: dict[str, type[Generator]] = {
    "ngram": NGramGenerator, "hf": HFCausalLMGenerator, "external": ExternalGenerator,
}


def make_generator(kind: str, params: dict[str, Any] | None) -> Generator:
    """Build a generator from the stage's `generator` and `generator_params`, naming bad keys."""
    if kind == "lstm":  # imported on use: it needs torch and imports this module
        from stages.neural_lm import LSTMGenerator

        _GENERATOR_CLASSES["lstm"] = LSTMGenerator
    cls = _GENERATOR_CLASSES.get(kind)
    if cls is None:
        raise ParamError("generator", f"unknown generator '{kind}'; choose one of {', '.join(GENERATORS)}")
    try:
        return cls(**(params or {}))
    except TypeError as exc:
        import inspect

        allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ParamError("generator_params", f"{exc}; the '{kind}' generator takes: {', '.join(allowed)}") from None


def _check_callback_path(callback: str | Callable | None) -> None:
    """The shape of 'package.module:function', checked without importing (importing runs code)."""
    if callback is None or callable(callback):
        return
    if not isinstance(callback, str) or not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", callback):
        raise ParamError("callback", f"{callback!r} should be an import path 'package.module:function'")
    top = callback.split(":")[0].split(".")[0]
    # find_spec of a top-level name only looks on sys.path; it runs no module code.
    if importlib.util.find_spec(top) is None:
        raise ParamError("callback", f"cannot import '{callback}': no module named '{top}'")


def _resolve_callback(callback: str | Callable | None) -> Callable | None:
    if callback is None or callable(callback):
        return callback
    module, _, attr = callback.partition(":")
    if not module or not attr:
        raise ParamError("callback", f"'{callback}' should be an import path 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ParamError("callback", f"cannot import '{callback}': {exc}") from None
    if not callable(fn):
        raise ParamError("callback", f"'{callback}' is not callable")
    return fn

