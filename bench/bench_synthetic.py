"""Throughput of the n-gram generator (fit, sample) and of `corpus_metrics`, against plain Python.

Corpus: the standard library's own sources (the `python_stdlib` stage; 734 files, about 2.6M word
tokens on Python 3.11); `scale="quick"` reads the first 40 files. Baselines are the textbook
implementations the vectorised code replaces, measured side by side in the same run:

- fit: Witten-Bell trigram counts in dicts of Counters (what nltk-style counting does);
- sample: the same model sampled token by token in Python, with per-context cumulative weights
  cached and bisected (a strong pure-Python sampler, not a naive one);
- corpus_metrics (counts): vocabulary, distinct-1/2/3, entropy, tail mass and JS divergence with
  collections.Counter;
- self-BLEU (on pydoc paragraphs, 100 quick / 400 full): sentence BLEU of each document against
  all others, pairwise (quadratic);
- corpus_metrics (whole stage, embeddings off, self-BLEU on 50 files): the baselines above
  together, plus the baseline model's per-document perplexity.
Baselines tokenise with the same regular expression (re.findall) inside the timed part, as ours does.

Every case runs in a fresh process (peak RSS is its own); times are medians of `repeats` runs.
Run: python -m bench.bench_synthetic [quick|full]
"""

from __future__ import annotations

import bisect
import math
import os
import random
import re
import statistics
import sys
import time
from collections import Counter, defaultdict

from bench.common import in_fresh_process, print_rows

ORDER = 3
SAMPLE_DOCS = {"quick": 200, "full": 2000}
MAX_TOKENS = 128
BLEU_DOCS = {"quick": 100, "full": 400}
# Whole source files are long, and the pairwise baseline is quadratic in them: the stage case
# samples this many files for self-BLEU on both sides.
STAGE_BLEU_DOCS = 50
FILES = {"quick": 40, "full": None}


def _corpus(scale: str):
    from stages.sources import PythonStdlib

    return PythonStdlib(limit=FILES[scale]).apply()["text"]


def _tokens(texts) -> list[list[str]]:
    """The plain-Python tokenizer (same pattern as ours); baselines pay for it as ours does."""
    from stages.text import WORD_PUNCT_REGEX

    pattern = re.compile(WORD_PUNCT_REGEX)
    return [pattern.findall(t) for t in texts]


def _paragraphs(n: int):
    """Short documents for self-BLEU: paragraphs of the Python reference (pydoc_data)."""
    import pydoc_data.topics

    import polars as pl

    paras = [p.strip() for k in sorted(pydoc_data.topics.topics)
             for p in pydoc_data.topics.topics[k].split("\n\n") if len(p.split()) >= 8]
    return pl.Series("text", paras[:n])


class Timings(list):
    """Wall seconds per run, with the process's CPU seconds per run (all threads) in `cpu`: steadier on a shared machine."""

    cpu: list[float]


def _timed(fn, repeats: int) -> Timings:
    times = Timings()
    times.cpu = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        times.cpu.append(time.process_time() - c0)
    return times


# ------------------------------------------------------------------------ the plain-Python baseline


class DictNGram:
    """Witten-Bell interpolated n-gram model in dicts: the reference the NumPy model is checked against."""

    BOS, EOS = "<s>", "</s>"

    def fit(self, docs: list[list[str]]):
        self.tables = [defaultdict(Counter) for _ in range(ORDER - 1)]
        self.unigram = Counter()
        for doc in docs:
            seq = [self.BOS] * (ORDER - 1) + doc + [self.EOS]
            for i in range(ORDER - 1, len(seq)):
                w = seq[i]
                self.unigram[w] += 1
                for k in range(1, ORDER):
                    self.tables[k - 1][tuple(seq[i - k:i])][w] += 1
        self.total = sum(self.unigram.values())
        self.vocab = list(self.unigram)
        self._cum: dict = {}
        return self

    def _choices(self, k, ctx):
        key = (k, ctx)
        if key not in self._cum:
            counter = self.tables[k - 1][ctx] if k else self.unigram
            words = list(counter)
            cum, acc = [], 0
            for w in words:
                acc += counter[w]
                cum.append(acc)
            self._cum[key] = (words, cum)
        return self._cum[key]

    def sample(self, n: int, seed: int) -> list[list[str]]:
        rnd = random.Random(seed)
        out = []
        for _ in range(n):
            hist, doc = [self.BOS] * (ORDER - 1), []
            for _step in range(MAX_TOKENS):
                w = None
                for k in range(ORDER - 1, 0, -1):
                    ctx = tuple(hist[-k:])
                    if ctx in self.tables[k - 1]:
                        words, cum = self._choices(k, ctx)
                        if rnd.random() < cum[-1] / (cum[-1] + len(words)):
                            w = words[bisect.bisect_right(cum, rnd.random() * cum[-1])]
                            break
                if w is None:
                    words, cum = self._choices(0, ())
                    w = words[bisect.bisect_right(cum, rnd.random() * cum[-1])]
                if w == self.EOS:
                    break
                doc.append(w)
                hist = hist[1:] + [w]
            out.append(doc)
        return out

    def _total(self, k, ctx):
        return self._choices(k, ctx)[1][-1]

    def perplexity(self, doc: list[str]) -> float:
        seq = [self.BOS] * (ORDER - 1) + doc + [self.EOS]
        v = len(self.unigram)
        logp = 0.0
        for i in range(ORDER - 1, len(seq)):
            w = seq[i]
            p = (self.unigram.get(w, 0) + 0.01) / (self.total + 0.01 * v)
            for k in range(1, ORDER):
                counter = self.tables[k - 1].get(tuple(seq[i - k:i]))
                if counter:
                    total = self._total(k, tuple(seq[i - k:i]))
                    lam = total / (total + len(counter))
                    p = lam * counter.get(w, 0) / total + (1 - lam) * p
            logp += math.log(p)
        return math.exp(-logp / (len(seq) - ORDER + 1))


def counter_metrics(docs: list[list[str]], reference: list[list[str]]) -> dict:
    tokens = [t for d in docs for t in d]
    counts = Counter(tokens)
    out = {"vocab_size": len(counts), "ttr": len(counts) / len(tokens)}
    for n in (1, 2, 3):
        grams = [tuple(d[i:i + n]) for d in docs for i in range(len(d) - n + 1)]
        out[f"distinct_{n}"] = len(set(grams)) / max(len(grams), 1)
    total = len(tokens)
    out["entropy"] = -sum(c / total * math.log2(c / total) for c in counts.values())
    ref = Counter(t for d in reference for t in d)
    ref_total = sum(ref.values())
    out["tail_mass"] = sum(c for w, c in counts.items() if ref.get(w, 0) <= 2) / total
    js = 0.0
    for w in set(counts) | set(ref):
        p, q = counts.get(w, 0) / total, ref.get(w, 0) / ref_total
        m = (p + q) / 2
        js += (0.5 * p * math.log2(p / m) if p else 0) + (0.5 * q * math.log2(q / m) if q else 0)
    out["js"] = js
    return out


def pairwise_self_bleu(docs: list[list[str]]) -> float:
    grams = [[Counter(tuple(d[i:i + n]) for i in range(len(d) - n + 1)) for n in range(1, 5)] for d in docs]
    scores = []
    for i, d in enumerate(docs):
        if len(d) < 4:
            continue
        log_p = 0.0
        for n in range(4):
            ref_max: Counter = Counter()
            for j in range(len(docs)):
                if j != i:
                    ref_max |= grams[j][n]
            clipped = sum(min(c, ref_max[g]) for g, c in grams[i][n].items())
            log_p += math.log((clipped or 0.1) / max(len(d) - n, 1)) / 4
        others = [len(docs[j]) for j in range(len(docs)) if j != i]
        closest = min(others, key=lambda r: (abs(r - len(d)), r))
        bp = 1.0 if len(d) > closest else math.exp(1 - closest / len(d))
        scores.append(bp * math.exp(log_p))
    return statistics.mean(scores)


# ------------------------------------------------------------------------ cases (one fresh process each)


def _bleu_sample(texts):
    return texts.sample(STAGE_BLEU_DOCS, seed=0) if len(texts) > STAGE_BLEU_DOCS else texts


def case_fit(scale: str, ours: bool, repeats: int):
    texts = _corpus(scale)
    if ours:
        from stages.synthetic import NGramLM
        from stages.text import token_table as tokenize

        tokens = len(tokenize(texts))
        return tokens, _timed(lambda: NGramLM(order=ORDER).fit(texts), repeats)
    texts = texts.to_list()
    return sum(map(len, _tokens(texts))), _timed(lambda: DictNGram().fit(_tokens(texts)), repeats)


def case_sample(scale: str, ours: bool, repeats: int):
    import numpy as np

    texts = _corpus(scale)
    n = SAMPLE_DOCS[scale]
    produced = []
    if ours:
        from stages.synthetic import NGramLM
        from stages.text import token_table as tokenize

        model = NGramLM(order=ORDER).fit(texts)
        times = _timed(lambda: produced.append(len(tokenize(model.sample(n, np.random.default_rng(0),
                                                                            max_tokens=MAX_TOKENS)))), repeats)
    else:
        model = DictNGram().fit(_tokens(texts))
        times = _timed(lambda: produced.append(sum(map(len, model.sample(n, seed=0)))), repeats)
    return produced[0], times


def case_metrics_counts(scale: str, ours: bool, repeats: int):
    import polars as pl

    texts = _corpus(scale)
    if ours:
        from stages.metrics import CorpusMetrics
        from stages.text import token_table as tokenize

        stage = CorpusMetrics(self_bleu_sample=0, perplexity_order=0, embedding_backend="none")
        df = pl.DataFrame({"text": texts})
        return len(tokenize(texts)), _timed(lambda: stage.apply(data=df, reference=df), repeats)
    texts = texts.to_list()

    def run():
        docs = _tokens(texts)
        counter_metrics(docs, docs)

    return sum(map(len, _tokens(texts))), _timed(run, repeats)


def case_self_bleu(scale: str, ours: bool, repeats: int):
    texts = _paragraphs(BLEU_DOCS[scale])
    if ours:
        import numpy as np

        from stages.metrics import self_bleu
        from stages.text import token_ids
        from stages.text import token_table as tokenize

        def run():
            toks = tokenize(texts)
            self_bleu(token_ids(toks["token"])[0], toks["doc"].to_numpy().astype(np.int64))

        return len(texts), _timed(run, repeats)
    texts = texts.to_list()
    return len(texts), _timed(lambda: pairwise_self_bleu(_tokens(texts)), repeats)


def case_metrics_stage(scale: str, ours: bool, repeats: int):
    import polars as pl

    texts = _corpus(scale)
    if ours:
        from stages.metrics import CorpusMetrics
        from stages.text import token_table as tokenize

        stage = CorpusMetrics(self_bleu_sample=STAGE_BLEU_DOCS, perplexity_order=ORDER, embedding_backend="none")
        df = pl.DataFrame({"text": texts})
        return len(tokenize(texts)), _timed(lambda: stage.apply(data=df, reference=df), repeats)
    sample = _bleu_sample(texts).to_list()
    texts = texts.to_list()

    def run():
        docs = _tokens(texts)
        counter_metrics(docs, docs)
        model = DictNGram().fit(docs)
        [model.perplexity(d) for d in docs]
        pairwise_self_bleu(_tokens(sample))

    return sum(map(len, _tokens(texts))), _timed(run, repeats)


CASES = [
    ("ngram_fit", case_fit, "tokens/s", "dict-of-Counters Witten-Bell trigram counting (pure Python)"),
    ("ngram_sample", case_sample, "tokens/s", "token-by-token Python sampler with cached cumulative weights"),
    ("corpus_metrics_counts", case_metrics_counts, "tokens/s", "collections.Counter count metrics"),
    ("self_bleu_pydoc_paragraphs", case_self_bleu, "docs/s", "pairwise sentence BLEU-4 in Python (quadratic)"),
    ("corpus_metrics_stage", case_metrics_stage, "tokens/s",
     "Counter metrics + dict-model perplexity + pairwise self-BLEU"),
]


def run(scale: str = "full") -> list[dict]:
    repeats = 3
    baseline_repeats = 3 if scale == "quick" else 1
    rows = []
    for name, fn, metric, baseline in CASES:
        corpus = (f"{BLEU_DOCS[scale]} pydoc paragraphs" if fn is case_self_bleu
                  else f"stdlib files={FILES[scale] or 'all'}")
        _, ours_rss, (units, ours_times) = in_fresh_process(fn, scale, True, repeats)
        _, base_rss, (base_units, base_times) = in_fresh_process(fn, scale, False, baseline_repeats)
        ours_rate = units / statistics.median(ours_times)
        base_rate = base_units / statistics.median(base_times)
        ours_cpu, base_cpu = statistics.median(ours_times.cpu), statistics.median(base_times.cpu)
        rows.append({
            "benchmark": "synthetic", "case": name, "metric": metric, "value": round(ours_rate, 1),
            "baseline": baseline, "baseline_value": round(base_rate, 1), "ratio": round(ours_rate / base_rate, 2),
            "ratio_meaning": "ours/baseline throughput", "peak_rss_mb": round(ours_rss, 1),
            "baseline_peak_rss_mb": round(base_rss, 1),
            "notes": f"scale={scale}, {units:,} {metric.split('/')[0]} per run, median of {len(ours_times)} "
                     f"(baseline {len(base_times)}), {corpus}; spread ours {min(ours_times):.3f}-{max(ours_times):.3f} s; "
                     f"CPU s (all threads) ours {ours_cpu:.3f} / baseline {base_cpu:.3f} "
                     f"(CPU ratio {(units / ours_cpu) / (base_units / base_cpu):.2f}); load {os.getloadavg()[0]:.1f}",
        })
    return rows


if __name__ == "__main__":
    print_rows(run(sys.argv[1] if len(sys.argv) > 1 else "full"))
