"""A word-level neural n-gram language model (Bengio et al. 2003) for the transfer study, in torch.

Small enough to pre-train, fine-tune and train from scratch dozens of times on 2 CPU cores, and a
real language model: next-token cross-entropy over a vocabulary shared by both corpora.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|\n|[^\sA-Za-z0-9_]")
UNK, BOS = 0, 1


def tokenize(text: str) -> list[str]:
    """Identifiers and words, numbers, newlines and single punctuation marks.

    Like the text core's 'word_punct' split (stages/text/tokens.py), plus a token for each newline:
    in source code the line structure is part of what a language model has to predict.
    """
    return TOKEN.findall(text)


def build_vocabulary(token_lists: Iterable[list[str]], size: int) -> dict[str, int]:
    """The `size - 2` most frequent tokens (ties by token) after <unk> = 0 and <bos> = 1."""
    counts: Counter[str] = Counter()
    for tokens in token_lists:
        counts.update(tokens)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max(size - 2, 0)]
    return {token: i + 2 for i, (token, _) in enumerate(ranked)}


def encode(texts: Iterable[str], vocabulary: dict[str, int]) -> list[np.ndarray]:
    return [np.array([vocabulary.get(t, UNK) for t in tokenize(text)], dtype=np.int64) for text in texts]


def contexts(documents: list[np.ndarray], context: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(context tokens, next token) for every position of every document, documents padded with <bos>."""
    xs, ys = [], []
    total = 0
    for ids in documents:
        if ids.size == 0:
            continue
        padded = np.concatenate([np.full(context, BOS, dtype=np.int64), ids])
        windows = np.lib.stride_tricks.sliding_window_view(padded, context + 1)
        xs.append(windows[:, :context])
        ys.append(windows[:, context])
        total += ids.size
        if limit is not None and total >= limit:
            break
    if not xs:
        return np.empty((0, context), dtype=np.int64), np.empty(0, dtype=np.int64)
    x, y = np.concatenate(xs), np.concatenate(ys)
    return (x[:limit], y[:limit]) if limit is not None else (x, y)


def ngram_lm(vocabulary: int, context: int, embedding: int, hidden: int):
    """Embed the context tokens, concatenate, one tanh hidden layer, softmax over the vocabulary."""
    import torch
    from torch import nn

    class NgramLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocabulary, embedding)
            self.hidden = nn.Linear(context * embedding, hidden)
            self.out = nn.Linear(hidden, vocabulary)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.tanh(self.hidden(self.embed(x).flatten(1))))

    return NgramLM()


def next_token_loss(model, x, y):
    import torch.nn.functional as F

    return F.cross_entropy(model(x), y)
