"""Fixed corpus_metrics cases (a small collapse study's shape) and a stable fingerprint of their outputs."""

from __future__ import annotations

import json
import pydoc_data.topics

import numpy as np
import polars as pl
import xxhash


def study_table() -> pl.DataFrame:
    """Two schedules x 2 seeds x 3 generations of pydoc paragraphs, with exact and near repeats, doc ids."""
    paras = [p.strip() for k in sorted(pydoc_data.topics.topics)[:40]
             for p in pydoc_data.topics.topics[k].split("\n\n") if len(p.split()) >= 6]
    rng = np.random.default_rng(3)
    rows = []
    for schedule in ("replace", "accumulate"):
        for seed in (1, 2):
            for generation in range(3):
                picks = rng.choice(len(paras), 45, replace=generation > 0)
                for j, i in enumerate(picks):
                    text = paras[i]
                    if generation and j % 7 == 0:  # a near copy: one word changed
                        words = text.split()
                        words[len(words) // 2] = "Changed"
                        text = " ".join(words)
                    rows.append({"schedule": schedule, "seed": seed, "generation": generation,
                                 "doc_id": f"{schedule}-{seed}-{generation}-{j}", "text": text})
    df = pl.DataFrame(rows)
    # Generation 0 is shared by every schedule and seed in a real study.
    gen0 = df.filter((pl.col("generation") == 0) & (pl.col("schedule") == "replace") & (pl.col("seed") == 1))
    shared = pl.concat([gen0.with_columns(pl.lit(s).alias("schedule"), pl.lit(d).cast(pl.Int64).alias("seed"))
                        for s in ("replace", "accumulate") for d in (1, 2)])
    return pl.concat([shared, df.filter(pl.col("generation") > 0)]).with_columns(
        pl.when(pl.int_range(pl.len()) % 11 == 5).then(None).otherwise(pl.col("text")).alias("text"))


def reference_table() -> pl.DataFrame:
    paras = [p.strip() for k in sorted(pydoc_data.topics.topics)[40:60]
             for p in pydoc_data.topics.topics[k].split("\n\n") if p.strip()]
    return pl.DataFrame({"text": paras})


def fake_encode(texts, backend=None, model=None, cache_dir=None):
    """A deterministic stand-in for an embedding model: letter counts of each text."""
    out = np.zeros((len(texts), 26), np.float32)
    for i, t in enumerate(texts):
        for ch in t.lower():
            if "a" <= ch <= "z":
                out[i, ord(ch) - 97] += 1
    return out + 1e-3


CASES: dict[str, dict] = {
    "default_no_embeddings": {"params": {"embedding_backend": "none"}},
    "reference_input_lowercase": {"params": {"embedding_backend": "none", "lowercase": True, "rare_max_count": 1,
                                             "self_bleu_sample": 30}, "reference": True},
    "embeddings_sampled": {"params": {"embedding_backend": "static", "embedding_sample": 12,
                                      "near_duplicate_threshold": 0.5, "perplexity_order": 2}},
    "one_group": {"params": {"embedding_backend": "none", "group_by": [], "perplexity_order": 0}, "drop": True},
    "group_by_seed_only": {"params": {"embedding_backend": "none", "group_by": ["seed"], "self_bleu_sample": 0,
                                      "near_duplicate_threshold": 0.0}},
}


def case_inputs(name: str) -> tuple[dict, dict[str, pl.DataFrame]]:
    case = CASES[name]
    data = study_table()
    if case.get("drop"):
        data = data.drop("schedule", "seed", "generation", "doc_id")
    inputs = {"data": data}
    if case.get("reference"):
        inputs["reference"] = reference_table()
    return dict(case["params"]), inputs


def write_parts(df: pl.DataFrame, folder, row_group_size: int = 50, files: int = 3):
    folder.mkdir(parents=True, exist_ok=True)
    step = -(-df.height // files)
    for i in range(files):
        df.slice(i * step, step).write_parquet(folder / f"part-{i:05d}.parquet", row_group_size=row_group_size)
    return folder


# The near-duplicate rate depends on the text core's shingle hash values (MinHash candidates), which
# another branch may re-pin; it is checked against stages.dedup's rate directly instead.
HASH_DEPENDENT = ("near_duplicate_rate",)


def fingerprint(table: pl.DataFrame, sides: dict[str, pl.DataFrame], stats: dict) -> str:
    """xxh3 of the rows (in order, with dtypes, floats exactly), every side output and the stable stats."""
    h = xxhash.xxh3_64()
    for frame in (table.drop(HASH_DEPENDENT, strict=False), *(sides[k] for k in sorted(sides))):
        h.update(repr(frame.schema).encode())
        for column in frame.columns:
            h.update(repr(frame[column].to_list()).encode())
    stable = {k: v for k, v in stats.items() if k not in ("partitions", "partition_profile")}
    h.update(json.dumps(stable, sort_keys=True, default=repr).encode())
    return h.hexdigest()
