"""What one partition of a corpus contributes to corpus_metrics, per group, and how two contributions merge.

Everything a group's metrics need is kept in a form that merges exactly, whatever the partitioning:
counts add; word counts are keyed by the word itself (not by a partition's token ids); distinct
n-grams and distinct texts are sorted sets of stable 64-bit hashes, merged by union; near-duplicate
evidence is each document's MinHash signature and shingle set, kept in row order, so `finish` runs
the same banding and verification the single-pass stage ran; the sampled documents (self-BLEU,
embeddings) are the `size` smallest (content hash, row) pairs, a selection that merges by keeping
the smallest of both. Per-row perplexities (the `perplexity` side output) stay in row order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from stages._hashing import id_hash, mix64
from stages.text import ngram_hashes, token_hashes, token_table

GroupKey = tuple


@dataclass
class NearDuplicateParts:
    """Per document (row order): blank or not; for non-blank ones the signature and the shingle set."""

    docs: int = 0
    signatures: list[np.ndarray] = field(default_factory=list)
    shingles: list[np.ndarray] = field(default_factory=list)
    sizes: list[np.ndarray] = field(default_factory=list)

    def merge(self, later: NearDuplicateParts) -> NearDuplicateParts:
        return NearDuplicateParts(self.docs + later.docs, self.signatures + later.signatures,
                                  self.shingles + later.shingles, self.sizes + later.sizes)


@dataclass
class GroupPart:
    """One group's counts and sets from a run of partitions."""

    docs: int
    tokens: int
    ngram_totals: np.ndarray  # within-document n-grams, n = 1, 2, 3
    distinct: list[np.ndarray]  # sorted distinct n-gram hashes, n = 1, 2, 3
    words: pl.DataFrame  # word, count
    texts: np.ndarray  # sorted distinct hashes of whitespace-normalised texts
    sample: pl.DataFrame  # h, row, text: the smallest (h, row) pairs
    near: NearDuplicateParts | None

    def merge(self, later: GroupPart, sample_size: int) -> GroupPart:
        words = pl.concat([self.words, later.words]).group_by("word").agg(pl.col("count").sum())
        sample = pl.concat([self.sample, later.sample]).sort("h", "row").head(sample_size)
        near = self.near.merge(later.near) if self.near is not None else None
        return GroupPart(self.docs + later.docs, self.tokens + later.tokens, self.ngram_totals + later.ngram_totals,
                         [np.union1d(a, b) for a, b in zip(self.distinct, later.distinct)], words,
                         np.union1d(self.texts, later.texts), sample, near)


@dataclass
class MetricsPartial:
    """A run of partitions' contribution: parts per group key, the group columns' schema, perplexity rows."""

    groups: dict[GroupKey, GroupPart]
    group_schema: dict[str, Any]
    perplexity: list[pl.DataFrame]

    def merge(self, later: MetricsPartial, sample_size: int) -> MetricsPartial:
        groups = dict(self.groups)
        for key, part in later.groups.items():
            groups[key] = groups[key].merge(part, sample_size) if key in groups else part
        return MetricsPartial(groups, self.group_schema or later.group_schema, self.perplexity + later.perplexity)


def _ngram_sets(word_hash: np.ndarray, doc: np.ndarray, n_docs: int, doc_gid: np.ndarray, n_groups: int) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """Per group: n-gram totals (n = 1..3) and sorted distinct n-gram hashes, n-grams within documents only."""
    counts = np.bincount(doc, minlength=n_docs) if len(doc) else np.zeros(n_docs, np.int64)
    totals = np.zeros((n_groups, 3), np.int64)
    sets: list[list[np.ndarray]] = [[] for _ in range(n_groups)]
    units = mix64(word_hash)
    for n in (1, 2, 3):
        if len(units) >= n:
            key, key_doc, _ = ngram_hashes(units, counts, n)
        else:
            key, key_doc = np.zeros(0, np.uint64), np.zeros(0, np.int64)
        kg = doc_gid[key_doc]
        totals[:, n - 1] = np.bincount(kg, minlength=n_groups)
        key, bounds = _sorted_by_group(key, kg, n_groups)
        for g in range(n_groups):
            sets[g].append(_distinct_of_sorted(key[bounds[g] : bounds[g + 1]]))
    return totals, sets


def _sorted_by_group(key: np.ndarray, kg: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """`key` ordered by (group, key) and each group's [start, end) bounds: polars sorts (multi-threaded)."""
    if n_groups == 1:
        return pl.Series(key, dtype=pl.UInt64).sort().to_numpy(), np.array([0, key.size])
    ordered = pl.DataFrame({"g": kg, "k": key}).sort("g", "k")
    return ordered["k"].to_numpy(), np.searchsorted(ordered["g"].to_numpy(), np.arange(n_groups + 1))


def _distinct_of_sorted(values: np.ndarray) -> np.ndarray:
    """np.unique of an already sorted array, without its second sort (or hash table)."""
    if values.size == 0:
        return values.copy()
    return values[np.r_[True, values[1:] != values[:-1]]]


def _near_duplicates(stage: Any, texts: pl.Series, doc_gid: np.ndarray, n_groups: int) -> list[NearDuplicateParts]:
    """Each group's documents' MinHash signatures and shingle sets (blank texts: counted, nothing kept)."""
    from stages.dedup.minhash import resolve_banding
    from stages.dedup.shingles import shingle_sets
    from stages.dedup.signatures import minhash_signatures

    resolve_banding(128, stage.near_duplicate_threshold, None, None)  # the params the rate will use are valid
    blank = (texts.is_null() | (texts.str.strip_chars().str.len_bytes() == 0)).to_numpy()
    present = np.flatnonzero(~blank)
    parts = [NearDuplicateParts(int(d)) for d in np.bincount(doc_gid, minlength=n_groups)]
    if not present.size:
        return parts
    values, offsets = shingle_sets(texts.gather(present), "word", 5, "full")
    signatures = minhash_signatures(values, offsets, 128)
    sizes = np.diff(offsets)
    owner = doc_gid[present]
    value_owner = np.repeat(owner, sizes)
    for g in range(n_groups):
        mine = owner == g
        if mine.any():
            parts[g].signatures.append(signatures[mine])
            parts[g].shingles.append(values[value_owner == g])
            parts[g].sizes.append(sizes[mine])
    return parts


def measure_partition(stage: Any, frame: pl.DataFrame, base: int, group_by: list[str], broadcast: dict) -> MetricsPartial:
    """One partition's contribution (rows `base`, `base + 1`, ... of the corpus), per group."""
    texts = frame[stage.text_column].cast(pl.String).fill_null("")
    if stage.lowercase:
        texts = texts.str.to_lowercase()
    if group_by:
        local = frame.select(group_by).unique(maintain_order=True)
        doc_gid = frame.select(group_by).join(local.with_row_index("gid"), on=group_by, how="left",
                                              maintain_order="left", nulls_equal=True)["gid"].to_numpy()
        keys = [tuple(r) for r in local.rows()]
    else:
        doc_gid, keys = np.zeros(frame.height, np.int64), [()]
    doc_gid = doc_gid.astype(np.int64)
    n_groups = len(keys)
    toks = token_table(texts)
    doc = toks["doc"].to_numpy().astype(np.int64)
    tok_gid = doc_gid[doc]
    word_hash = token_hashes(toks["token"])  # equality is all distinct-n needs
    totals, sets = _ngram_sets(word_hash, doc, frame.height, doc_gid, n_groups)
    words = pl.DataFrame({"g": tok_gid, "word": toks["token"]}).group_by("g", "word").agg(pl.len().alias("count"))
    words = words.with_columns(pl.col("count").cast(pl.Int64))
    docs = np.bincount(doc_gid, minlength=n_groups)
    tokens = np.bincount(tok_gid, minlength=n_groups)
    # Only how many distinct texts a group has is used: the text core's span hash does (~10x faster
    # than the per-byte tabulation of id_digest, which the sample keeps for its version-stable order).
    norm = token_hashes(texts.str.strip_chars().str.replace_all(r"\s+", " "))
    sample_size = max(stage.self_bleu_sample, stage.embedding_sample if stage.embedding_backend != "none" else 0)
    if sample_size:
        sample = pl.DataFrame({"g": doc_gid, "h": id_hash(texts, broadcast["seed"], "metrics-sample"),
                               "row": np.arange(base, base + frame.height, dtype=np.int64), "text": texts})
        sample = sample.sort("h", "row").group_by("g", maintain_order=True).head(sample_size)
    else:  # nothing is sampled (no self-BLEU, no embeddings): skip hashing every text
        sample = pl.DataFrame(schema={"g": pl.Int64, "h": pl.UInt64, "row": pl.Int64, "text": pl.String})
    near = _near_duplicates(stage, texts, doc_gid, n_groups) if stage.near_duplicate_threshold > 0 else None
    groups = {}
    for g, key in enumerate(keys):
        groups[key] = GroupPart(
            int(docs[g]), int(tokens[g]), totals[g], sets[g], words.filter(pl.col("g") == g).drop("g"),
            np.unique(norm[doc_gid == g]), sample.filter(pl.col("g") == g).drop("g"),
            near[g] if near is not None else None)
    schema = dict(frame.select(group_by).schema) if group_by else {}
    perplexity = [_perplexities(stage, frame, texts, toks, group_by, broadcast["model"])] if broadcast["model"] else []
    return MetricsPartial(groups, schema, perplexity)


def _perplexities(stage: Any, frame: pl.DataFrame, texts: pl.Series, toks: pl.DataFrame, group_by: list[str],
                  model: Any) -> pl.DataFrame:
    """The `perplexity` side output's rows for this partition (group columns, doc_id, perplexity)."""
    # Accumulating schedules repeat most documents across generations: score each text once.
    distinct = texts.unique(maintain_order=True)
    # Without repeats the distinct texts are the texts, in order: their tokens are already known.
    tokens = toks if len(distinct) == len(texts) else None
    # Reference texts are scored leave-one-out: in-sample, the model had memorised them (generation 0 looked best).
    scored = pl.DataFrame({"text": distinct, "p": model.perplexity(distinct, tokens, leave_one_out=True)})
    ppl = pl.DataFrame({"text": texts}).join(scored, on="text", how="left", maintain_order="left")["p"].to_numpy()
    keys = [*group_by, *(["doc_id"] if "doc_id" in frame.columns else [])]
    values = pl.Series("perplexity", ppl, dtype=pl.Float64)
    return frame.select(keys).with_columns(values) if keys else values.to_frame()
