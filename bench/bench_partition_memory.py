"""Peak memory of the partitioned table stages (label_noise dilute, corpus_metrics) at 1x and 4x corpus.

For each corpus size, in fresh processes: one map task (broadcast built, then the largest partition
mapped; peak RSS before and after the map, and the pickled partial state's size), and the whole
step on the local executor (process peak RSS, merged state size). A task's memory should depend on
its partition and the broadcast, not on the corpus; the merged state is what grows with the corpus.

    python -m bench.bench_partition_memory           # 1M / 4M label rows, 6 / 24 MB of text
    python -m bench.bench_partition_memory quick     # a tenth of that
"""

from __future__ import annotations

import pickle
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from bench.common import in_fresh_process, print_rows

SCALES = {"full": (1_000_000, 6_000_000), "quick": (100_000, 600_000)}  # label rows, text bytes at 1x
PARTITION_BYTES = {"label_noise": 16 << 20, "corpus_metrics": 1 << 20}


def write_labels(folder: Path, rows: int) -> Path:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, rows, 500_000)):
        n = min(500_000, rows - start)
        pl.DataFrame({"id": np.arange(start, start + n, dtype=np.int64), "label": rng.integers(0, 10, n),
                      "x": rng.random(n)}).with_columns(pl.format("row {} of the pool", pl.col("id")).alias("tag")) \
            .write_parquet(folder / f"part-{i:05d}.parquet", row_group_size=100_000)
    return folder


def write_texts(folder: Path, text_bytes: int) -> Path:
    """Distinct 60-word documents drawn from the standard library's pydoc vocabulary, 4 generations."""
    import pydoc_data.topics

    words = np.array(sorted({w for t in pydoc_data.topics.topics.values() for w in t.split()}))
    rng = np.random.default_rng(2)
    docs = max(4, text_bytes // 420)
    picks = rng.integers(0, len(words), (docs, 60))
    texts = [" ".join(row) for row in words[picks]]
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"generation": np.arange(docs) % 4, "doc_id": [f"d{i}" for i in range(docs)], "text": texts}) \
        .sort("generation", maintain_order=True).write_parquet(folder / "part-00000.parquet", row_group_size=500)
    return folder


def _stage(name: str):
    from stages.metrics import CorpusMetrics
    from stages.noise import LabelNoise

    if name == "label_noise":
        return LabelNoise(mode="dilute", alpha=1.0)
    return CorpusMetrics(embedding_backend="none", self_bleu_sample=100)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _one_task(name: str, folder: str) -> dict:
    """Fresh process: build the broadcast, map the largest partition; peak RSS before and after the map."""
    from pipeline.io import Dataset
    from pipeline.partitioned import plan_partitions
    from pipeline.stage import Context

    stage = _stage(name)
    data = Dataset.from_parquet(folder)
    with tempfile.TemporaryDirectory() as out:
        broadcast = stage.broadcast(Context(step_id="m", seed=0, out_dir=Path(out)), {"data": data})
    parts = plan_partitions(data, PARTITION_BYTES[name])
    largest = max(parts, key=lambda p: p.nbytes)
    before = _rss_mb()
    state = stage.map(largest, broadcast)
    return {"before_mb": before, "after_mb": _rss_mb(), "partitions": len(parts), "partition_mb": largest.nbytes / 1e6,
            "state_bytes": len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))}


def _whole_step(name: str, folder: str) -> dict:
    """Fresh process: the whole step on the local executor (map, merge, finish, write)."""
    from pipeline.executors import LocalExecutor
    from pipeline.io import Dataset
    from pipeline.stage import Context

    stage = _stage(name)
    with tempfile.TemporaryDirectory() as out:
        ctx = Context(step_id="m", seed=0, out_dir=Path(out))
        LocalExecutor(partition_bytes=PARTITION_BYTES[name]).run_step(stage, ctx, {"data": Dataset.from_parquet(folder)},
                                                                      Path(out))
    return {"profile": ctx.stats.get("partition_profile", {}), "partitions": ctx.stats.get("partitions")}


def run(scale: str = "full") -> list[dict]:
    rows, text_bytes = SCALES[scale]
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-partition-memory-") as work:
        for name in ("label_noise", "corpus_metrics"):
            measured = {}
            for factor in (1, 4):
                folder = Path(work) / f"{name}-{factor}x"
                if name == "label_noise":
                    write_labels(folder, rows * factor)
                else:
                    write_texts(folder, text_bytes * factor)
                size_mb = sum(f.stat().st_size for f in folder.glob("*.parquet")) / 1e6
                _, _, task = in_fresh_process(_one_task, name, str(folder))
                _, step_rss, step = in_fresh_process(_whole_step, name, str(folder))
                measured[factor] = (task, step_rss, step, size_mb)
            (t1, s1, w1, mb1), (t4, s4, w4, mb4) = measured[1], measured[4]
            out.append({
                "benchmark": "partition memory", "case": f"{name}: one map task, 4x corpus ({mb4:.0f} MB) vs 1x",
                "metric": "task peak RSS MB", "value": round(t4["after_mb"]), "baseline": f"1x corpus ({mb1:.0f} MB)",
                "baseline_value": round(t1["after_mb"]), "ratio": round(t4["after_mb"] / t1["after_mb"], 3),
                "ratio_meaning": "peak RSS at 4x / at 1x (1.0 = bounded by the partition)",
                "notes": f"partition {t1['partition_mb']:.1f} / {t4['partition_mb']:.1f} MB of "
                         f"{t1['partitions']} / {t4['partitions']} partitions; RSS before the map (imports + "
                         f"broadcast) {t1['before_mb']:.0f} / {t4['before_mb']:.0f} MB; one partition's state "
                         f"{t1['state_bytes'] / 1e6:.2f} / {t4['state_bytes'] / 1e6:.2f} MB",
            })
            out.append({
                "benchmark": "partition memory", "case": f"{name}: whole step (local), 4x corpus vs 1x",
                "metric": "process peak RSS MB", "value": round(s4), "baseline": "1x corpus",
                "baseline_value": round(s1), "ratio": round(s4 / s1, 3),
                "ratio_meaning": "peak RSS at 4x / at 1x",
                "notes": f"merged state {w1['profile'].get('merged_state_bytes', 0) / 1e6:.1f} / "
                         f"{w4['profile'].get('merged_state_bytes', 0) / 1e6:.1f} MB; "
                         f"{w1['partitions']} / {w4['partitions']} partitions",
            })
    return out


if __name__ == "__main__":
    print_rows(run(sys.argv[1] if len(sys.argv) > 1 else "full"))
