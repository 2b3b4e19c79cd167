"""Corpus metrics for collapse studies, and the report that draws them across generations.

`corpus_metrics` measures any corpus, per group (by default per `schedule` and `generation`, the
columns the `generations` stage writes, and `seed` when it runs replicas): size, vocabulary, type-token ratio, distinct-n, unigram
entropy, tail mass and Jensen-Shannon divergence against a reference (generation 0), self-BLEU on a
sample, embedding diversity (Vendi score and mean pairwise cosine distance) on a sample, and each
document's perplexity under an n-gram model of the reference (Shumailov et al.'s histograms).
Everything but the embeddings is token-id arithmetic in polars and NumPy, so a corpus of millions
of tokens is measured in seconds.

`collapse_report` turns that table into PNG curves, perplexity histograms and a self-contained
report.html.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.params import Annotated, Field, NonNegativeInt
from pipeline.stage import Context, Stage
from stages._hashing import id_hash, mix64
from stages.synthetic import NGramLM
from stages.text import ngram_hashes, token_ids, token_table

AUTO_GROUPS = ("schedule", "seed", "generation")


# --------------------------------------------------------------------------------- metric functions


def ngram_keys(ids: np.ndarray, doc: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash of every n-gram of token ids that lies within one document, and the document it is in.

    `doc` is each token's document, contiguous and ascending (as `token_table` gives); the hash is
    the text core's n-gram hash over SplitMix64-mixed ids.
    """
    if len(ids) < n:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    counts = np.bincount(doc, minlength=int(doc.max()) + 1) if len(doc) else np.zeros(0, np.int64)
    key, ngram_doc, _ = ngram_hashes(mix64(ids.astype(np.uint64)), counts, n)
    return key, ngram_doc


def self_bleu(ids: np.ndarray, doc: np.ndarray, max_n: int = 4) -> float:
    """Mean sentence BLEU-`max_n` of each document against all the others as references.

    Clipping needs, per n-gram and hypothesis, the largest count in any *other* document; keeping
    the top two counts per n-gram gives that for every hypothesis at once, so this is linear in the
    number of n-grams instead of quadratic in documents. Zero precisions get nltk's method-1
    epsilon (0.1); documents shorter than `max_n` tokens are left out, as BLEU is undefined there.
    """
    docs, doc = np.unique(doc, return_inverse=True)
    m = len(docs)
    if m < 2:
        return float("nan")
    lengths = np.bincount(doc, minlength=m)
    log_p = np.zeros(m)
    for n in range(1, max_n + 1):
        key, d = ngram_keys(ids, doc, n)
        order = np.lexsort((d, key))
        key, d = key[order], d[order]
        new = np.ones(len(key), bool)
        new[1:] = (key[1:] != key[:-1]) | (d[1:] != d[:-1])
        first = np.nonzero(new)[0]
        count = np.diff(np.append(first, len(key))).astype(np.float64)
        pk, pd = key[first], d[first]
        # Top two counts per n-gram (and the document holding the top one).
        by = np.lexsort((-count, pk))
        pk, pd, count = pk[by], pd[by], count[by]
        grp_first = np.ones(len(pk), bool)
        grp_first[1:] = pk[1:] != pk[:-1]
        gstart = np.nonzero(grp_first)[0]
        gid = np.cumsum(grp_first) - 1
        top1, top1_doc = count[gstart], pd[gstart]
        second_pos = gstart + 1
        has_second = np.append(gstart[1:], len(pk)) > second_pos
        top2 = np.where(has_second, count[np.minimum(second_pos, len(pk) - 1)], 0.0)
        ref_max = np.where(pd == top1_doc[gid], top2[gid], top1[gid])
        clipped = np.bincount(pd, weights=np.minimum(count, ref_max), minlength=m)
        total = np.maximum(lengths - n + 1, 0).astype(np.float64)
        p = np.where(clipped > 0, clipped, 0.1) / np.maximum(total, 1)
        log_p += np.log(p) / max_n
    # Brevity penalty against the closest other length (ties go to the shorter one, as nltk).
    diff = np.abs(lengths[None, :] - lengths[:, None]).astype(np.float64)
    np.fill_diagonal(diff, np.inf)
    closest = lengths[np.argmin(diff * (1 + 1e-9 * lengths[None, :]), axis=1)]
    bp = np.where(lengths > closest, 1.0, np.exp(1 - closest / np.maximum(lengths, 1)))
    valid = lengths >= max_n
    return float(np.mean((bp * np.exp(log_p))[valid])) if valid.any() else float("nan")


def vendi_score(embeddings: np.ndarray) -> float:
    """Vendi score (Friedman & Dieng 2023) with cosine similarity: the effective number of distinct items.

    The eigenvalues of K/n equal those of X^T X / n, a dim x dim matrix, so the cost is linear in n.
    """
    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    eig = np.linalg.eigvalsh((x.T @ x).astype(np.float64) / len(x))
    eig = eig[eig > 1e-12]
    return float(np.exp(-(eig * np.log(eig)).sum()))


def mean_pairwise_cosine_distance(embeddings: np.ndarray) -> float:
    """1 - mean cosine similarity over distinct pairs, from the sum vector (linear in n)."""
    n = len(embeddings)
    if n < 2:
        return float("nan")
    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    s = x.sum(axis=0, dtype=np.float64)
    return float(1 - (s @ s - n) / (n * (n - 1)))


# --------------------------------------------------------------------------------- corpus_metrics


class CorpusMetrics(Stage):
    """Diversity, tail and drift metrics of a corpus, per group (e.g. per schedule and generation).

    Tail mass is the share of tokens whose word occurs at most `rare_max_count` times in the
    reference (generation 0); it falls when a generator forgets the tails. js_divergence is the
    Jensen-Shannon divergence (bits, 0..1) of the unigram distribution from the reference's.
    duplicate_rate is the share of documents that exactly repeat an earlier one in their group, and
    near_duplicate_rate the share a `dedup_minhash` step would remove (5-word shingles, MinHash).
    distinct_n is distinct n-grams over all n-grams of the group (so distinct_1 equals the
    type-token ratio); both fall with corpus size, so compare groups of similar size. Perplexity is
    under an interpolated n-gram model fit on the reference, per document in the `perplexity` side
    output (for histograms) and as mean and median here.

    Parameters:
        text_column: column holding the text
        group_by: columns to group by (null = whichever of schedule, seed, generation exist; none = one group)
        reference_generation: with no `reference` input, rows of this generation are the reference
        rare_max_count: a word is rare (tail) if it occurs at most this often in the reference
        self_bleu_sample: documents per group sampled for self-BLEU-4 (0 = skip)
        perplexity_order: n-gram order of the reference model for perplexity (0 = skip)
        embedding_backend: none, static or sentence-transformers (via stages.embedding.encode_texts)
        embedding_model: model name or path for the embedding backend (null = its default)
        embedding_sample: documents per group embedded for the Vendi score and pairwise distance
        lowercase: fold case before counting words
        near_duplicate_threshold: MinHash Jaccard threshold of near_duplicate_rate (stages.dedup; 0 = skip)
    """

    name = "corpus_metrics"
    version = "2"
    inputs = ("data", "reference")
    optional_inputs = ("reference",)

    def __init__(
        self,
        text_column: str = "text",
        group_by: list[str] | None = None,
        reference_generation: int = 0,
        rare_max_count: NonNegativeInt = 2,
        self_bleu_sample: NonNegativeInt = 200,
        perplexity_order: NonNegativeInt = 3,
        embedding_backend: Literal["none", "static", "sentence-transformers"] = "static",
        embedding_model: str | None = None,
        embedding_sample: NonNegativeInt = 256,
        lowercase: bool = False,
        near_duplicate_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.8,
    ):
        self.text_column = text_column
        self.group_by = group_by
        self.reference_generation = reference_generation
        self.rare_max_count = rare_max_count
        self.self_bleu_sample = self_bleu_sample
        self.perplexity_order = perplexity_order
        self.embedding_backend = embedding_backend
        self.embedding_model = embedding_model
        self.embedding_sample = embedding_sample
        self.lowercase = lowercase
        self.near_duplicate_threshold = near_duplicate_threshold

    def validate(self) -> None:
        if 0 < self.self_bleu_sample < 2:
            raise ParamError("self_bleu_sample", "needs at least 2 documents (or 0 to skip)")
        if self.embedding_backend != "none" and self.embedding_sample < 2:
            raise ParamError("embedding_sample", "needs at least 2 documents to measure diversity")

    def required_columns(self):
        cols = {"data": {self.text_column: "text_column"}, "reference": {self.text_column: "text_column"}}
        for c in self.group_by or []:
            cols["data"][c] = "group_by"
        return cols

    @classmethod
    def example(cls):
        import pydoc_data.topics

        paragraphs = [p.strip() for k in sorted(pydoc_data.topics.topics)[:8]
                      for p in pydoc_data.topics.topics[k].split("\n\n") if p.strip()]
        half = len(paragraphs) // 2
        df = pl.DataFrame({"generation": [0] * half + [1] * (len(paragraphs) - half), "text": paragraphs})
        return {"self_bleu_sample": 20, "embedding_backend": "none"}, {"data": df}

    def run(self, ctx: Context, data: Dataset, reference: Dataset | None = None) -> pl.DataFrame:
        group_by = self.group_by if self.group_by is not None else [c for c in AUTO_GROUPS if c in data.columns]
        keep = [*group_by, self.text_column] + (["doc_id"] if "doc_id" in data.columns else [])
        df = data.lazy().select(keep).collect()
        ref_texts = self._reference(df, reference, group_by)
        texts = df[self.text_column].cast(pl.String).fill_null("")
        if self.lowercase:
            texts, ref_texts = texts.str.to_lowercase(), (ref_texts.str.to_lowercase() if ref_texts is not None else None)
        if group_by:
            groups = df.select(group_by).unique(maintain_order=True).sort(group_by)
            gid = df.select(group_by).join(groups.with_row_index("gid"), on=group_by, how="left",
                                           maintain_order="left", nulls_equal=True)["gid"].to_numpy()
        else:
            groups, gid = pl.DataFrame({"_all": [0]}), np.zeros(len(df), np.int64)
        gid = gid.astype(np.int64)
        out = self._lexical(texts, ref_texts, gid, len(groups))
        out["duplicate_rate"] = self._duplicate_rate(texts, gid, len(groups))
        out["near_duplicate_rate"] = self._near_duplicate_rate(texts, gid, len(groups))
        out["self_bleu"] = self._self_bleu(ctx, texts, gid, len(groups), out.pop("_tokens"))
        out["vendi_score"] = np.full(len(groups), np.nan)
        out["mean_pairwise_distance"] = np.full(len(groups), np.nan)
        if self.embedding_backend != "none":
            self._embedding_diversity(ctx, texts, gid, len(groups), out)
        self._perplexity(ctx, df, texts, ref_texts, gid, group_by, out, len(groups))

        ctx.record("groups", len(groups))
        ctx.record("reference_docs", len(ref_texts) if ref_texts is not None else 0)
        ctx.record("tokens", int(out["tokens"].sum()))
        table = pl.DataFrame({k: pl.Series(k, v) for k, v in out.items()})
        table = table.with_columns(pl.col("docs", "tokens", "vocab_size").cast(pl.Int64))
        return pl.concat([groups, table], how="horizontal") if group_by else table

    def _lexical(self, texts: pl.Series, ref_texts: pl.Series | None, gid: np.ndarray, n_groups: int) -> dict[str, Any]:
        """Counts, vocabulary, distinct-n, entropy and (against the reference) tail mass, JS divergence, coverage."""
        toks = token_table(texts)
        doc = toks["doc"].to_numpy().astype(np.int64)
        ref_toks = token_table(ref_texts) if ref_texts is not None else None
        # One id space for data and reference, so counts compare by id.
        words = pl.concat([toks["token"], ref_toks["token"]]) if ref_toks is not None else toks["token"]
        all_ids = token_ids(words)[0]
        ids, ref_ids = all_ids[: len(toks)], all_ids[len(toks):]
        vocab_size = int(all_ids.max()) + 1 if len(all_ids) else 0
        tok_gid = gid[doc]

        out: dict[str, Any] = {
            "docs": np.bincount(gid, minlength=n_groups),
            "tokens": np.bincount(tok_gid, minlength=n_groups),
        }
        out["mean_doc_tokens"] = out["tokens"] / np.maximum(out["docs"], 1)
        # Counts per (group, word) in (group, word) order: float sums then run in one fixed order.
        cell = tok_gid * max(vocab_size, 1) + ids
        if n_groups * vocab_size <= 50_000_000:
            per_cell = np.bincount(cell, minlength=n_groups * vocab_size)
            cell = np.nonzero(per_cell)[0]
            c = per_cell[cell].astype(np.float64)
        else:
            cell, c = np.unique(cell, return_counts=True)
            c = c.astype(np.float64)
        g, w = cell // max(vocab_size, 1), cell % max(vocab_size, 1)
        out["vocab_size"] = np.bincount(g, minlength=n_groups)
        total = out["tokens"].astype(np.float64)
        out["type_token_ratio"] = out["vocab_size"] / np.maximum(total, 1)
        for n in (1, 2, 3):
            key, key_doc = ngram_keys(ids, doc, n)
            kg = gid[key_doc]
            uniq = pl.DataFrame({"g": kg, "k": key}).group_by("g").agg(pl.col("k").n_unique())
            distinct = np.zeros(n_groups)
            distinct[uniq["g"].to_numpy()] = uniq["k"].to_numpy()
            out[f"distinct_{n}"] = distinct / np.maximum(np.bincount(kg, minlength=n_groups), 1)
        p = c / total[g]
        out["unigram_entropy_bits"] = -np.bincount(g, weights=p * np.log2(p), minlength=n_groups)

        if ref_toks is not None and len(ref_ids):
            ref_counts = np.bincount(ref_ids, minlength=vocab_size).astype(np.float64)
            rare = ref_counts[w] <= self.rare_max_count
            out["tail_mass"] = np.bincount(g, weights=c * rare, minlength=n_groups) / np.maximum(total, 1)
            q_all = ref_counts / ref_counts.sum()
            q = q_all[w]
            m = (p + q) / 2
            with np.errstate(divide="ignore", invalid="ignore"):
                term = 0.5 * p * np.log2(p / m) + np.where(q > 0, 0.5 * q * np.log2(q / m), 0.0)
            covered_q = np.bincount(g, weights=q, minlength=n_groups)
            js = np.bincount(g, weights=term, minlength=n_groups) + 0.5 * (1 - covered_q)
            # Float round-off leaves about 1e-14 for identical distributions; report those as 0.
            out["js_divergence"] = np.where(js < 1e-12, 0.0, np.minimum(js, 1.0))
            ref_vocab = ref_counts > 0
            seen = np.bincount(g, weights=ref_vocab[w].astype(np.float64), minlength=n_groups)
            out["reference_vocab_coverage"] = seen / max(int(ref_vocab.sum()), 1)
        else:
            for name in ("tail_mass", "js_divergence", "reference_vocab_coverage"):
                out[name] = np.full(n_groups, np.nan)

        out["_tokens"] = (ids, doc, tok_gid)
        return out

    @staticmethod
    def _duplicate_rate(texts: pl.Series, gid: np.ndarray, n_groups: int) -> np.ndarray:
        """Share of a group's documents that repeat an earlier one exactly (whitespace-normalised).

        A collapsing generator repeats itself; this is the exact-match floor of a near-duplicate rate.
        """
        norm = texts.str.strip_chars().str.replace_all(r"\s+", " ")
        per = pl.DataFrame({"g": gid, "t": norm}).group_by("g").agg(pl.len().alias("n"), pl.col("t").n_unique().alias("u"))
        rate = np.zeros(n_groups)
        rate[per["g"].to_numpy()] = 1 - per["u"].to_numpy() / per["n"].to_numpy()
        return rate

    def _near_duplicate_rate(self, texts: pl.Series, gid: np.ndarray, n_groups: int) -> np.ndarray:
        """Per group, the share of documents a `dedup_minhash` step would remove (stages.dedup's rate)."""
        rate = np.full(n_groups, np.nan)
        if self.near_duplicate_threshold > 0:
            from stages.dedup import near_duplicate_rate

            for k in range(n_groups):
                rate[k] = near_duplicate_rate(texts.filter(pl.Series(gid == k)), threshold=self.near_duplicate_threshold)
        return rate

    def _self_bleu(self, ctx: Context, texts: pl.Series, gid: np.ndarray, n_groups: int, tokens) -> np.ndarray:
        ids, doc, tok_gid = tokens
        result = np.full(n_groups, np.nan)
        if not self.self_bleu_sample:
            return result
        picked = self._content_sample(ctx, texts, gid, self.self_bleu_sample)
        sel = picked[doc]
        sel_doc, sel_gid, sel_ids = doc[sel], tok_gid[sel], ids[sel]
        for k in range(n_groups):
            mine = sel_gid == k
            result[k] = self_bleu(sel_ids[mine], sel_doc[mine])
        return result

    def _perplexity(self, ctx: Context, df: pl.DataFrame, texts: pl.Series, ref_texts: pl.Series | None,
                    gid: np.ndarray, group_by: list[str], out: dict[str, Any], n_groups: int) -> None:
        """Per-document perplexity under an n-gram model of the reference (side output), and its mean/median."""
        out["perplexity_mean"] = np.full(n_groups, np.nan)
        out["perplexity_median"] = np.full(n_groups, np.nan)
        if self.perplexity_order and ref_texts is not None:
            model = NGramLM(order=self.perplexity_order).fit(ref_texts)
            # Accumulating schedules repeat most documents across generations: score each text once.
            distinct = texts.unique(maintain_order=True)
            scored = pl.DataFrame({"text": distinct, "p": model.perplexity(distinct)})
            ppl = pl.DataFrame({"text": texts}).join(scored, on="text", how="left",
                                                     maintain_order="left")["p"].to_numpy()
            keys = [*group_by, *(["doc_id"] if "doc_id" in df.columns else [])]
            values = pl.Series("perplexity", ppl, dtype=pl.Float64)
            side = df.select(keys).with_columns(values) if keys else values.to_frame()
            per_group = pl.DataFrame({"g": gid, "p": ppl}).group_by("g").agg(
                pl.col("p").mean().alias("mean"), pl.col("p").median().alias("median"))
            out["perplexity_mean"][per_group["g"].to_numpy()] = per_group["mean"].to_numpy()
            out["perplexity_median"][per_group["g"].to_numpy()] = per_group["median"].to_numpy()
            ctx.write_side_output("perplexity", side)

    @staticmethod
    def _content_sample(ctx: Context, texts: pl.Series, gid: np.ndarray, size: int) -> np.ndarray:
        """Rows kept for the sampled metrics: per group, the `size` texts of smallest seeded hash.

        Keyed by content, not position, so a document shared by two groups (generation 0 of every
        schedule, the real data an accumulating schedule carries along) is picked in both or neither,
        and sampled metrics of identical corpora are identical.
        """
        # The project's stable hash: polars' own may change between versions, and with it the sample.
        key = id_hash(texts, ctx.seed, "metrics-sample")
        frame = pl.DataFrame({"g": gid, "h": key, "row": np.arange(len(gid))})
        rank = frame.select(pl.struct("h", "row").rank("ordinal").over("g"))
        return (rank.to_series().to_numpy() <= size)

    def _reference(self, df: pl.DataFrame, reference: Dataset | None, group_by: list[str]) -> pl.Series | None:
        if reference is not None:
            return reference.lazy().select(self.text_column).collect()[self.text_column].cast(pl.String).fill_null("")
        if "generation" not in df.columns:
            return None
        ref = df.filter(pl.col("generation") == self.reference_generation)
        if "schedule" in df.columns and len(ref):
            # Every schedule shares generation 0; one copy is the reference.
            ref = ref.filter(pl.col("schedule") == ref["schedule"].min())
        if "seed" in df.columns and len(ref):
            # Replicas of a study share generation 0 too: one copy, or rare words would count thrice.
            ref = ref.filter(pl.col("seed") == ref["seed"].min())
        if len(ref) == 0:
            raise InputDataError(
                f"no rows with generation == {self.reference_generation} to use as the reference; "
                "give a `reference` input or set reference_generation", param="reference_generation")
        return ref[self.text_column].cast(pl.String).fill_null("")

    def _embedding_diversity(self, ctx: Context, texts: pl.Series, gid: np.ndarray, n_groups: int,
                             out: dict[str, Any]) -> None:
        try:
            from stages.embedding import encode_texts
        except ImportError as exc:
            raise ParamError("embedding_backend",
                             f"needs stages.embedding.encode_texts, which is not available ({exc}); "
                             "set embedding_backend: none") from None
        picked = self._content_sample(ctx, texts, gid, self.embedding_sample)
        picks = [np.nonzero(picked & (gid == k))[0] for k in range(n_groups)]
        flat = np.concatenate(picks)
        # Generations share many documents (accumulate, keep_real): embed each distinct text once.
        unique_texts, inverse = np.unique(texts.gather(flat).to_numpy().astype(str), return_inverse=True)
        emb = encode_texts(list(unique_texts), backend=self.embedding_backend, model=self.embedding_model,
                           cache_dir=ctx.cache_dir)
        emb = np.asarray(emb, dtype=np.float32)[inverse]
        offset = 0
        for k, pick in enumerate(picks):
            x = emb[offset: offset + len(pick)]
            offset += len(pick)
            if len(x) >= 2:
                out["vendi_score"][k] = vendi_score(x)
                out["mean_pairwise_distance"][k] = mean_pairwise_cosine_distance(x)


# The report stage lives in its own module; it is re-exported here for existing imports.
from stages.collapse_report import DEFAULT_PLOT_METRICS, CollapseReport  # noqa: E402,F401
