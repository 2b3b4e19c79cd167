"""Planted contamination: test items made from training text the way leaks happen (studies, calibration)."""

from __future__ import annotations

import re

import numpy as np

PLANT_KINDS = ("verbatim", "surface", "partial", "edited", "reordered", "rewritten")
# Harder than PLANT_KINDS: every 4th word replaced by a word of other text, plus neighbour swaps.
HEAVY_KINDS = ("heavy",)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def plant(text: str, kind: str, rng: np.random.Generator, host: str = "") -> str:
    """A test item made from training `text` the way leaks happen, for studies and calibration.

    verbatim: the text itself; surface: case, punctuation and whitespace changed; partial: a
    40-word span of it inside unrelated `host` text; edited: about one word in six replaced,
    deleted or swapped with its neighbour (breaks every 13-gram); reordered: its sentences in
    reverse order with every sentence edited a little; rewritten: words shuffled within each
    sentence and a third of them dropped (nothing of the word order survives).
    """
    words = text.split()
    if kind == "verbatim":
        return text
    if kind == "surface":
        out = [w.upper() if i % 2 else w.lower() for i, w in enumerate(words)]
        return "  ".join(re.sub(r"[.,;:]", " ; ", w) for w in out)
    if kind == "partial":
        start = int(rng.integers(0, max(len(words) - 40, 1)))
        host_words = host.split()
        cut = len(host_words) // 2
        return " ".join(host_words[:cut] + words[start : start + 40] + host_words[cut:])
    if kind == "edited":
        out = list(words)
        for i in range(int(rng.integers(0, 6)), len(out) - 1, 6):
            action = rng.integers(0, 3)
            if action == 0:
                out[i] = "the"
            elif action == 1:
                out[i] = ""
            else:
                out[i], out[i + 1] = out[i + 1], out[i]
        return " ".join(w for w in out if w)
    if kind == "heavy":
        return _heavy(words, rng, host.split())
    sentences = [s for s in _SENTENCE_END.split(" ".join(words)) if s]
    if kind == "reordered":
        return " ".join(plant(s, "edited", rng) for s in reversed(sentences))
    if kind == "rewritten":
        out = []
        for sentence in sentences:
            ws = sentence.split()
            ws = [ws[i] for i in rng.permutation(len(ws))]
            keep = rng.random(len(ws)) > 1 / 3
            out.append(" ".join(w for w, k in zip(ws, keep) if k))
        return " ".join(out)
    raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(PLANT_KINDS + HEAVY_KINDS)}")


def _heavy(words: list[str], rng: np.random.Generator, vocabulary: list[str]) -> str:
    out = list(words)
    for i in range(int(rng.integers(0, 4)), len(out), 4):
        out[i] = vocabulary[int(rng.integers(0, len(vocabulary)))] if vocabulary else ""
    for i in range(int(rng.integers(0, 7)), len(out) - 1, 7):
        out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(w for w in out if w)
