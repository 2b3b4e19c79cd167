"""corpus_metrics' output from the merged partial state: one row per group, in the single-pass stage's order.

Float sums run in one fixed order whatever the partitioning (groups sorted by their columns, words
sorted within a group), so the figures are identical on every executor and for every partition size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from pipeline.arrays import unique_sorted
from pipeline.errors import ParamError
from pipeline.stage import Context
from stages.metrics.measures import mean_pairwise_cosine_distance, self_bleu, vendi_score
from stages.metrics.partial import GroupPart, MetricsPartial
from stages.text import token_ids, token_table


def group_table(state: MetricsPartial, group_by: list[str]) -> tuple[pl.DataFrame, list[GroupPart]]:
    """The groups in output order (sorted by their columns) and each one's merged part."""
    keys = list(state.groups)
    if not group_by:
        return pl.DataFrame({"_all": [0]}), [state.groups[()]] if keys else []
    frame = pl.DataFrame(keys, schema=state.group_schema, orient="row").with_row_index("_key")
    frame = frame.sort(group_by)
    return frame.drop("_key"), [state.groups[keys[i]] for i in frame["_key"].to_list()]


def lexical(stage: Any, parts: list[GroupPart], ref_words: pl.DataFrame | None) -> dict[str, Any]:
    """Counts, vocabulary, distinct-n, entropy and (against the reference) tail mass, JS divergence, coverage."""
    n_groups = len(parts)
    out: dict[str, Any] = {"docs": np.array([p.docs for p in parts], np.int64),
                           "tokens": np.array([p.tokens for p in parts], np.int64)}
    out["mean_doc_tokens"] = out["tokens"] / np.maximum(out["docs"], 1)
    # Counts per (group, word) in (group, word) order: float sums then run in one fixed order.
    cells = pl.concat([p.words.with_columns(pl.lit(g, dtype=pl.Int64).alias("g")) for g, p in enumerate(parts)])
    cells = cells.sort("g", "word")
    g, c = cells["g"].to_numpy(), cells["count"].to_numpy().astype(np.float64)
    out["vocab_size"] = np.bincount(g, minlength=n_groups)
    total = out["tokens"].astype(np.float64)
    # A share of no tokens (a generation of empty documents; no trigram in two-word texts) is undefined: NaN, not
    # 0, which read as total collapse (and the divergence of no words from the reference as 0.5).
    none = np.where(total > 0, 1.0, np.nan)
    out["type_token_ratio"] = out["vocab_size"] / np.maximum(total, 1) * none
    for n in (1, 2, 3):
        distinct = np.array([p.distinct[n - 1].size for p in parts], np.float64)
        ngrams = np.array([p.ngram_totals[n - 1] for p in parts], np.float64)
        out[f"distinct_{n}"] = np.where(ngrams > 0, distinct / np.maximum(ngrams, 1), np.nan)
    p = c / total[g]
    # As floats even when no group has a word (numpy's bincount of no weights is int64: the column came out Int64).
    out["unigram_entropy_bits"] = 0.0 - np.bincount(g, weights=p * np.log2(p), minlength=n_groups).astype(np.float64)
    if ref_words is not None and ref_words.height:
        ref_c = cells.join(ref_words, on="word", how="left", maintain_order="left")["ref"].fill_null(0)
        ref_c = ref_c.to_numpy().astype(np.float64)
        rare = ref_c <= stage.rare_max_count
        out["tail_mass"] = np.bincount(g, weights=c * rare, minlength=n_groups) / np.maximum(total, 1) * none
        q = ref_c / float(ref_words["ref"].sum())
        m = (p + q) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            term = 0.5 * p * np.log2(p / m) + np.where(q > 0, 0.5 * q * np.log2(q / m), 0.0)
        covered_q = np.bincount(g, weights=q, minlength=n_groups)
        js = np.bincount(g, weights=term, minlength=n_groups) + 0.5 * (1 - covered_q)
        # Float round-off leaves about 1e-14 for identical distributions; report those as 0.
        out["js_divergence"] = np.where(js < 1e-12, 0.0, np.minimum(js, 1.0)) * none
        seen = np.bincount(g, weights=(ref_c > 0).astype(np.float64), minlength=n_groups)
        out["reference_vocab_coverage"] = seen / max(ref_words.height, 1)
    else:
        for name in ("tail_mass", "js_divergence", "reference_vocab_coverage"):
            out[name] = np.full(n_groups, np.nan)
    return out


def duplicate_rate(parts: list[GroupPart]) -> np.ndarray:
    """Share of a group's documents that repeat an earlier one exactly (whitespace-normalised).

    A collapsing generator repeats itself; this is the exact-match floor of a near-duplicate rate.
    """
    return np.array([1 - p.texts.size / p.docs if p.docs else 0.0 for p in parts])


def near_duplicate_rate(stage: Any, parts: list[GroupPart]) -> np.ndarray:
    """Per group, the share of documents a `dedup_minhash` step would remove (stages.dedup's rate)."""
    rate = np.full(len(parts), np.nan)
    if stage.near_duplicate_threshold <= 0:
        return rate
    from stages.dedup.clusters import components
    from stages.dedup.lsh import candidate_pairs
    from stages.dedup.minhash import resolve_banding
    from stages.dedup.signatures import jaccard_pairs

    banding = resolve_banding(128, stage.near_duplicate_threshold, None, None)
    for k, part in enumerate(parts):
        near = part.near
        present = sum(len(s) for s in near.signatures)
        if present < 2:  # blank texts duplicate nothing
            rate[k] = 0.0
            continue
        signatures = np.concatenate(near.signatures)
        values = np.concatenate(near.shingles)
        offsets = np.zeros(present + 1, np.int64)
        np.cumsum(np.concatenate(near.sizes), out=offsets[1:])
        candidates = candidate_pairs(signatures, banding.bands, banding.rows)
        if len(candidates):
            candidates = candidates[jaccard_pairs(values, offsets, candidates) >= stage.near_duplicate_threshold]
        clusters = unique_sorted(components(present, candidates)).size
        rate[k] = float(present - clusters) / near.docs
    return rate


def sampled_texts(part: GroupPart, size: int) -> pl.Series:
    """The group's sampled texts (the `size` smallest content hashes), in row order."""
    return part.sample.head(size).sort("row")["text"]


def self_bleu_per_group(stage: Any, parts: list[GroupPart]) -> np.ndarray:
    result = np.full(len(parts), np.nan)
    if not stage.self_bleu_sample:
        return result
    for k, part in enumerate(parts):
        toks = token_table(sampled_texts(part, stage.self_bleu_sample))
        ids = token_ids(toks["token"])[0] if toks.height else np.zeros(0, np.int64)
        result[k] = self_bleu(ids, toks["doc"].to_numpy().astype(np.int64))
    return result


def embedding_diversity(stage: Any, ctx: Context, parts: list[GroupPart], out: dict[str, Any]) -> None:
    try:
        from stages.embedding import encode_texts
    except ImportError as exc:
        raise ParamError("embedding_backend",
                         f"needs stages.embedding.encode_texts, which is not available ({exc}); "
                         "set embedding_backend: none") from None
    picks = [sampled_texts(part, stage.embedding_sample) for part in parts]
    flat = pl.concat(picks) if picks else pl.Series([], dtype=pl.String)
    # Generations share many documents (accumulate, keep_real): embed each distinct text once.
    unique_texts, inverse = np.unique(flat.to_numpy().astype(str), return_inverse=True)
    try:
        emb = encode_texts(list(unique_texts), backend=stage.embedding_backend, model=stage.embedding_model,
                           cache_dir=ctx.cache_dir)
    except ParamError as exc:  # the encoder's `model` is this stage's `embedding_model`
        if exc.param == "model":
            exc.param = "embedding_model"
        raise
    emb = np.asarray(emb, dtype=np.float32)[inverse]
    offset = 0
    for k, pick in enumerate(picks):
        x = emb[offset: offset + len(pick)]
        offset += len(pick)
        if len(x) >= 2:
            out["vendi_score"][k] = vendi_score(x)
            out["mean_pairwise_distance"][k] = mean_pairwise_cosine_distance(x)


def perplexity(ctx: Context, state: MetricsPartial, groups: pl.DataFrame, group_by: list[str],
               out: dict[str, Any]) -> None:
    """The per-document `perplexity` side output, and each group's mean and median."""
    n_groups = groups.height
    out["perplexity_mean"] = np.full(n_groups, np.nan)
    out["perplexity_median"] = np.full(n_groups, np.nan)
    if not state.perplexity:
        return
    side = pl.concat(state.perplexity, rechunk=True)
    if group_by:
        gid = side.select(group_by).join(groups.with_row_index("gid"), on=group_by, how="left",
                                         maintain_order="left", nulls_equal=True)["gid"].to_numpy()
    else:
        gid = np.zeros(side.height, np.int64)
    per_group = pl.DataFrame({"g": gid.astype(np.int64), "p": side["perplexity"].to_numpy()}).group_by("g").agg(
        pl.col("p").mean().alias("mean"), pl.col("p").median().alias("median"))
    out["perplexity_mean"][per_group["g"].to_numpy()] = per_group["mean"].to_numpy()
    out["perplexity_median"][per_group["g"].to_numpy()] = per_group["median"].to_numpy()
    ctx.write_side_output("perplexity", side)
