"""Synthetic data across generations: generators, mixing schedules and per-row provenance.

A model-collapse study (Shumailov et al. 2024, Gerstgrasser et al. 2024, Alemohammad et al. 2023)
fits a generator on corpus t-1, samples synthetic documents from it, and mixes them with real data
by a schedule to make corpus t. The `generations` stage runs that loop for several schedules in one
step, so every schedule starts from the very same generation 0 and the curves are comparable.

Generators share one small interface (`Generator`): `fit` on a corpus, `sample` n documents or
continuations of prompts from a seeded NumPy generator. Three are built in:

- `ngram`: an interpolated Witten-Bell word n-gram model held in sorted NumPy arrays; it fits and
  samples a few thousand documents in well under a second, so a 10-generation study runs on a laptop;
- `lstm`: a 2-layer word LSTM trained in torch on each generation's corpus, from scratch or
  fine-tuned from the previous generation's model (stages/neural_lm.py);
- `hf`: a Hugging Face causal LM from a local path, prompted with the first tokens of real documents
  as in Shumailov et al.; fine-tuning between generations is the user's own code, run by `callback`;
- `external`: the user's own synthetic Parquet per generation, mixed by the same schedules.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl
import xxhash

from pipeline.errors import InputDataError, ParamError, PipelineError
from pipeline.io import Dataset
from pipeline.params import Annotated, Field, Fraction, PositiveInt
from pipeline.stage import Context, Stage
from stages.text import token_ids, token_table

SCHEDULES = ("replace", "keep_real", "accumulate", "accumulate_subsample", "fresh_real")
GENERATORS = ("ngram", "lstm", "hf", "external")
PROVENANCE_COLUMNS = ("doc_id", "generation", "origin", "parent_generation", "generator", "prompt_id")

_MIX = np.uint64(0x9E3779B97F4A7C15)
_HASH_START = np.uint64(0x243F6A8885A308D3)


def _mix(key: np.ndarray, token: np.ndarray) -> np.ndarray:
    """Extend a context hash by one token (64-bit polynomial hash; wraps on overflow by design)."""
    with np.errstate(over="ignore"):
        return key * _MIX + token.astype(np.uint64) + np.uint64(1)


def detokenize(doc_index: np.ndarray, tokens: pl.Series, n_docs: int) -> list[str]:
    """Join tokens back into text, gluing punctuation to its neighbour as written prose does."""
    joined = (
        pl.DataFrame({"doc": doc_index.astype(np.int64), "token": tokens})
        .group_by("doc", maintain_order=True)
        .agg(pl.col("token").str.join(" "))
    )
    full = pl.DataFrame({"doc": np.arange(n_docs, dtype=np.int64)}).join(joined, on="doc", how="left")
    text = (
        full["token"].fill_null("")
        .str.replace_all(r" ([.,;:!?)\]}])", "$1")
        .str.replace_all(r"([(\[{]) ", "$1")
    )
    return text.to_list()


# --------------------------------------------------------------------------------- n-gram model


class NGramLM:
    """Interpolated Witten-Bell word n-gram model, every table a sorted NumPy array.

    P(w | h) = lambda_h * c(h, w) / c(h) + (1 - lambda_h) * P(w | h minus its oldest word), with
    lambda_h = c(h) / (c(h) + distinct continuations of h), down to an add-k unigram. Sampling draws
    from that mixture exactly: pick the order by the lambdas, then a continuation of the context by
    its (temperature- and top-p-adjusted) counts, all documents in one vectorised step per token.
    The vocabulary is refit on each corpus, so a word that a generation never produced cannot come
    back later: that is how the tails disappear in a collapse study.
    """

    def __init__(self, order: int = 3, smoothing: float = 0.01):
        if order < 1:
            raise ParamError("order", f"must be at least 1 (1 = unigram), got {order}")
        if smoothing < 0:
            raise ParamError("smoothing", f"must be >= 0 (add-k on the unigram level), got {smoothing}")
        self.order = order
        self.smoothing = smoothing
        self.vocab: pl.Series | None = None

    # -- fitting --------------------------------------------------------------------------------

    def _encode(self, texts: pl.Series | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of every document in the model's vocabulary (unknown words get `unk`)."""
        toks = token_table(texts).join(self._vocab_ids, on="token", how="left", maintain_order="left")
        return (toks["doc"].to_numpy().astype(np.int64),
                toks["id"].fill_null(self.unk).to_numpy().astype(np.int64))

    def _targets(self, doc: np.ndarray, ids: np.ndarray, n_docs: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Every predicted token (each word and one end-of-document per text) and its context hashes.

        Contexts are padded with begin-of-document marks, so the first words of a text have
        contexts of their own, as in the sampler.
        """
        lengths = np.bincount(doc, minlength=n_docs) + 1  # + end of document
        pad = self.order - 1
        starts = np.concatenate([[0], np.cumsum(lengths + pad)[:-1]])
        seq = np.full(int((lengths + pad).sum()), self.bos, dtype=np.int64)
        within = np.arange(len(ids)) - np.repeat(np.concatenate([[0], np.cumsum(lengths - 1)[:-1]]), lengths - 1)
        seq[starts[doc] + pad + within] = ids
        seq[starts + pad + lengths - 1] = self.eos
        target_pos = (np.repeat(starts + pad, lengths) + np.arange(lengths.sum())
                      - np.repeat(np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths))
        keys = []
        key = np.full(len(target_pos), _HASH_START, dtype=np.uint64)
        for k in range(1, self.order):
            key = _mix(key, seq[target_pos - k])
            keys.append(key)
        return seq[target_pos], keys

    def fit(self, texts: pl.Series | Sequence[str]) -> NGramLM:
        toks = token_table(texts)
        if len(toks) == 0:
            raise InputDataError("cannot fit an n-gram model on a corpus without any words")
        ids, self.vocab = token_ids(toks["token"])
        self._vocab_ids = pl.DataFrame({"token": self.vocab, "id": np.arange(len(self.vocab), dtype=np.int64)})
        self.eos, self.bos, self.unk = len(self.vocab), len(self.vocab) + 1, len(self.vocab) + 2
        n_docs = len(texts)
        target, keys = self._targets(toks["doc"].to_numpy().astype(np.int64), ids.astype(np.int64), n_docs)
        self.unigram = np.bincount(target, minlength=self.eos + 1).astype(np.float64)
        self.tables = [self._context_table(key, target) for key in keys]
        return self

    @staticmethod
    def _context_table(ctx: np.ndarray, nxt: np.ndarray) -> dict[str, np.ndarray]:
        """Counts of distinct (context, next) pairs, grouped by context.

        Two one-key uint64 sorts (pairs by hash, then by context) instead of a multi-key sort: the
        pair hashes come out sorted for lookups, and contexts come out grouped for sampling.
        """
        pair = _mix(ctx, nxt)
        order = np.argsort(pair)
        pair = pair[order]
        first = np.nonzero(np.r_[True, pair[1:] != pair[:-1]])[0]
        counts = np.diff(np.append(first, len(pair))).astype(np.float64)
        p_ctx, p_nxt = ctx[order[first]], nxt[order[first]]
        by_ctx = np.argsort(p_ctx, kind="stable")
        p_ctx = p_ctx[by_ctx]
        starts = np.nonzero(np.r_[True, p_ctx[1:] != p_ctx[:-1]])[0]
        ends = np.append(starts[1:], len(p_ctx))
        grouped_counts = counts[by_ctx]
        return {
            "ctx": p_ctx[starts], "start": starts, "end": ends,
            "total": np.add.reduceat(grouped_counts, starts), "types": (ends - starts).astype(np.float64),
            "next": p_nxt[by_ctx], "count": grouped_counts,
            "pair_key": pair[first], "pair_count": counts,
        }

    @staticmethod
    def _by_descending_count(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The same table with each context's continuations ordered by count, most frequent first.

        Only top-p needs this order (it keeps a prefix of each group), so it is made on demand.
        """
        group = np.repeat(np.arange(len(table["start"])), table["end"] - table["start"])
        perm = np.lexsort((table["next"], -table["count"], group))
        return {**table, "next": table["next"][perm], "count": table["count"][perm]}

    # -- scoring --------------------------------------------------------------------------------

    def _unigram_prob(self) -> np.ndarray:
        v = self.eos + 1
        return (self.unigram + self.smoothing) / (self.unigram.sum() + self.smoothing * v)

    def log_prob(self, texts: pl.Series | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Natural-log probability of every predicted token, and the document it belongs to."""
        n_docs = len(texts)
        doc, ids = self._encode(texts)
        target, keys = self._targets(doc, ids, n_docs)
        lengths = np.bincount(doc, minlength=n_docs) + 1
        uni = self._unigram_prob()
        floor = self.smoothing / (self.unigram.sum() + self.smoothing * len(uni)) if self.smoothing else 1e-12
        prob = np.where(target < len(uni), uni[np.minimum(target, len(uni) - 1)], floor)
        for key, table in zip(keys, self.tables):
            pos = np.searchsorted(table["ctx"], key)
            pos_c = np.minimum(pos, len(table["ctx"]) - 1)
            found = table["ctx"][pos_c] == key
            total, types = table["total"][pos_c], table["types"][pos_c]
            pair = _mix(key, target)
            ppos = np.minimum(np.searchsorted(table["pair_key"], pair), len(table["pair_key"]) - 1)
            count = np.where(table["pair_key"][ppos] == pair, table["pair_count"][ppos], 0.0)
            lam = total / (total + types)
            prob = np.where(found, lam * count / total + (1 - lam) * prob, prob)
        return np.log(np.maximum(prob, 1e-300)), np.repeat(np.arange(n_docs), lengths)

    def perplexity(self, texts: pl.Series | Sequence[str]) -> np.ndarray:
        """Per-document perplexity (end-of-document included, so an empty text is still scored)."""
        logp, doc = self.log_prob(texts)
        n = np.bincount(doc, minlength=len(texts))
        return np.exp(-np.bincount(doc, weights=logp, minlength=len(texts)) / np.maximum(n, 1))

    # -- sampling -------------------------------------------------------------------------------

    @staticmethod
    def _biased_cumsum(count: np.ndarray, start: np.ndarray, end: np.ndarray,
                       temperature: float, top_p: float) -> np.ndarray:
        """Cumulative sampling weights after temperature and per-context top-p truncation."""
        w = count ** (1.0 / temperature) if temperature != 1.0 else count.copy()
        if top_p < 1.0 and len(w):
            cw = np.cumsum(w)
            lengths = end - start
            group_start = np.repeat(start, lengths)
            base = cw[group_start] - w[group_start]
            before = cw - w - base
            group_total = np.repeat(cw[end - 1] - cw[start] + w[start], lengths)
            w = np.where(before < top_p * group_total, w, 0.0)
        return np.cumsum(w)

    @staticmethod
    def _draw(cum: np.ndarray, lo: np.ndarray, hi: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Index in [lo, hi) drawn in proportion to the weights whose running sum is `cum`."""
        below = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
        target = below + u * (cum[hi - 1] - below)
        return np.clip(np.searchsorted(cum, target, side="right"), lo, hi - 1)

    def sample(
        self,
        n: int,
        rng: np.random.Generator,
        *,
        max_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        prompts: Sequence[str] | None = None,
        prompt_tokens: int | None = None,
    ) -> list[str]:
        """`n` documents, or continuations of the first `prompt_tokens` words of each prompt."""
        if self.vocab is None:
            raise PipelineError("the n-gram model must be fit before it can sample")
        width = max(self.order - 1, 1)
        history = np.full((n, width), self.bos, dtype=np.int64)
        if prompts is not None:
            doc, ids = self._encode(list(prompts))
            keep = np.arange(len(doc)) - np.searchsorted(doc, doc) < (prompt_tokens or 1 << 30)
            doc, ids = doc[keep], ids[keep]
            # The last `width` words of each prompt become the sampler's starting context.
            ends = np.searchsorted(doc, np.arange(n), side="right")
            for j in range(1, width + 1):
                pos = ends - j
                ok = (pos >= 0) & (pos < len(doc))
                ok[ok] &= doc[pos[ok]] == np.arange(n)[ok]
                history[ok, width - j] = ids[pos[ok]]
        uni_p = self._unigram_prob()
        uni_cum = np.cumsum(self.unigram ** (1.0 / temperature))
        lam_uni = self.unigram.sum() / (self.unigram.sum() + self.smoothing * len(uni_p))
        tables = [self._by_descending_count(t) for t in self.tables] if top_p < 1.0 else self.tables
        cums = [self._biased_cumsum(t["count"], t["start"], t["end"], temperature, top_p) for t in tables]
        out = np.full((n, max_tokens), -1, dtype=np.int64)
        alive = np.ones(n, bool)
        for step in range(max_tokens):
            rows = np.nonzero(alive)[0]
            if len(rows) == 0:
                break
            chosen = self._next_tokens(tables, history[rows], rng, cums, uni_cum, lam_uni, len(uni_p))
            if step == 0 and prompts is None:
                # An empty document is a waste of a sample: redraw the rare end-of-document at step 0.
                for _ in range(8):
                    again = chosen == self.eos
                    if not again.any():
                        break
                    chosen[again] = self._next_tokens(tables, history[rows[again]], rng, cums, uni_cum,
                                                      lam_uni, len(uni_p))
            out[rows, step] = chosen
            alive[rows[chosen == self.eos]] = False
            if self.order > 1:
                history[rows] = np.concatenate([history[rows, 1:], chosen[:, None]], axis=1)
        mask = (out >= 0) & (out < self.eos)
        # Tokens after an end-of-document are never written (the row stops), so `mask` is the text.
        doc_index = np.nonzero(mask)[0]
        return detokenize(doc_index, self.vocab.gather(out[mask]), n)

    def _next_tokens(self, tables: list[dict], history: np.ndarray, rng: np.random.Generator, cums: list[np.ndarray],
                     uni_cum: np.ndarray, lam_uni: float, v: int) -> np.ndarray:
        m = len(history)
        chosen = np.full(m, -1, dtype=np.int64)
        pending = np.ones(m, bool)
        keys = []
        key = np.full(m, _HASH_START, dtype=np.uint64)
        for k in range(1, self.order):
            key = _mix(key, history[:, -k])
            keys.append(key)
        for k in range(self.order - 1, 0, -1):
            table, cum, key = tables[k - 1], cums[k - 1], keys[k - 1]
            pos = np.minimum(np.searchsorted(table["ctx"], key), len(table["ctx"]) - 1)
            found = table["ctx"][pos] == key
            lam = np.where(found, table["total"][pos] / (table["total"][pos] + table["types"][pos]), 0.0)
            u = rng.random(m)
            lo, hi = table["start"][pos], table["end"][pos]
            has_mass = cum[hi - 1] > np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
            take = pending & found & (u < lam) & has_mass
            if take.any():
                idx = self._draw(cum, lo[take], hi[take], rng.random(int(take.sum())))
                chosen[take] = table["next"][idx]
            pending &= ~take
        if pending.any():
            rows = np.nonzero(pending)[0]
            from_counts = rng.random(len(rows)) < lam_uni
            picks = np.searchsorted(uni_cum, rng.random(len(rows)) * uni_cum[-1], side="right")
            uniform = rng.integers(0, v, len(rows))
            chosen[rows] = np.where(from_counts, np.minimum(picks, v - 1), uniform)
        return chosen


# --------------------------------------------------------------------------------- generators


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
        if not Path(model_path).is_dir():
            raise ParamError("generator_params",
                             f"model_path '{model_path}' is not a directory; give a local model saved "
                             "with save_pretrained (models are never downloaded)")
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

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
            self._tokenizer.padding_side = "left"
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            self._model = AutoModelForCausalLM.from_pretrained(self.model_path, local_files_only=True)
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


# --------------------------------------------------------------------------------- the stage


def _frame(doc_id, generation, origin, parent, generator, prompt_id, text) -> pl.DataFrame:
    n = len(text)

    def col(value, dtype):
        if isinstance(value, (list, np.ndarray, pl.Series)):
            return pl.Series(values=value, dtype=dtype)
        return pl.repeat(value, n, dtype=dtype, eager=True)

    return pl.DataFrame({
        "doc_id": col(doc_id, pl.String), "generation": col(generation, pl.Int32),
        "origin": col(origin, pl.String), "parent_generation": col(parent, pl.Int32),
        "generator": col(generator, pl.String), "prompt_id": col(prompt_id, pl.String),
        "text": col(text, pl.String),
    })


class Generations(Stage):
    """Run generations of synthetic data under one or more mixing schedules, with provenance per row.

    Generation 0 is the human corpus (`corpus_size` documents drawn from the input). For t = 1..T the
    generator is fit on corpus t-1 and samples synthetic documents; corpus t is then built by the
    schedule (N = generation-0 size, R = round(real_fraction * N)):
      replace: N synthetic; keep_real: R real drawn afresh from generation 0 plus N - R synthetic
      (Shumailov's 10% setting); accumulate: all real plus every earlier synthetic set, N new per
      generation (Gerstgrasser et al.); accumulate_subsample: N drawn from that growing pool;
      fresh_real: R real documents never used before (outside generation 0) plus N - R synthetic
      (the fresh-data loop of Alemohammad et al.).
    Every schedule starts from the same generation 0 and uses its own seeded draws, so schedules
    compare like for like. Outputs: the main table is every corpus (generation of every schedule,
    with a `schedule` column); each corpus is also a side output, `gen-003` (or `replace-gen-003`
    when several schedules run); and `samples` holds what each generation's generator produced
    (generation 0 = the human corpus), the view in which Shumailov and Gerstgrasser measure collapse,
    since an accumulating corpus keeps its real data by construction; `settings` is one row with the
    seed, params and (for trained generators) how each fit was stopped, for the report. Finished generations are
    checkpointed, so a killed study resumes where it stopped.

    Parameters:
        generations: number of synthetic generations T (>= 1)
        schedules: one schedule or a list: replace, keep_real, accumulate, accumulate_subsample, fresh_real
        corpus_size: documents in generation 0 and in each fixed-size corpus (null = every input row)
        real_fraction: share of real documents per generation for keep_real and fresh_real
        generator: ngram (built in), lstm (word LSTM trained in torch), hf (local causal LM) or external (your own Parquet per generation)
        seeds: independent replicas of every schedule (own sampling, mixing and training seeds; shared generation 0); > 1 adds a `seed` column
        generator_params: ngram {order, smoothing}; lstm {embedding, hidden, layers, sequence_length, learning_rate, batch_size, max_steps, eval_every, patience, validation_fraction, fine_tune}; hf {model_path, batch_size, device}; external {path, text_column}
        text_column: input column holding the text (the output keeps the same name)
        id_column: input column with document ids (null = row number)
        prompt_tokens: if set, synthetic texts continue the first this-many tokens of a real document
        max_tokens: most tokens generated per synthetic document
        temperature: sampling temperature (< 1 sharpens: the sampling-bias knob)
        top_p: nucleus sampling mass kept per step (< 1 drops the tail)
        callback: 'module:function' called before each fit as f(generation=, schedule=, corpus=, generator=); may return a new model path
    """

    name = "generations"
    version = "2"
    inputs = ("data",)

    def __init__(
        self,
        generations: PositiveInt = 5,
        schedules: list[str] | str = "replace",
        corpus_size: PositiveInt | None = None,
        real_fraction: Fraction = 0.1,
        generator: Literal["ngram", "lstm", "hf", "external"] = "ngram",
        seeds: PositiveInt = 1,
        generator_params: dict[str, Any] | None = None,
        text_column: str = "text",
        id_column: str | None = "id",
        prompt_tokens: PositiveInt | None = None,
        max_tokens: PositiveInt = 128,
        temperature: Annotated[float, Field(gt=0.0)] = 1.0,
        top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0,
        callback: str | None = None,
    ):
        self.generations = generations
        self.schedules = schedules
        self.corpus_size = corpus_size
        self.real_fraction = real_fraction
        self.generator = generator
        self.seeds = seeds
        self.generator_params = generator_params
        self.text_column = text_column
        self.id_column = id_column
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.callback = callback

    @property
    def schedule_list(self) -> list[str]:
        return [self.schedules] if isinstance(self.schedules, str) else list(self.schedules)

    def validate(self) -> None:
        if not self.schedule_list:
            raise ParamError("schedules", f"give at least one of {', '.join(SCHEDULES)}")
        for s in self.schedule_list:
            if s not in SCHEDULES:
                raise ParamError("schedules", f"unknown schedule '{s}'; choose from {', '.join(SCHEDULES)}")
        if len(set(self.schedule_list)) != len(self.schedule_list):
            raise ParamError("schedules", "lists a schedule twice")
        make_generator(self.generator, self.generator_params)
        _check_callback_path(self.callback)  # imported when the step runs, never while validating

    def required_columns(self):
        cols = {self.text_column: "text_column"}
        if self.id_column is not None:
            cols[self.id_column] = "id_column"
        return {"data": cols}

    def side_name(self, schedule: str, generation: int, replica: int = 0) -> str:
        prefix = f"{schedule}-" if len(self.schedule_list) > 1 else ""
        if self.seeds > 1:
            prefix = f"seed{replica}-{prefix}"
        return f"{prefix}gen-{generation:03d}"

    def _seed_cols(self, replica: int) -> dict[str, int]:
        """The `seed` column's value for a replica (no column when the study runs one seed)."""
        return {"seed": replica} if self.seeds > 1 else {}

    def _rng(self, ctx: Context, replica: int, *salt) -> np.random.Generator:
        """Seeded draws per replica; replica 0 of a one-seed study keeps the salts it always had."""
        return ctx.rng(*(("replica", replica) if self.seeds > 1 else ()), *salt)

    @classmethod
    def example(cls):
        import pydoc_data.topics

        paragraphs = [p.strip() for k in sorted(pydoc_data.topics.topics)[:6]
                      for p in pydoc_data.topics.topics[k].split("\n\n") if p.strip()]
        df = pl.DataFrame({"id": [f"p{i}" for i in range(len(paragraphs))], "text": paragraphs})
        return {"generations": 2, "schedules": ["replace", "keep_real", "accumulate"], "corpus_size": 40,
                "max_tokens": 40}, {"data": df}

    # -- run ------------------------------------------------------------------------------------

    def run(self, ctx: Context, data: Dataset) -> pl.DataFrame:
        cols = [self.text_column] + ([self.id_column] if self.id_column else [])
        human = data.lazy().select(cols).collect()
        ids = (human[self.id_column].cast(pl.String) if self.id_column
               else pl.Series(np.arange(len(human)).astype(str)))
        human = pl.DataFrame({"doc_id": ids, "text": human[self.text_column].cast(pl.String).fill_null("")})
        if human["doc_id"].n_unique() != len(human):
            raise InputDataError(f"column '{self.id_column}' has duplicate ids; provenance needs unique ids",
                                 param="id_column", file=data.label)
        n0 = self.corpus_size if self.corpus_size is not None else len(human)
        if n0 > len(human):
            raise InputDataError(f"corpus_size is {n0} but the input has only {len(human)} rows",
                                 param="corpus_size", file=data.label)
        pick = np.sort(ctx.rng("generation-0").choice(len(human), size=n0, replace=False)) \
            if n0 < len(human) else np.arange(n0)
        gen0 = _frame(human["doc_id"].gather(pick), 0, "human", None, None, None, human["text"].gather(pick))
        unused = np.setdiff1d(np.arange(len(human)), pick)
        fresh_pool = _frame(human["doc_id"].gather(unused), 0, "human", None, None, None,
                            human["text"].gather(unused))
        n_real = int(round(self.real_fraction * n0))
        if "fresh_real" in self.schedule_list and len(fresh_pool) < n_real * self.generations:
            raise InputDataError(
                f"fresh_real needs {n_real * self.generations} real documents outside generation 0 "
                f"({self.generations} generations x {n_real}), but only {len(fresh_pool)} are left; "
                "lower corpus_size or real_fraction", param="corpus_size", file=data.label)

        ckpt = self._checkpoint(ctx, human)
        callback = _resolve_callback(self.callback)
        generator = make_generator(self.generator, self.generator_params)
        bar = ctx.progress(total=self.generations * len(self.schedule_list) * self.seeds, unit="generations")
        frames, samples, stats = [], [], []
        for replica in range(self.seeds):
            for schedule in self.schedule_list:
                corpora = [gen0]
                news: list[pl.DataFrame] = []
                for t in range(1, self.generations + 1):
                    cached = self._load(ckpt, schedule, t, replica)
                    if cached is not None:
                        corpus, new = cached
                        resumed = True
                    else:
                        corpus, new = self._generation(ctx, schedule, t, corpora, news, fresh_pool, n0, n_real,
                                                       generator, callback, replica)
                        self._save(ckpt, schedule, t, corpus, new, replica)
                        resumed = False
                    corpora.append(corpus)
                    news.append(new)
                    synthetic = int((corpus["origin"] == "synthetic").sum())
                    stats.append({"schedule": schedule, **self._seed_cols(replica), "generation": t,
                                  "rows": len(corpus), "synthetic": synthetic,
                                  "synthetic_share": round(synthetic / max(len(corpus), 1), 6), "resumed": resumed})
                    bar.update(1)
                tag = {"schedule": pl.lit(schedule), **{k: pl.lit(v, pl.Int32)
                                                        for k, v in self._seed_cols(replica).items()}}
                for t, corpus in enumerate(corpora):
                    ctx.write_side_output(self.side_name(schedule, t, replica), corpus.rename({"text": self.text_column}))
                    frames.append(corpus.with_columns(**tag))
                samples += [f.with_columns(**tag) for f in (gen0, *news)]
        bar.close()
        columns = ["schedule", *(["seed"] if self.seeds > 1 else []), *PROVENANCE_COLUMNS, "text"]
        ctx.write_side_output("samples", pl.concat(samples).select(columns).rename({"text": self.text_column}))
        ctx.record("generation_0_rows", n0)
        ctx.record("real_per_generation", n_real)
        ctx.record("generator", generator.label())
        ctx.record("generations", stats)
        ctx.record("resumed_generations", sum(s["resumed"] for s in stats))
        training = getattr(generator, "training_log", [])
        if training:
            ctx.record("training", training)
        # One row the collapse report prints: what was run, under which seed, and how training stopped.
        ctx.write_side_output("settings", pl.DataFrame({
            "stage": [self.name], "seed": [ctx.seed], "generator": [generator.label()],
            "params": [json.dumps(self.get_params(), sort_keys=True, default=repr)],
            "training": [json.dumps(training)]}))
        return pl.concat(frames).select(columns).rename({"text": self.text_column})

    def _generation(self, ctx, schedule, t, corpora, news, fresh_pool, n0, n_real, generator, callback, replica=0):
        """Fit on corpus t-1, sample, and mix corpus t by the schedule."""
        previous = corpora[-1]
        if hasattr(generator, "reseed"):  # generators that train draw their initialisation from the study seed
            generator.reseed(int(self._rng(ctx, replica, schedule, t, "fit").integers(0, 2**62)))
        if callback is not None:
            new_path = callback(generation=t, schedule=schedule, corpus=previous, generator=generator)
            if new_path is not None:
                generator.load(new_path)
        generator.fit(previous["text"], generation=t, schedule=schedule)
        log = getattr(generator, "training_log", None)
        if log and self.seeds > 1:
            log[-1]["seed"] = replica
        n_synth = n0 - n_real if schedule in ("keep_real", "fresh_real") else n0
        rng = self._rng(ctx, replica, schedule, t, "sample")
        prompts = prompt_ids = None
        if self.prompt_tokens is not None:
            gen0 = corpora[0]
            which = rng.choice(len(gen0), size=n_synth, replace=n_synth > len(gen0))
            prompts = gen0["text"].gather(which).to_list()
            prompt_ids = gen0["doc_id"].gather(which)
        texts = generator.sample(n_synth, rng, generation=t, schedule=schedule, prompts=prompts,
                                 prompt_tokens=self.prompt_tokens, max_tokens=self.max_tokens,
                                 temperature=self.temperature, top_p=self.top_p) if n_synth else []
        if len(texts) != n_synth:
            raise PipelineError(f"the '{generator.name}' generator returned {len(texts)} texts for {n_synth} requested")
        doc_ids = [f"{schedule}/g{t:03d}/{i:06d}" for i in range(n_synth)]
        new = _frame(doc_ids, t, "synthetic", t - 1, generator.label(), prompt_ids, texts)
        mix_rng = self._rng(ctx, replica, schedule, t, "mix")
        if schedule == "replace":
            corpus = new
        elif schedule == "keep_real":
            real = corpora[0].gather(np.sort(mix_rng.choice(len(corpora[0]), size=n_real, replace=False)))
            corpus = pl.concat([real.with_columns(generation=pl.lit(t, pl.Int32)), new])
        elif schedule == "fresh_real":
            # The held-out pool is shuffled once (by the seed) so "fresh" documents are a random draw.
            order = self._rng(ctx, replica, schedule, "fresh-order").permutation(len(fresh_pool))
            real = fresh_pool.gather(np.sort(order[(t - 1) * n_real: t * n_real]))
            corpus = pl.concat([real.with_columns(generation=pl.lit(t, pl.Int32)), new])
        elif schedule == "accumulate":
            corpus = pl.concat([previous, new]).with_columns(generation=pl.lit(t, pl.Int32))
        else:  # accumulate_subsample
            pool = pl.concat([corpora[0], *news, new])
            corpus = pool.gather(np.sort(mix_rng.choice(len(pool), size=n0, replace=False)))
            corpus = corpus.with_columns(generation=pl.lit(t, pl.Int32))
        return corpus, new

    # -- checkpoints ------------------------------------------------------------------------------

    def _checkpoint(self, ctx: Context, human: pl.DataFrame) -> Path | None:
        """The checkpoint folder for these exact params, seed and input (stale ones are cleared)."""
        if ctx.checkpoint_dir is None:
            return None
        h = xxhash.xxh3_128()
        h.update(json.dumps(self.get_params(), sort_keys=True, default=repr).encode())
        h.update(str(ctx.seed).encode())
        h.update(human.hash_rows(seed=0).to_numpy().tobytes())
        key = h.hexdigest()
        root = Path(ctx.checkpoint_dir) / "generations"
        marker = root / "_key"
        if root.exists() and (not marker.exists() or marker.read_text() != key):
            import shutil

            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        marker.write_text(key)
        return root

    @staticmethod
    def _paths(ckpt: Path, schedule: str, t: int, replica: int = 0) -> tuple[Path, Path]:
        stem = f"seed{replica}-{schedule}" if replica else schedule
        return ckpt / f"{stem}-gen-{t:03d}.parquet", ckpt / f"{stem}-new-{t:03d}.parquet"

    def _save(self, ckpt, schedule, t, corpus, new, replica=0):
        if ckpt is None:
            return
        for path, frame in zip(self._paths(ckpt, schedule, t, replica), (corpus, new)):
            tmp = path.with_suffix(".tmp")
            frame.write_parquet(tmp)
            os.replace(tmp, path)

    def _load(self, ckpt, schedule, t, replica=0):
        if ckpt is None:
            return None
        corpus_path, new_path = self._paths(ckpt, schedule, t, replica)
        if not (corpus_path.exists() and new_path.exists()):
            return None
        return pl.read_parquet(corpus_path), pl.read_parquet(new_path)
