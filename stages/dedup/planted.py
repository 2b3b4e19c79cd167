"""Planted near-duplicates of real text, for tests, calibration and `bench/bench_dedup.py`.

Real prose every Python ships with: the paragraphs of the language reference (`pydoc_data`) and
the docstrings of the standard library (read with `ast`, nothing imported). Copies are made the
ways near-duplicates arise: a share of words edited (replaced, deleted, inserted, swapped with a
neighbour), sentences reordered, boilerplate added around the text. Documents that were not copied
are the controls: distinct texts that must stay apart.
"""

from __future__ import annotations

import ast
import re
import sysconfig
from pathlib import Path

import numpy as np
import polars as pl

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
EDIT_LEVELS = (0.05, 0.1, 0.2, 0.3)
COPY_KINDS = ("edit", "reorder", "boilerplate")
BOILERPLATE = (
    "This page is part of the documentation set; see the index for related topics.",
    "Copyright the authors. Licensed under the terms stated in the accompanying license file.",
    "Report errors in this page through the issue tracker of the project.",
)
_FILLER = ("data", "value", "module", "object", "returns", "the", "a", "function", "string", "list")


def real_documents(min_words: int = 50, max_words: int = 400, limit: int | None = None,
                   distinct_below: float | None = 0.5) -> list[str]:
    """Distinct paragraphs of real prose: pydoc topic paragraphs, then stdlib docstrings (deterministic order).

    The standard library repeats itself (lstrip/rstrip/strip, binary vs augmented operators), so
    with `distinct_below` set, only the first of any documents whose 5-word-shingle Jaccard reaches
    it is kept: controls are then distinct documents, as planted-duplicate measurements need.
    """
    import pydoc_data.topics as topics

    if distinct_below is not None:
        from stages.dedup.rate import near_duplicate_clusters

        pool = real_documents(min_words, max_words, None if limit is None else 2 * limit + 200, None)
        labels = near_duplicate_clusters(pool, threshold=distinct_below)
        distinct = [text for i, text in enumerate(pool) if labels[i] == i]
        return distinct[:limit] if limit is not None else distinct

    out: list[str] = []
    seen: set[str] = set()

    def take(text: str) -> bool:
        words = text.split()
        flat = " ".join(words)
        # Prose only: ASCII tables and code listings are mostly symbols, and alike to any embedding.
        letters = sum(ch.isalpha() or ch == " " for ch in flat)
        if min_words <= len(words) <= max_words and letters >= 0.85 * len(flat) and flat.lower() not in seen:
            seen.add(flat.lower())
            out.append(flat)
        return limit is not None and len(out) >= limit

    for _, topic in sorted(topics.topics.items()):
        for paragraph in re.split(r"\n\s*\n", topic):
            if take(paragraph):
                return out
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if path.name.startswith("test") or path.parent.name.startswith(("test", "idlelib")):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and take(doc):
                    return out
    return out


def edit_words(text: str, level: float, rng: np.random.Generator) -> str:
    """About `level` of the words replaced, deleted, swapped with a neighbour or preceded by an inserted word."""
    words = text.split()
    count = max(1, int(round(level * len(words))))
    targets = np.sort(rng.choice(len(words), size=min(count, len(words)), replace=False))
    for i in targets[::-1]:
        action = int(rng.integers(0, 4))
        if action == 0:
            words[i] = _FILLER[int(rng.integers(0, len(_FILLER)))] + "s"
        elif action == 1:
            del words[i]
        elif action == 2 and i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
        else:
            words.insert(int(i), _FILLER[int(rng.integers(0, len(_FILLER)))])
    return " ".join(words)


def reorder_sentences(text: str, rng: np.random.Generator) -> str:
    """The same sentences in another order (a rotation when there are only two)."""
    sentences = [s for s in _SENTENCE_END.split(text) if s]
    if len(sentences) < 2:
        return text
    order = rng.permutation(len(sentences))
    if (order == np.arange(len(sentences))).all():
        order = np.roll(order, 1)
    return " ".join(sentences[i] for i in order)


def add_boilerplate(text: str, rng: np.random.Generator) -> str:
    """A header and a footer line of boilerplate around the text."""
    first, last = rng.choice(len(BOILERPLATE), size=2, replace=False)
    return f"{BOILERPLATE[first]} {text} {BOILERPLATE[last]}"


def planted_corpus(n_sources: int = 200, n_controls: int = 200, seed: int = 0,
                   levels: tuple[float, ...] = EDIT_LEVELS, documents: list[str] | None = None) -> pl.DataFrame:
    """Sources, their planted copies and controls: columns id, text, source, kind, level.

    `source` is the index of the document a row comes from (copies share their source's), `kind`
    is 'original', 'edit', 'reorder', 'boilerplate' or 'control', `level` the share of words edited.
    Rows are shuffled so copies do not sit next to their source.
    """
    docs = documents if documents is not None else real_documents(limit=n_sources + n_controls)
    if len(docs) < n_sources + n_controls:
        raise ValueError(f"only {len(docs)} documents available, asked for {n_sources + n_controls}")
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, int, str, float]] = []
    for s in range(n_sources):
        text = docs[s]
        rows.append((text, s, "original", 0.0))
        for level in levels:
            rows.append((edit_words(text, level, rng), s, "edit", level))
        rows.append((reorder_sentences(text, rng), s, "reorder", 0.0))
        rows.append((add_boilerplate(text, rng), s, "boilerplate", 0.0))
    for c in range(n_sources, n_sources + n_controls):
        rows.append((docs[c], c, "control", 0.0))
    order = rng.permutation(len(rows))
    return pl.DataFrame({
        "id": [f"d{i:06d}" for i in range(len(rows))],
        "text": [rows[i][0] for i in order],
        "source": [rows[i][1] for i in order],
        "kind": [rows[i][2] for i in order],
        "level": [rows[i][3] for i in order],
    })
