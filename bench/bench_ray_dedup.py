"""`dedup_minhash` on Ray (2 workers x 1 CPU) vs the local executor on 1 CPU, with the LSH shuffle worker to worker.

Corpus: distinct real text, the standard library's and site-packages' Python sources cut into ~2 KB
blocks (`bench_dedup.source_blocks`), plus a copy of every tenth block with 2% of its words edited,
so there are near-duplicates to find; written in row groups of 4,096 rows. Stage: 5-word shingles,
128 permutations, 16 bands x 8 rows, threshold 0.8, Jaccard verification (bench_dedup's settings).

Baseline: the local executor in a fresh process with every thread pinned to one core and
POLARS_MAX_THREADS=1. Ray: a real loopback cluster of two `ray start` nodes with one CPU each,
started before timing; the driver connects in the timed run. Both must keep and remove the same
rows (digest of the kept table's, `removed`'s and `clusters`' row hashes; peak RSS is taken before it). Alternated runs, medians and spreads.

The bytes: what the maps sent to the band reducers (`shuffle_bytes`: the band keys, worker to worker
on Ray) and what reached the driver through the merge tree (`merged_state_bytes`: ids, lengths,
digests). Before the shuffle was in the executor, the band keys went through the merge tree too,
so the driver received both. The kept and removed rows are written by a second pass over the
partitions (`pipeline.row_pass`): on Ray one task per partition; before that, the driver streamed the
whole corpus twice more to write them.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from bench.bench_ray_audit import _spread
from bench.common import in_fresh_process, own_peak_rss_mb, print_rows

OUT = Path(__file__).parent / "out" / "ray_dedup"
PARTITION_BYTES = 16 << 20
SCALES = {"quick": {"mb": 8, "repeats": 1}, "full": {"mb": 136, "repeats": 3}}
PRELOAD = ("stages", "stages.dedup")
PARAMS = {"ngram": 5, "num_perm": 128, "bands": 16, "rows": 8, "threshold": 0.8, "verify": "jaccard"}


def build_corpus(mb: int) -> Path:
    """~2 KB blocks of distinct sources up to `mb` MB, plus an edited copy of every tenth block."""
    import numpy as np
    import polars as pl

    from bench.bench_dedup import source_blocks
    from stages.dedup.planted import edit_words

    path = OUT / f"blocks-{mb}mb.parquet"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    blocks = source_blocks(mb)
    rng = np.random.default_rng(0)
    copies = blocks.gather_every(10)
    copies = copies.with_columns(pl.col("id") + "#copy",
                                 pl.Series("text", [edit_words(t, 0.02, rng) for t in copies["text"]]))
    pl.concat([blocks, copies]).write_parquet(path, row_group_size=4096)
    return path


def dedup(corpus: str, workdir: str, address: str | None, stage: str = "DedupMinhash",
          params: dict | None = None) -> dict:
    """One dedup step (`stages.dedup.<stage>` with `params`; dedup_minhash with PARAMS by default) on the local
    executor (address None, pinned to one core) or the Ray cluster."""
    import shutil
    import time

    import polars as pl

    import stages.dedup
    from bench.bench_ray_audit import _pin_to_one_core
    from pipeline.executors import LocalExecutor, get_executor
    from pipeline.io import Dataset
    from pipeline.stage import Context

    if address is None:
        _pin_to_one_core()
    cpu0 = time.process_time()
    out = Path(workdir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    exe = (LocalExecutor(partition_bytes=PARTITION_BYTES) if address is None
           else get_executor("ray", address=address, partition_bytes=PARTITION_BYTES))
    ctx = Context(step_id="dedup", seed=0, out_dir=out)
    step = getattr(stages.dedup, stage)(**(PARAMS if params is None else params))
    try:
        exe.run_step(step, ctx, {"data": Dataset.from_parquet(corpus)}, out)
    finally:
        exe.close()
    step_cpu, step_peak = time.process_time() - cpu0, own_peak_rss_mb()  # before the digest's own memory
    digest = hashlib.sha256()
    for part in ("part-*.parquet", "removed/*.parquet", "clusters/*.parquet"):
        digest.update(pl.read_parquet(out / part).hash_rows(seed=0).to_numpy().tobytes())
    return {"digest": digest.hexdigest()[:16], "stats": ctx.stats, "driver_cpu_s": step_cpu, "peak_mb": step_peak}


def local_and_ray(corpus: Path, out: Path, repeats: int, object_store_mb: int, preload: tuple[str, ...],
                  stage: str = "DedupMinhash", params: dict | None = None) -> tuple[list, list]:
    """`dedup` of `stage` with `params` in fresh processes, local and on a loopback cluster of two 1-CPU nodes,
    alternated (the machine's load hits both sides alike): (local runs, Ray runs) as `in_fresh_process` gives."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from loopback_cluster import LoopbackCluster  # the tests' harness: a real cluster on loopback

    root = str(Path(__file__).resolve().parent.parent)
    env = {"PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]), "POLARS_MAX_THREADS": "1"}
    local, on_ray = [], []
    with LoopbackCluster(workers=1, cpus_per_node=1, object_store_mb=object_store_mb, env=env) as cluster:
        for _ in range(repeats):
            local.append(in_fresh_process(dedup, str(corpus), str(out / "local"), None, stage, params,
                                          preload=preload))
            on_ray.append(in_fresh_process(dedup, str(corpus), str(out / "ray"), cluster.address, stage, params,
                                           preload=(*preload, "ray")))
    return local, on_ray


def same_outputs(local: list, on_ray: list) -> bool:
    """Every run of either side kept, removed and clustered the same rows (`dedup`'s digest)."""
    return len({r["digest"] for _, _, r in local + on_ray}) == 1


def speed_up_row(benchmark: str, case: str, local: list, on_ray: list, notes: str) -> dict:
    """The results row of `local_and_ray`'s runs: median walls, their ratio, the first runs' peak RSS."""
    local_s = sorted(w for w, _, _ in local)[len(local) // 2]
    ray_s = sorted(w for w, _, _ in on_ray)[len(on_ray) // 2]
    return {"benchmark": benchmark, "case": case, "metric": "s", "value": round(ray_s, 2),
            "baseline": "local executor, 1 CPU", "baseline_value": round(local_s, 2), "ratio": round(local_s / ray_s, 3),
            "ratio_meaning": "speed-up of Ray 2 workers x 1 CPU over local 1 CPU",
            "peak_rss_mb": round(on_ray[0][2]["peak_mb"], 1), "baseline_peak_rss_mb": round(local[0][2]["peak_mb"], 1),
            "notes": notes}


def run(scale: str = "full") -> list[dict]:
    cfg = SCALES[scale]
    os.environ["POLARS_MAX_THREADS"] = "1"
    corpus = in_fresh_process(build_corpus, cfg["mb"])[2]
    local, on_ray = local_and_ray(corpus, OUT, cfg["repeats"], 512, PRELOAD)
    lr, rr = local[0][2], on_ray[0][2]
    stats, profile = rr["stats"], rr["stats"]["partition_profile"]
    mb = os.path.getsize(corpus) / 1e6
    rows = stats["rows_removed"] + stats.get("rows_kept", 0)
    return [speed_up_row(
        "ray_dedup", f"dedup_minhash t=0.8, {mb:.0f} MB Parquet of ~2 KB source blocks (+ edited copies of every tenth)",
        local, on_ray,
        (f"identical kept, removed and clusters: {same_outputs(local, on_ray)} ({stats['rows_removed']} removed of {rows} rows); "
         f"{cfg['repeats']} runs each, alternated: local {_spread([w for w, _, _ in local])} s, Ray "
         f"{_spread([w for w, _, _ in on_ray])} s, driver {_spread([r['driver_cpu_s'] for _, _, r in on_ray])} "
         f"CPU s + maps {profile['total_map_cpu_s']} CPU s; {stats['partitions']} partitions of "
         f"{PARTITION_BYTES >> 20} MB, {stats['shuffle_buckets']} reducers (bands + exact copies) and "
         f"{stats['second_buckets']} second-round reducer(s) making the {stats['band_pairs']} band pairs "
         f"distinct ({stats['band_pairs'] * 16:,} B worker to worker; the driver receives "
         f"{stats['candidate_pairs'] * 16:,} B), kept and "
         f"removed rows written by one task per partition; band keys and digests shuffled worker to "
         f"worker {profile['shuffle_bytes'] / 1e6:.1f} MB, merged state to the driver "
         f"{profile['merged_state_bytes']:,} B (row counts); "
         f"peak RSS of the step (before the benchmark's digest): Ray driver {rr['peak_mb']:.0f} MB, local "
         f"process {lr['peak_mb']:.0f} MB, largest map {profile['max_task_peak_rss_mb']} MB; "
         f"candidate pairs {stats['candidate_pairs']}; shared 2-core machine"))]


if __name__ == "__main__":
    print_rows(run(sys.argv[1] if len(sys.argv) > 1 else "full"))
