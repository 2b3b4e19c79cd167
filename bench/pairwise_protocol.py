"""llm-decontaminator's pairwise F1 protocol, reproduced on its own MMLU data with our scorer (issue #13).

Issue #13 sets the bare-question target (F1 >= 0.90) from llm-decontaminator's reported embedding F1 of
0.80-0.98. That figure comes from `f1score/mmlu/f1_emb.py` in lm-sys/llm-decontaminator, which measures a
different task from an audit:
- a true positive is cos(original question i, its rephrasing i) > 0.5: the pair is GIVEN, nothing is searched;
  an empty rephrasing counts as a hit;
- false positives are counted on 100 pairs among 15 random original questions of the subject, each a single
  comparison (an audit compares every clean item with every passage of the corpus and keeps its best);
- the threshold 0.5 is fixed per data set (0.6 for HumanEval), the model multi-qa-MiniLM-L6-cos-v1.

Our audit (`bench.leakage_paraphrase.exam_questions`) plants half of each subject's rephrasings in a corpus
and must find them; a clean item's score is its best over every passage it owns, so its null is a maximum,
not one pair. This module scores the same question pairs under their protocol, with this library's scorer
(all-MiniLM-L6-v2, the model the project ships; theirs is not installable offline), at their threshold and
at the paraphrase kind's own floor, so the two protocols can be compared on the same data:

    python -m bench.pairwise_protocol DIR     # DIR as for `bench.bench_leakage --mmlu DIR`

Data: llm-decontaminator's files (Apache-2.0), read from DIR, not vendored. Judged only; nothing is fitted here.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np

from bench.leakage_paraphrase import MMLU_SUBJECTS, mmlu_items

# llm-decontaminator's own choices in f1score/mmlu/f1_emb.py.
THEIR_THRESHOLD = 0.5
RANDOM_QUESTIONS = 15
RANDOM_PAIRS = 100


def f1(tp: int, fp: int, fn: int) -> float:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _random_pairs(n: int, rng: random.Random) -> list[tuple[int, int]]:
    """Their FP pairs: 15 distinct questions drawn at random, the first 100 of their (i < j) pairs."""
    drawn = rng.sample(range(n), RANDOM_QUESTIONS)
    pairs = [(drawn[i], drawn[j]) for i in range(len(drawn)) for j in range(i + 1, len(drawn))]
    return [(min(p), max(p)) for p in pairs[:RANDOM_PAIRS]]  # cosine is symmetric: the (i < j) entry


def protocol_f1(true_scores: np.ndarray, empty: np.ndarray, random_scores: np.ndarray, threshold: float) -> dict:
    tp = int(((true_scores > threshold) | empty).sum())
    fp = int((random_scores > threshold).sum())
    return {"tp": tp, "fn": int(true_scores.size - tp), "fp": fp, "f1": round(f1(tp, fp, true_scores.size - tp), 3)}


def run(directory: Path, seeds: int = 20) -> dict:
    from stages.leakage import LeakageAudit
    from stages.leakage.rescore import rescore

    floor = LeakageAudit().paraphrase_min_score
    items = mmlu_items(directory)
    out: dict = {"model": "all-MiniLM-L6-v2 (theirs: multi-qa-MiniLM-L6-cos-v1)", "seeds": seeds,
                 "thresholds": {"theirs": THEIR_THRESHOLD, "our floor": floor}}
    for subject in MMLU_SUBJECTS:
        rows = items.filter(subject=subject)
        q, r = rows["q"].to_list(), rows["rephrased"].to_list()
        empty = np.array([not t for t in r])
        n = len(q)
        every = [(i, j) for i in range(n) for j in range(i + 1, n)]
        a = q + [q[i] for i, _ in every]
        b = [t or "-" for t in r] + [q[j] for _, j in every]
        cos, bert = rescore(a, b, None, batch_size=64)
        score = (cos + bert) / 2  # the paraphrase kind's score
        per: dict = {}
        for name, s, thresholds in (("cosine", cos, (THEIR_THRESHOLD, floor)), ("paraphrase score", score, (floor,))):
            true, pairs = s[:n], s[n:]
            by_pair = dict(zip(every, pairs))
            for thr in thresholds:
                runs = [protocol_f1(true, empty, np.array([by_pair[p] for p in _random_pairs(n, random.Random(seed))]),
                                    thr) for seed in range(seeds)]
                f1s = sorted(x["f1"] for x in runs)
                per[f"{name} > {thr}"] = {
                    "their protocol F1 (median over seeds)": f1s[len(f1s) // 2], "range": [f1s[0], f1s[-1]],
                    "recall (given pair)": round(float(((true > thr) | empty).mean()), 3),
                    "FPR on every pair of distinct questions": round(float((pairs > thr).mean()), 4),
                    "F1 with every pair as negatives": round(f1(int(((true > thr) | empty).sum()),
                                                             int((pairs > thr).sum()),
                                                             int((~((true > thr) | empty)).sum())), 3)}
        per["empty rephrasings (counted as hits by their protocol)"] = int(empty.sum())
        out[subject] = per
    return out


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1])), indent=1))
