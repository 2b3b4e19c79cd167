"""Word-level diff of two texts, for reports that show a test item beside the training text it resembles.

A highlighted span says *where* two texts match; a diff says *what changed*: for a near-copy (light
edits, a swapped word, a dropped clause) the reader sees at a glance that the training text is the
test item with three words changed, which is what makes a leakage finding convincing.
"""

from __future__ import annotations

import difflib
import re
from itertools import islice

_WORDS = re.compile(r"\S+")
MAX_WORDS = 400  # longer sides are cut: a diff past this is not read, and SequenceMatcher is quadratic


def word_diff(a: str, b: str, max_words: int = MAX_WORDS) -> list[tuple[str, str]]:
    """(op, text) runs turning `a` into `b` word by word: op is 'equal', 'delete' (only in a) or 'insert' (only in b).

    Words are compared case-insensitively; the text shown is `a`'s for equal and deleted runs, `b`'s
    for inserted ones. A replaced run appears as its deletion followed by its insertion.
    """
    # The first max_words only, read lazily: `b` may be a whole training document of many megabytes.
    wa, wb = ([m.group() for m in islice(_WORDS.finditer(t), max_words)] for t in (a, b))
    matcher = difflib.SequenceMatcher(None, [w.lower() for w in wa], [w.lower() for w in wb], autojunk=False)
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op in ("equal", "delete", "replace") and i2 > i1:
            out.append(("equal" if op == "equal" else "delete", " ".join(wa[i1:i2])))
        if op in ("insert", "replace") and j2 > j1:
            out.append(("insert", " ".join(wb[j1:j2])))
    return out


def diff_ratio(runs: list[tuple[str, str]]) -> float:
    """Share of words the two sides have in common (2 x equal / (words of a + words of b)), in [0, 1]."""
    count = {"equal": 0, "delete": 0, "insert": 0}
    for op, text in runs:
        count[op] += len(text.split())
    total = 2 * count["equal"] + count["delete"] + count["insert"]
    return 2 * count["equal"] / total if total else 0.0
