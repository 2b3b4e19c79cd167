"""`dedup_semantic` on Ray (2 workers x 1 CPU) vs the local executor on 1 CPU: the vectors stay on the workers.

Corpus: the static-table vectors (256-d) of `bench_ray_dedup`'s source blocks plus a second copy of the
first 60,000 (so there are duplicates to find), in row groups of 4,096 rows. Stage: threshold 0.95,
`keep: lowest_id`, default clusters (about sqrt(rows)), 16 MB partitions.

What is measured besides the walls: the driver's peak RSS and CPU, what reached it through the merge
tree (`merged_state_bytes`: row counts) and what went from the maps to the reducers worker to worker
(`shuffle_bytes`: the vectors, their cosine to the centroid and the ids). Before wave 16 every vector
went through the merge tree to the driver, which ran k-means and the greedy pass over all of them.
Both sides must keep and remove the same rows (digest of the kept table's, `removed`'s and `clusters`'
row hashes). Alternated runs, medians and spreads.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.bench_ray_audit import _spread
from bench.bench_ray_dedup import build_corpus, local_and_ray, same_outputs, speed_up_row
from bench.common import in_fresh_process, print_rows

OUT = Path(__file__).parent / "out" / "ray_semantic"
SCALES = {"quick": {"mb": 8, "copies": 2_000, "repeats": 1}, "full": {"mb": 136, "copies": 60_000, "repeats": 3}}
PRELOAD = ("stages", "stages.dedup", "faiss")
PARAMS = {"threshold": 0.95, "keep": "lowest_id"}


def build_vectors(mb: int, copies: int) -> Path:
    """Static-table vectors of the source blocks, the first `copies` of them twice."""
    import polars as pl

    from stages.embedding import encode_texts, vectors_to_series

    path = OUT / f"vectors-{mb}mb.parquet"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    blocks = pl.read_parquet(build_corpus(mb))
    blocks = pl.concat([blocks, blocks.slice(0, copies).with_columns(pl.col("id") + "#2")])
    vectors = encode_texts(blocks["text"].to_list(), backend="static")
    blocks.select("id").with_columns(vectors_to_series("embedding", vectors)).write_parquet(path, row_group_size=4096)
    return path


def run(scale: str = "full") -> list[dict]:
    cfg = SCALES[scale]
    os.environ["POLARS_MAX_THREADS"] = "1"
    vectors = in_fresh_process(build_vectors, cfg["mb"], cfg["copies"])[2]
    local, on_ray = local_and_ray(vectors, OUT, cfg["repeats"], 768, PRELOAD, "DedupSemantic", PARAMS)
    stats, profile = on_ray[0][2]["stats"], on_ray[0][2]["stats"]["partition_profile"]
    rows = stats["rows_in"]
    return [speed_up_row(
        "ray_semantic", f"dedup_semantic t=0.95, {rows:,} static vectors (256-d, "
                        f"{os.path.getsize(vectors) / 1e6:.0f} MB Parquet)", local, on_ray,
        (f"identical kept, removed and clusters: {same_outputs(local, on_ray)} ({stats['rows_removed']} removed); "
         f"{cfg['repeats']} runs each, alternated: local {_spread([w for w, _, _ in local])} s, Ray "
         f"{_spread([w for w, _, _ in on_ray])} s, Ray driver "
         f"{_spread([r['driver_cpu_s'] for _, _, r in on_ray])} CPU s and "
         f"{_spread([r['peak_mb'] for _, _, r in on_ray])} MB peak RSS; k-means {stats['kmeans_clusters']} "
         f"clusters on a sample of {stats['kmeans_sample_rows']:,} rows; {stats['partitions']} partitions, "
         f"{stats['shuffle_buckets']} reducers; maps to reducers worker to worker "
         f"{profile['shuffle_bytes'] / 1e6:.1f} MB, merged state to the driver "
         f"{profile['merged_state_bytes']:,} B; shared 2-core machine"))]


if __name__ == "__main__":
    print_rows(run("quick" if "--quick" in sys.argv else "full"))
