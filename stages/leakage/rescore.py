"""Two-stage paraphrase evidence: cheap candidates for every test item, precise re-scoring of those only.

Embedding every training chunk with a contextual model is what makes semantic leakage checks slow on
CPU, and a static table alone barely separates a rephrased exam question from a clean one of the same
subject. So this kind splits the work (as retrieval systems do):

1. candidates, while the training corpus streams past: each test variant's static-table vector
   against the batch's chunks (the same table the `semantic` kind uses), the `candidates` best kept
   per variant;
2. re-scoring, once, of the kept (variant, chunk) pairs only, with MiniLM: the cosine of the whole
   texts and a BERTScore-style F1 (greedy alignment of MiniLM token embeddings); the score is their mean;
3. calibration against a null of this test set: each item's best score against a training document
   other than its best one, s2 (what the nearest unrelated-but-same-topic text scores). The operating
   point is the `null_quantile` of that distribution (and at least `min_score`), reported in the
   findings, the stats and the report, so no global constant has to fit every domain. The item's
   margin s1 - s2 (best document minus second best) is reported beside it as a diagnostic: a rule on
   it (against a null of second-to-third gaps) was tried and measured to flag almost nothing on real
   rephrasings (see bench/results.md), so it does not enter the verdict.

Eval-aware variants (`LeakageAudit(fields=...)`, see `variants.py`) give each item several texts
(question alone, question + answer, full prompt); the item's score is its best variant's. Items of
fewer than `SHORT_ITEM_WORDS` words are judged against a stricter point (the null's maximum), since a
one-line question matches many texts by chance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from stages.leakage.evidence import Evidence, Resolved, Score, TestSide, TrainBatch, register_evidence
from stages.text import token_chunks

SHORT_ITEM_WORDS = 12
TEXT_CHARS = 2000  # re-scoring sees at most this much of a variant (MiniLM reads 256 word pieces anyway)


class Candidates:
    """The best `k` training chunks per test variant by static-table cosine, kept while streaming."""

    def __init__(self, variant_texts: list[str], k: int, size: int, stride: int, model: str | None):
        self.k, self.size, self.stride, self.model = k, size, stride, model
        n = len(variant_texts)
        self.vectors = self._embed(variant_texts) if n else np.zeros((0, 1), np.float32)
        self.sim = np.full((n, k), -np.inf, np.float32)
        self.doc = np.full((n, k), -1, np.int64)
        self.start = np.zeros((n, k), np.int64)
        self.text = np.full((n, k), "", object)
        self.train_chunks = 0

    def _embed(self, texts: list[str]) -> np.ndarray:
        from stages.embedding import encode_texts

        return encode_texts(texts, backend="static", model=self.model, normalize=True)

    def add(self, batch: TrainBatch) -> None:
        doc, starts, _, texts = token_chunks(batch.tokens, self.size, self.stride)
        if not texts or not self.sim.shape[0]:
            return
        self.train_chunks += len(texts)
        sims = self.vectors @ self._embed(texts).T
        kk = min(self.k, len(texts))
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        within = starts - batch.tokens.offsets[:-1][doc]
        self.keep(np.take_along_axis(sims, top, 1), doc[top] + batch.base, within[top], np.asarray(texts, object)[top])

    def keep(self, sim, doc, start, text) -> None:
        """Merge new candidates into the best k kept (ties: earlier training row first)."""
        all_sim = np.concatenate([self.sim, sim], 1)
        all_doc = np.concatenate([self.doc, doc], 1)
        order = np.lexsort((all_doc, -all_sim), axis=1)[:, : self.k]
        take = np.take_along_axis
        self.sim, self.doc = take(all_sim, order, 1), take(all_doc, order, 1)
        self.start = take(np.concatenate([self.start, start], 1), order, 1)
        self.text = take(np.concatenate([self.text, text], 1), order, 1)


def rescore(pairs_a: list[str], pairs_b: list[str], model: str | None, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(cosine, BERTScore-style F1) of each pair (a[i], b[i]) under MiniLM; each distinct text embedded once."""
    from stages.embedding import load_sentence_transformer

    st = load_sentence_transformer(model)
    unique = list(dict.fromkeys(pairs_a + pairs_b))
    out = st.encode([u[:TEXT_CHARS] for u in unique], output_value=None, batch_size=batch_size,
                    show_progress_bar=False)
    sentence, tokens = {}, {}
    for text, features in zip(unique, out):
        v = features["sentence_embedding"].float().cpu().numpy()
        sentence[text] = v / max(float(np.linalg.norm(v)), 1e-12)
        length = int(features["attention_mask"].sum())
        t = features["token_embeddings"][1 : max(length - 1, 2)].float().cpu().numpy()  # without [CLS]/[SEP]
        tokens[text] = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    cos = np.array([float(sentence[a] @ sentence[b]) for a, b in zip(pairs_a, pairs_b)], np.float64)
    f1 = np.empty(len(pairs_a), np.float64)
    for i, (a, b) in enumerate(zip(pairs_a, pairs_b)):
        sim = tokens[a] @ tokens[b].T
        recall, precision = float(sim.max(1).mean()), float(sim.max(0).mean())
        f1[i] = 2 * recall * precision / max(recall + precision, 1e-12)
    return cos, f1


@register_evidence
class ParaphraseEvidence(Evidence):
    kind = "paraphrase"
    order = 3
    columns = {"paraphrase_score": pl.Float64, "paraphrase_cosine": pl.Float64, "paraphrase_bertscore": pl.Float64,
               "paraphrase_null": pl.Float64, "paraphrase_threshold": pl.Float64, "paraphrase_margin": pl.Float64,
               "paraphrase_variant": pl.String}
    scores = (Score("paraphrase_score", "paraphrase score (MiniLM cosine + BERTScore F1) / 2", "paraphrase"),
              Score("paraphrase_margin", "paraphrase margin (best document - second best)", "margin"))
    sort_column = "paraphrase_score"

    def __init__(self, audit: Any, test: TestSide, shared: dict[str, Any]):
        super().__init__(audit, test, shared)
        from stages.leakage.variants import item_variants

        self.variant_item, self.variant_name, texts = item_variants(audit, test, shared)
        self.variant_texts = texts
        stride = audit.chunk_stride or max(audit.chunk_tokens // 2, 1)
        self.candidates = Candidates(texts, audit.candidates, audit.chunk_tokens, stride, audit.model)
        self.threshold: float | None = None
        self.strict: float | None = None
        self.null_stats: dict[str, float] = {}

    @classmethod
    def settings(cls, audit: Any) -> list[tuple[str, Any]]:
        return [("candidates", audit.candidates), ("null_quantile", audit.null_quantile),
                ("min_score", audit.paraphrase_min_score), ("fields", audit.fields)]

    @classmethod
    def thresholds(cls, audit: Any, findings: pl.DataFrame) -> dict[str, list[float]]:
        if "paraphrase_threshold" not in findings.columns:
            return {}
        return {"paraphrase_score": sorted(findings["paraphrase_threshold"].drop_nulls().unique().to_list())}

    def add_batch(self, batch: TrainBatch) -> None:
        self.candidates.add(batch)

    def merge(self, other: Evidence) -> None:
        assert isinstance(other, ParaphraseEvidence)
        c = other.candidates
        self.candidates.keep(c.sim, c.doc, c.start, c.text)
        self.candidates.train_chunks += c.train_chunks

    def candidate_docs(self) -> np.ndarray:
        c = self.candidates
        return np.unique(c.doc[(c.doc >= 0) & np.isfinite(c.sim)])

    def _pairs(self) -> pl.DataFrame:
        c = self.candidates
        v, j = np.nonzero(c.doc >= 0)
        return pl.DataFrame({"variant": v.astype(np.int64), "item": self.variant_item[v], "doc": c.doc[v, j],
                             "train_tok_start": c.start[v, j], "chunk": c.text[v, j].tolist()})

    def resolve(self) -> Resolved:
        pairs = self._pairs()
        texts = [self.variant_texts[v] for v in pairs["variant"].to_list()]
        cos, f1 = rescore(texts, pairs["chunk"].to_list(), self.audit.model, self.audit.embed_batch_size)
        pairs = pairs.with_columns(cosine=cos, bertscore=f1, score=(cos + f1) / 2,
                                   variant_name=pl.Series([self.variant_name[v] for v in pairs["variant"]], dtype=pl.String))
        ranked = pairs.sort(["item", "score", "doc"], descending=[False, True, False])
        best = ranked.unique("item", keep="first", maintain_order=True)
        # Per item, the best score of each document, ranked: s1 (= best) and s2 (the null).
        by_doc = (ranked.group_by(["item", "doc"]).agg(pl.col("score").max()).sort(["item", "score", "doc"],
                  descending=[False, True, False]).group_by("item", maintain_order=True)
                  .agg(pl.col("score").get(1, null_on_oob=True).alias("null")))
        self._calibrate(by_doc)
        words = self.test.tokens.counts
        short = pl.col("item").map_elements(lambda i: int(words[i]), pl.Int64) < SHORT_ITEM_WORDS
        per_item = best.join(by_doc, on="item", how="left").select(
            "item", paraphrase_score="score", paraphrase_cosine="cosine", paraphrase_bertscore="bertscore",
            paraphrase_null="null", paraphrase_variant="variant_name",
            paraphrase_margin=pl.col("score") - pl.col("null").fill_null(self.audit.paraphrase_min_score),
        ).with_columns(paraphrase_threshold=pl.when(short).then(self.strict).otherwise(self.threshold))
        lengths = pl.Series(words.astype(np.int64))
        spans = best.select("item", "doc", "train_tok_start").with_columns(
            span_tokens=pl.col("item").map_elements(lambda i: int(lengths[i]), pl.Int64), test_tok_start=pl.lit(0, pl.Int64))
        flagged = per_item.filter(self._flag()).select("item")
        matches = best.join(flagged, on="item").join(spans.select("item", "span_tokens", "test_tok_start"), on="item")
        matches = matches.with_columns(kind=pl.lit(self.kind))
        return Resolved(per_item, matches=matches, best=spans)

    def _calibrate(self, by_doc: pl.DataFrame) -> None:
        floor = self.audit.paraphrase_min_score
        null = by_doc["null"].drop_nulls().to_numpy()
        if null.size == 0:
            self.threshold = self.strict = max(floor, 1.0)
            return
        self.threshold = max(floor, float(np.quantile(null, self.audit.null_quantile)))
        self.strict = max(self.threshold, float(null.max()))
        self.null_stats = {"items": int(null.size), "median": round(float(np.median(null)), 4),
                           "p90": round(float(np.quantile(null, 0.9)), 4), "max": round(float(null.max()), 4),
                           "threshold": round(self.threshold, 4), "short_item_threshold": round(self.strict, 4)}

    def _flag(self) -> pl.Expr:
        return pl.col("paraphrase_score").fill_null(0.0) >= pl.col("paraphrase_threshold").fill_null(2.0)

    def verdict(self) -> tuple[pl.Expr, pl.Expr]:
        hit = self._flag()
        return hit, hit

    def stats(self) -> dict[str, Any]:
        return {"paraphrase_candidate_chunks": self.candidates.train_chunks,
                "paraphrase_pairs_rescored": int((self.candidates.doc >= 0).sum()), "paraphrase_null": self.null_stats}
