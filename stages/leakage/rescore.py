"""Two-stage paraphrase evidence: cheap candidates for every test item, precise re-scoring of those only.

Embedding every training chunk with a contextual model is what makes semantic leakage checks slow on
CPU, and a static table alone barely separates a rephrased exam question from a clean one of the same
subject. So this kind splits the work (as retrieval systems do):

1. candidates, while the training corpus streams past, from two generators that miss different leaks:
   each test variant's vector against the batch's chunk vectors (the `candidates` best kept per
   variant) and BM25 over the same chunks' words (`lexical.py`, half as many kept). The chunk vectors
   are the chunk pass's own (`ChunkNeighbours.batch_chunks`): with the chunk or semantic kind on, the
   corpus is embedded once, whatever kinds read it; alone, this kind embeds with the static table;
2. re-scoring, once, of the kept (variant, document) pairs only (a document's best-ranked chunk), with
   MiniLM: the cosine of the whole texts and a BERTScore-style F1 (greedy alignment of MiniLM token embeddings); the score is their mean;
3. ownership: a training passage is the leak of at most the one test item that matches it best (same
   document, chunks within the longer item's length). An item is scored, and its null taken, over the
   passages it owns; `paraphrase_owner` names the item that took its best match. Without this rule the
   clean items of a subject score their leaked siblings' rephrasings almost as high as the siblings do, and
   those were most of the false positives on same-subject controls (bench/results.md);
4. calibration against a null of this test set: each item's best score against a training passage of its
   own other than its best one, s2 (what the nearest unrelated-but-same-topic text scores). The operating
   point is the `null_quantile` of that distribution (and at least `min_score`, 0.6: a test set far from
   the corpus has every item's best score just above its null, the maximum of many weak matches above the
   second; the floor keeps such a set clean), reported in the findings, the stats and the report, so no
   global constant has to fit every domain. The item's
   margin s1 - s2 (best passage minus second best) is reported beside it as a diagnostic: rules on it
   (against a null of second-to-third gaps) were measured to cost more recall than they save false
   positives, before and after the ownership rule (see bench/results.md), so it does not enter the verdict.

Eval-aware variants (`LeakageAudit(fields=...)`, see `variants.py`) give each item several texts
(question alone, question + answer, full prompt); the item's score is its best variant's. Items of
fewer than `SHORT_ITEM_WORDS` words are judged against a stricter point (the null's maximum), since a
one-line question matches many texts by chance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from pipeline.arrays import unique_sorted
from stages._vectors import unit_rows
from stages.leakage import evidence as protocol
from stages.leakage.chunks import (
    BatchChunks,
    ChunkNeighbours,
    IndexedNeighbours,
    embed_chunks,
    static_windows,
)
from stages.leakage.evidence import Evidence, Resolved, Score, TestSide, TrainBatch, register_evidence
from stages.leakage.lexical import bm25_top, bm25_weights, query_terms
from stages.leakage.spans import item_ids
from stages.text import token_windows, tokenize

SHORT_ITEM_WORDS = 12
TEXT_CHARS = 2000  # re-scoring sees at most this much of a variant (MiniLM reads 256 word pieces anyway)
DENSE_BLOCK = 16384  # training chunks per cosine block (variants x block floats at once)


class StaticChunks:
    """Training chunks embedded with the static table: the candidates' own source when no chunk pass runs."""

    def __init__(self, size: int, stride: int, model: str | None):
        self.size, self.stride, self.model = size, stride, model

    def _embed(self, texts: list[str]) -> np.ndarray:
        from stages.embedding import encode_texts

        return encode_texts(texts, backend="static", model=self.model, normalize=True)

    def batch_chunks(self, batch: TrainBatch) -> BatchChunks:
        return embed_chunks(batch, self.size, self.stride, self._embed, static_windows(self.model))


class TopK:
    """The best `k` (score, training chunk) per test variant, merged batch by batch (ties: earlier row first)."""

    def __init__(self, n: int, k: int):
        self.k = k
        self.sim = np.full((n, k), -np.inf, np.float32)
        self.doc = np.full((n, k), -1, np.int64)
        self.start = np.zeros((n, k), np.int64)
        self.text = np.full((n, k), "", object)

    def keep(self, sim, doc, start, text) -> None:
        all_sim = np.concatenate([self.sim, sim], 1)
        all_doc = np.concatenate([self.doc, doc], 1)
        order = np.lexsort((all_doc, -all_sim), axis=1)[:, : self.k]
        take = np.take_along_axis
        self.sim, self.doc = take(all_sim, order, 1), take(all_doc, order, 1)
        self.start = take(np.concatenate([self.start, start], 1), order, 1)
        self.text = take(np.concatenate([self.text, text], 1), order, 1)

    def keep_top(self, scores: np.ndarray, top: np.ndarray, chunks: BatchChunks, within: np.ndarray, base: int):
        """Keep chunks `top` (per variant, indices into the batch's chunks) scored `scores`."""
        self.keep(scores, chunks.doc[top] + base, within[top], chunks.texts.take(top))


@dataclass
class CandidateState:
    """What the candidate generators keep over the training batches: a partition's partial state (the test side
    stays in `Candidates`, so the states that travel to the driver do not carry it)."""

    dense: TopK
    lexical: TopK
    train_chunks: int = 0

    def merge(self, other: CandidateState) -> None:
        for mine, theirs in ((self.dense, other.dense), (self.lexical, other.lexical)):
            mine.keep(theirs.sim, theirs.doc, theirs.start, theirs.text)
        self.train_chunks += other.train_chunks

    def docs(self) -> np.ndarray:
        kept = [t.doc[(t.doc >= 0) & np.isfinite(t.sim)] for t in (self.dense, self.lexical)]
        return unique_sorted(np.concatenate(kept))

    def pairs(self) -> pl.DataFrame:
        """Per variant, one row per training document either generator kept: its best-ranked chunk (the
        embedding ranks first). Overlapping chunks of one document are near copies of each other: re-scoring
        each would cost MiniLM time and add nothing the null (best score of another document) uses."""
        frames = []
        for top in (self.dense, self.lexical):
            v, j = np.nonzero(top.doc >= 0)
            frames.append(pl.DataFrame({"variant": v.astype(np.int64), "doc": top.doc[v, j],
                                        "train_tok_start": top.start[v, j], "chunk": top.text[v, j].tolist()},
                                       schema={"variant": pl.Int64, "doc": pl.Int64, "train_tok_start": pl.Int64,
                                               "chunk": pl.String}))
        return pl.concat(frames).unique(["variant", "doc"], keep="first", maintain_order=True)


class Candidates:
    """Per test variant, the training chunks worth re-scoring: the `k` best by embedding cosine (the chunk
    pass's vectors when it runs: nothing is embedded twice) and the `lexical_k` best by BM25 (`lexical.py`),
    weighted by the IDF of `sample` (training texts, `sample.py`) cut into chunks as the stream cuts them.
    The test side of the generators; what they keep is a `CandidateState`."""

    def __init__(self, variant_texts: list[str], k: int, lexical_k: int, sample: pl.Series, size: int, stride: int):
        self.variant_texts, self.k, self.lexical_k = variant_texts, k, lexical_k
        self.vectors: np.ndarray | None = None  # embedded by the chunk source's encoder, at the first batch
        tokens = tokenize(sample)
        _, starts, lengths = token_windows(tokens, size, stride)
        self.bm25 = bm25_weights(query_terms(tokenize(pl.Series(variant_texts, dtype=pl.String))), tokens.hashes,
                                 starts, lengths)

    def empty(self) -> CandidateState:
        n = len(self.variant_texts)
        return CandidateState(TopK(n, self.k), TopK(n, self.lexical_k))

    def add(self, state: CandidateState, batch: TrainBatch, chunks: BatchChunks, embed) -> None:
        n = len(self.variant_texts)
        if not len(chunks.texts) or not n:
            return
        if self.vectors is None:
            self.vectors = embed(self.variant_texts)
        state.train_chunks += len(chunks.texts)
        within = chunks.starts - batch.tokens.offsets[:-1][chunks.doc]
        kk = min(state.dense.k, len(chunks.texts))
        for lo in range(0, len(chunks.texts), DENSE_BLOCK):
            sims = self.vectors @ chunks.vectors[lo : lo + DENSE_BLOCK].T
            top = np.argpartition(-sims, min(kk, sims.shape[1]) - 1, axis=1)[:, :kk]
            state.dense.keep_top(np.take_along_axis(sims, top, 1), top + lo, chunks, within, batch.base)
        if state.lexical.k:
            scores, top = bm25_top(self.bm25, batch.tokens.hashes, chunks.starts, chunks.lengths, state.lexical.k)
            state.lexical.keep_top(scores, top, chunks, within, batch.base)


def rescore_precision(requested: str) -> str:
    """The precision MiniLM re-scores in: `requested`, or for "auto" bfloat16 where the CPU computes it natively
    (AVX512-BF16 or AMX) and float32 elsewhere (a GPU, or a CPU that would only emulate bfloat16).

    Measured on the 31.5 MB speed case (843 texts, 2 cores, AVX512-BF16): 1.8x faster than float32, with
    paraphrase scores within 0.0014 of float32's (median 0.0002) and sentence vectors at cosine >= 0.99996
    (bench/results.md). "float32" gives scores that do not depend on the CPU's bfloat16 support; the
    precision used is in the stats.
    """
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available() or not torch.backends.mkldnn.is_available():
        return "float32"
    return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"


def _resolved(requested: str, used: str | None) -> str:
    """The precision as the report shows it: what was used, and that "auto" chose it."""
    if used is None or used == requested:
        return requested
    return f"{used} ({requested})"


def rescore(pairs_a: list[str], pairs_b: list[str], model: str | None, batch_size: int,
            precision: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """(cosine, BERTScore-style F1) of each pair (a[i], b[i]) under MiniLM; each distinct text embedded once.
    `precision`: "float32" or "bfloat16" (autocast: matrix products in bfloat16, the scores in float32)."""
    import torch

    from stages.embedding import load_sentence_transformer

    st = load_sentence_transformer(model)
    unique = list(dict.fromkeys(pairs_a + pairs_b))
    with torch.autocast(st.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        out = st.encode([u[:TEXT_CHARS] for u in unique], output_value=None, batch_size=batch_size,
                        show_progress_bar=False)
    sentence, tokens = {}, {}
    for text, features in zip(unique, out):
        v = features["sentence_embedding"].float().cpu().numpy()
        sentence[text] = unit_rows(v[None])[0]
        length = int(features["attention_mask"].sum())
        t = features["token_embeddings"][1 : max(length - 1, 2)].float().cpu().numpy()  # without [CLS]/[SEP]
        tokens[text] = unit_rows(t)
    cos = np.array([float(sentence[a] @ sentence[b]) for a, b in zip(pairs_a, pairs_b)], np.float64)
    f1 = np.empty(len(pairs_a), np.float64)
    for i, (a, b) in enumerate(zip(pairs_a, pairs_b)):
        sim = tokens[a] @ tokens[b].T
        recall, precision = float(sim.max(1).mean()), float(sim.max(0).mean())
        f1[i] = 2 * recall * precision / max(recall + precision, 1e-12)
    return cos, f1


def passage_rivals(item: np.ndarray, doc: np.ndarray, start: np.ndarray, score: np.ndarray,
                   reach: np.ndarray) -> np.ndarray:
    """Per row (an item's best chunk of a document), the item that matches the same passage better, or -1.

    The same passage: the same document and chunk starts closer than either item's `reach` (its length in
    words, at least a chunk). Better: a higher score, or the same score and a lower item. Of several, the
    best (highest score, then lowest item). Rows are taken per document in that order, so the rival of a
    row is the first earlier row within reach: memory stays linear in the rows, even when thousands of items
    share one popular document (a pairwise join would not).
    """
    n = item.size
    rival = np.full(n, -1, np.int64)
    if n == 0:
        return rival
    order = np.lexsort((item, -score, doc))
    item_o, doc_o, start_o, reach_o = item[order], doc[order], start[order], reach[order]
    cuts = np.flatnonzero(np.diff(doc_o)) + 1
    for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [n]])):
        for r in range(lo + 1, hi):
            near = np.abs(start_o[lo:r] - start_o[r]) < np.maximum(reach_o[lo:r], reach_o[r])
            near &= item_o[lo:r] != item_o[r]
            first = int(np.argmax(near))
            if near[first]:
                rival[order[r]] = item_o[lo + first]
    return rival


def lexical_candidates(candidates: int) -> int:
    """BM25 candidates kept per variant beside the `candidates` embedding ones (half as many)."""
    return max(candidates // 2, 1)


@register_evidence
class ParaphraseEvidence(Evidence):
    kind = "paraphrase"
    order = 3
    columns = {"paraphrase_score": pl.Float64, "paraphrase_cosine": pl.Float64, "paraphrase_bertscore": pl.Float64,
               "paraphrase_null": pl.Float64, "paraphrase_threshold": pl.Float64, "paraphrase_margin": pl.Float64,
               "paraphrase_variant": pl.String, "paraphrase_owner": pl.String}
    scores = (Score("paraphrase_score", "paraphrase score (MiniLM cosine + BERTScore F1) / 2", "paraphrase"),
              Score("paraphrase_margin", "paraphrase margin (best document - second best)", "margin"))
    sort_column = "paraphrase_score"
    report_columns = ("paraphrase_owner",)
    partial_attributes = ("found",)
    reads_train_sample = True

    def __init__(self, audit: Any, test: TestSide, shared: dict[str, Any]):
        super().__init__(audit, test, shared)
        from stages.leakage.variants import item_variants

        self.variant_item, self.variant_name, texts = item_variants(audit, test, shared)
        self.variant_texts = texts
        frame = shared.get("test_frame")
        self.test_ids = item_ids(frame, audit.id_column).to_list() if frame is not None else []
        a = audit
        sample = shared.get("train_sample", pl.Series("text", [], pl.String))  # none in a merge's template
        self.candidates = Candidates(texts, a.candidates, lexical_candidates(a.candidates), sample, a.chunk_tokens,
                                     a.chunk_step)
        self.found = self.candidates.empty()
        self._source: ChunkNeighbours | StaticChunks | None = None
        self.pairs_rescored = 0
        self.precision: str | None = None
        self.threshold: float | None = None
        self.strict: float | None = None
        self.null_stats: dict[str, float] = {}

    @classmethod
    def settings(cls, audit: Any, stats: dict[str, Any]) -> list[tuple[str, Any]]:
        return [("candidates", audit.candidates), ("null_quantile", audit.null_quantile),
                ("min_score", audit.paraphrase_min_score), ("fields", audit.fields),
                ("precision", _resolved(audit.paraphrase_precision, stats.get("paraphrase_precision")))]

    @classmethod
    def thresholds(cls, audit: Any, findings: pl.DataFrame) -> dict[str, list[float]]:
        if "paraphrase_threshold" not in findings.columns:
            return {}
        return {"paraphrase_score": sorted(findings["paraphrase_threshold"].drop_nulls().unique().to_list())}

    def chunk_source(self) -> ChunkNeighbours | StaticChunks:
        """The chunk pass's neighbour search when it streams this corpus (its batch vectors are reused), else
        a static-table chunker of our own (no chunk pass, or a prebuilt index that embeds no training chunk)."""
        if self._source is None:
            shared = self.shared.get("chunk_neighbours")
            if isinstance(shared, ChunkNeighbours) and not isinstance(shared, IndexedNeighbours):
                self._source = shared
            else:
                a = self.audit
                self._source = StaticChunks(a.chunk_tokens, a.chunk_step, a.model)
        return self._source

    def add_batch(self, batch: TrainBatch) -> None:
        source = self.chunk_source()
        self.candidates.add(self.found, batch, source.batch_chunks(batch), source._embed)

    def merge(self, other: Evidence) -> None:
        assert isinstance(other, ParaphraseEvidence)
        self.found.merge(other.found)

    def candidate_docs(self) -> np.ndarray:
        return self.found.docs()

    def resolve(self) -> Resolved:
        pairs = self.found.pairs()
        pairs = pairs.with_columns(item=pl.Series(self.variant_item[pairs["variant"].to_numpy()], dtype=pl.Int64))
        self.pairs_rescored = pairs.height
        texts = [self.variant_texts[v] for v in pairs["variant"].to_list()]
        self.precision = rescore_precision(self.audit.paraphrase_precision)
        cos, f1 = rescore(texts, pairs["chunk"].to_list(), self.audit.model, self.audit.embed_batch_size, self.precision)
        pairs = pairs.with_columns(cosine=cos, bertscore=f1, score=(cos + f1) / 2,
                                   variant_name=pl.Series([self.variant_name[v] for v in pairs["variant"]], dtype=pl.String))
        ranked = pairs.sort(["item", "score", "doc"], descending=[False, True, False])
        # Per item, its best chunk of each document it kept; a passage another item matches better is not its own.
        at_doc = ranked.unique(["item", "doc"], keep="first", maintain_order=True)
        at_doc = at_doc.join(self._rivals(at_doc), on=["item", "doc"], how="left")
        owned = at_doc.filter(pl.col("rival").is_null())
        best = owned.unique("item", keep="first", maintain_order=True)
        # s1 (= best) and s2 (the null: the next passage of its own) over the passages each item owns.
        by_doc = owned.group_by("item", maintain_order=True).agg(pl.col("score").get(1, null_on_oob=True).alias("null"))
        self._calibrate(by_doc)
        words = self.test.tokens.counts
        short = pl.col("item").map_elements(lambda i: int(words[i]), pl.Int64) < SHORT_ITEM_WORDS
        ids = self.test_ids
        outranked = at_doc.unique("item", keep="first", maintain_order=True).filter(pl.col("rival").is_not_null()).select(
            "item", paraphrase_owner=pl.col("rival").map_elements(lambda i: ids[i] if i < len(ids) else str(i), pl.String))
        per_item = best.join(by_doc, on="item", how="left").select(
            "item", paraphrase_score="score", paraphrase_cosine="cosine", paraphrase_bertscore="bertscore",
            paraphrase_null="null", paraphrase_variant="variant_name",
            paraphrase_margin=pl.col("score") - pl.col("null").fill_null(self.audit.paraphrase_min_score),
        ).with_columns(paraphrase_threshold=pl.when(short).then(self.strict).otherwise(self.threshold))
        per_item = per_item.join(outranked, on="item", how="full", coalesce=True)
        starts, lengths = self._variant_spans(best["variant"].to_numpy())
        # The test side is the variant's words; the training side the whole passage (chunk) it matched.
        spans = best.select("item", "doc", "train_tok_start").with_columns(
            span_tokens=pl.Series(lengths, dtype=pl.Int64), test_tok_start=pl.Series(starts, dtype=pl.Int64),
            **{protocol.TRAIN_SPAN: pl.lit(self.audit.chunk_tokens, pl.Int64)})
        flagged = per_item.filter(self._flag()).select("item")
        matches = best.join(flagged, on="item").join(spans.select("item", "span_tokens", "test_tok_start", protocol.TRAIN_SPAN),
                                                     on="item")
        matches = matches.with_columns(kind=pl.lit(self.kind))
        return Resolved(per_item, matches=matches, best=spans)

    def _variant_spans(self, variants: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first word, words) of each variant inside its item's words, so that the report shows what matched: the
        question after a reading passage, not the passage too. The variant's last run of words in the item; the
        whole item where the variant's words do not run there as they are (an answer the prompt does not hold)."""
        item = self.variant_item[variants]
        starts, lengths = np.zeros(variants.size, np.int64), self.test.tokens.counts[item].astype(np.int64)
        if variants.size == 0:
            return starts, lengths
        words = tokenize(pl.Series([self.variant_texts[v] for v in variants], dtype=pl.String))
        test_offsets, word_offsets = self.test.tokens.offsets, words.offsets
        for k in range(variants.size):
            within = self.test.tokens.hashes[test_offsets[item[k]] : test_offsets[item[k] + 1]]
            run = words.hashes[word_offsets[k] : word_offsets[k + 1]]
            at = last_run(within, run) if 0 < run.size < within.size else -1
            if at >= 0:
                starts[k], lengths[k] = at, run.size
        return starts, lengths

    def _rivals(self, at_doc: pl.DataFrame) -> pl.DataFrame:
        """Per (item, document) kept, `rival`: the test item that matches the same passage better, if any.

        A training passage is the leak of at most the one test item it matches best. Without this rule, every
        clean item of a subject whose sibling leaked scores the sibling's rephrasing almost as high as the
        sibling does (same topic, same vocabulary): that is where most false positives on same-subject
        controls came from (bench/results.md, paraphrase study). The same passage: the same document, chunks
        closer than the longer item's length (at least a chunk). An item's score and null are taken over the
        passages it owns; `paraphrase_owner` names the item that took its best match, when one did.
        """
        reach = np.maximum(self.test.tokens.counts, self.audit.chunk_tokens).astype(np.int64)
        item, doc = at_doc["item"].to_numpy(), at_doc["doc"].to_numpy()
        rival = passage_rivals(item, doc, at_doc["train_tok_start"].to_numpy(), at_doc["score"].to_numpy(),
                               reach[item] if item.size else np.empty(0, np.int64))
        return pl.DataFrame({"item": item, "doc": doc, "rival": rival},
                            schema={"item": pl.Int64, "doc": pl.Int64, "rival": pl.Int64}).filter(pl.col("rival") >= 0)

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
        return {"paraphrase_candidate_chunks": self.found.train_chunks,
                "paraphrase_pairs_rescored": self.pairs_rescored, "paraphrase_precision": self.precision,
                "paraphrase_null": self.null_stats}


def last_run(values: np.ndarray, run: np.ndarray) -> int:
    """Where the last occurrence of `run` (a non-empty array) as consecutive elements of `values` starts; -1 if none."""
    for at in np.flatnonzero(values[: values.size - run.size + 1] == run[0])[::-1]:
        if np.array_equal(values[at : at + run.size], run):
            return int(at)
    return -1
