"""A small word-level LSTM language model, trained from scratch in torch, as a `generations` generator.

Shumailov et al. (2024) fine-tuned a neural LM (OPT-125m) on each generation's output. A pretrained
model cannot be fetched here (offline, 2 CPU cores), so this generator trains a 2-layer LSTM over the
text core's words on corpus t-1, then samples corpus t with temperature and nucleus (top-p)
sampling. Two training modes:

- from scratch (default): the vocabulary is the words of corpus t-1 and a fresh model is trained on
  it, so a word no generation produced can never come back (as with the n-gram generator);
- `fine_tune: true`: the first generation's model and vocabulary are kept and each later generation
  continues training the previous generation's weights (Shumailov's setting); words outside that
  first vocabulary map to <unk>, which is never sampled.

Training reuses the scaling studies' loop (`stages.scaling.training.train`): AdamW minibatches,
validation loss on 10% of the documents held out every `eval_every` steps, stopped after `patience`
evaluations without improvement (or `max_steps`) with the best weights restored. Runs are
deterministic under the study seed: one thread, seeded initialisation, seeded minibatch order and a
seeded torch generator for sampling.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError, PipelineError
from stages.scaling.training import TrainConfig, as_tensors, one_thread, seed_everything, train
from stages.synthetic import Generator, detokenize
from stages.text import token_table


def lstm_lm(vocabulary: int, outputs: int, embedding: int, hidden: int, layers: int):
    """Embedding -> `layers`-layer LSTM -> linear over the output vocabulary."""
    from torch import nn

    class LSTMLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocabulary, embedding)
            self.lstm = nn.LSTM(embedding, hidden, num_layers=layers, batch_first=True)
            self.out = nn.Linear(hidden, outputs)

        def forward(self, x, state=None):
            h, state = self.lstm(self.embed(x), state)
            return self.out(h), state

    return LSTMLM()


def _sequence_loss(model, x, y):
    import torch.nn.functional as F

    logits, _ = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def nucleus_filter(logits, temperature: float, top_p: float, banned: list[int]):
    """Probabilities after temperature, banning some ids, and keeping the smallest top-p prefix."""
    import torch

    logits = logits / temperature
    logits[:, banned] = -float("inf")
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        before = torch.cumsum(sorted_p, dim=-1) - sorted_p
        sorted_p = torch.where(before < top_p, sorted_p, torch.zeros_like(sorted_p))
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


class LSTMGenerator(Generator):
    """A 2-layer word LSTM trained on corpus t-1 (from scratch, or fine-tuned from generation t-1's model)."""

    name = "lstm"

    def __init__(self, embedding: int = 64, hidden: int = 128, layers: int = 2, sequence_length: int = 32,
                 learning_rate: float = 3e-3, batch_size: int = 32, max_steps: int = 600, eval_every: int = 25,
                 patience: int = 4, validation_fraction: float = 0.1, fine_tune: bool = False):
        for key, value in (("embedding", embedding), ("hidden", hidden), ("layers", layers),
                           ("sequence_length", sequence_length), ("batch_size", batch_size),
                           ("max_steps", max_steps), ("eval_every", eval_every), ("patience", patience)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParamError("generator_params", f"lstm {key} must be a positive integer, got {value!r}")
        if not 0 < validation_fraction < 1:
            raise ParamError("generator_params",
                             f"lstm validation_fraction must be between 0 and 1, got {validation_fraction}")
        if not learning_rate > 0:
            raise ParamError("generator_params", f"lstm learning_rate must be > 0, got {learning_rate}")
        self.shape = {"embedding": embedding, "hidden": hidden, "layers": layers}
        self.sequence_length = sequence_length
        self.config = TrainConfig(learning_rate=learning_rate, batch_size=batch_size, max_steps=max_steps,
                                  eval_every=eval_every, patience=patience)
        self.validation_fraction = validation_fraction
        self.fine_tune = fine_tune
        self.seed = 0
        self.model = None
        self._last_fit: tuple[str, int] | None = None
        self.vocab: pl.Series | None = None
        self.training_log: list[dict] = []

    def reseed(self, seed: int) -> None:
        """The study hands a seed per schedule, replica and generation before each fit."""
        self.seed = int(seed)

    # -- data -------------------------------------------------------------------------------------

    def _set_vocabulary(self, words: pl.Series) -> None:
        self.vocab = words.unique().sort()
        v = len(self.vocab)
        self.eos, self.bos, self.unk = v, v + 1, v + 2
        self._ids = pl.DataFrame({"token": self.vocab, "id": np.arange(v, dtype=np.int64)})

    def _encode(self, texts) -> tuple[np.ndarray, np.ndarray]:
        toks = token_table(texts).join(self._ids, on="token", how="left", maintain_order="left")
        return toks["doc"].to_numpy().astype(np.int64), toks["id"].fill_null(self.unk).to_numpy().astype(np.int64)

    def _windows(self, docs: np.ndarray, doc: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Documents as one stream (<bos> words <eos> each), cut into (input, next-token) windows."""
        keep = np.isin(doc, docs)
        d, w = doc[keep], ids[keep]
        lengths = np.bincount(np.searchsorted(docs, d), minlength=len(docs))
        stream = np.empty(len(w) + 2 * len(docs), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths + 2)[:-1]])
        stream[starts] = self.bos
        stream[starts + lengths + 1] = self.eos
        body = np.ones(len(stream), bool)
        body[starts] = body[starts + lengths + 1] = False
        stream[body] = w
        n = (len(stream) - 1) // self.sequence_length
        if n == 0:
            span = len(stream) - 1
            return stream[None, :span], stream[None, 1:span + 1]
        x = stream[: n * self.sequence_length].reshape(n, self.sequence_length)
        y = stream[1: n * self.sequence_length + 1].reshape(n, self.sequence_length)
        return x, y

    # -- fitting ----------------------------------------------------------------------------------

    def fit(self, texts, *, generation, schedule):
        toks = token_table(texts)
        if len(toks) == 0:
            raise InputDataError(f"cannot train the lstm generator on a corpus without any words "
                                 f"(schedule {schedule}, generation {generation})")
        # Fine-tuning continues only the model of this schedule's previous generation (a resumed study
        # that skipped it, or another schedule's model, means a fresh start).
        fresh = not self.fine_tune or self._last_fit != (schedule, generation - 1)
        if fresh:
            self._set_vocabulary(toks["token"])
        doc, ids = self._encode(texts)
        n_docs = len(texts)
        rng = np.random.default_rng(self.seed)
        held = rng.random(n_docs) < self.validation_fraction
        if held.all() or not held.any():
            held = np.zeros(n_docs, bool)
            held[rng.integers(n_docs)] = True
        train_docs, val_docs = np.nonzero(~held)[0], np.nonzero(held)[0]
        if len(train_docs) == 0:
            train_docs = val_docs
        x, y = self._windows(train_docs, doc, ids)
        vx, vy = self._windows(val_docs, doc, ids)
        with one_thread():
            seed_everything(self.seed)
            if fresh:
                v = len(self.vocab)
                self.model = lstm_lm(v + 3, v + 3, **self.shape)
            result = train(self.model, _sequence_loss, as_tensors(x, y), as_tensors(vx, vy), self.config,
                           seed=self.seed)
        self._last_fit = (schedule, generation)
        self.training_log.append({"schedule": schedule, "generation": generation, "steps": result.steps,
                                  "best_step": result.best_step, "stopped_by": result.stopped_by,
                                  "validation_loss": round(result.best_validation_loss, 4),
                                  "vocabulary": len(self.vocab), "fine_tuned": not fresh})

    # -- sampling ---------------------------------------------------------------------------------

    def sample(self, n, rng, *, generation, schedule, prompts, prompt_tokens, max_tokens, temperature, top_p):
        import torch

        if self.model is None:
            raise PipelineError("the lstm generator must be fit before it can sample")
        start = np.full((n, 1), self.bos, dtype=np.int64)
        if prompts is not None:
            # Prompts are left-padded with <bos> to one length: the LSTM reads the pad as a document start.
            doc, ids = self._encode(list(prompts))
            cut = prompt_tokens or 1 << 30
            rows = [ids[doc == i][:cut] for i in range(n)]
            width = max((len(r) for r in rows), default=0)
            start = np.full((n, width + 1), self.bos, dtype=np.int64)
            for i, r in enumerate(rows):
                if len(r):
                    start[i, width + 1 - len(r):] = r
        generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        banned = [self.bos, self.unk]
        out = np.full((n, max_tokens), -1, dtype=np.int64)
        alive = torch.ones(n, dtype=torch.bool)
        self.model.eval()
        with one_thread(), torch.no_grad():
            logits, state = self.model(torch.from_numpy(start))
            last = logits[:, -1]
            for step in range(max_tokens):
                probs = nucleus_filter(last, temperature, top_p, banned + ([self.eos] if step == 0 else []))
                chosen = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                out[:, step] = np.where(alive.numpy(), chosen.numpy(), -1)
                alive &= chosen != self.eos
                if not alive.any():
                    break
                logits, state = self.model(chosen[:, None], state)
                last = logits[:, -1]
        mask = (out >= 0) & (out < self.eos)
        doc_index = np.nonzero(mask)[0]
        return detokenize(doc_index, self.vocab.gather(out[mask]), n)

    def label(self) -> str:
        mode = "ft" if self.fine_tune else "scratch"
        return f"lstm-{self.shape['layers']}x{self.shape['hidden']}-{mode}"
