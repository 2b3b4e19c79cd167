"""Local vs Ray on the same pipeline: the scaling curve with one and two Ray worker nodes.

The pipeline reads the standard library's sources (real code and docstrings, about 31 MB), keeps
documents of at least 20 words (a row-wise task per fragment), embeds them with the static backend
(a model-holding stage: an actor pool), and splits train/test (a table stage). The baseline is the
local executor on the same config in the same run. Ray clusters are real `ray start` nodes on
loopback with one CPU each, started before timing (their start-up is reported in the notes, not
timed); the driver connects to them in every timed run, as `pipeline run --executor ray` does.

Peak RSS is the driver's (a fresh process per case); Ray workers' memory is not included.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import in_fresh_process, print_rows

OUT = Path(__file__).parent / "out" / "ray"
FRAGMENT_ROWS = 128
SCALES = {
    # files of the stdlib (None: all, tests included), timed repeats, Ray worker-node counts
    "quick": {"limit": 120, "repeats": 1, "nodes": (2,)},
    "full": {"limit": None, "repeats": 3, "nodes": (1, 2)},
}


def build_corpus(limit: int | None) -> Path:
    from stages.sources import PythonStdlib

    path = OUT / f"stdlib-{limit or 'all'}.parquet"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        PythonStdlib(include_tests=True, limit=limit).apply().write_parquet(path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
    return path


def pipeline_config(corpus: Path) -> dict:
    return {
        "name": "scaling",
        "seed": 0,
        "steps": [
            {"id": "docs", "stage": "read_parquet", "params": {"path": str(corpus)}},
            {"id": "prose", "stage": "length_filter", "inputs": "docs", "params": {"min_words": 20}},
            {"id": "vectors", "stage": "embed", "inputs": "prose", "params": {"backend": "static", "cache": False}},
            {"id": "split", "stage": "split", "inputs": "vectors", "params": {"fractions": {"train": 0.9, "test": 0.1}}},
        ],
    }


def timed_runs(corpus: str, workdir: str, repeats: int, address: str | None) -> dict:
    """Run the pipeline `repeats` times (every step re-run); wall times and the final output's digest."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import polars as pl

    import pipeline

    config = pipeline_config(Path(corpus))
    options = {}
    if address:
        # The corpus is small for a cluster: the automatic size (whole batches of the stage, 16k rows
        # for embed) would make one fragment per step, so ask for ~6 fragments per CPU instead.
        options = {"executor": "ray", "executor_options": {"address": address, "fragment_rows": FRAGMENT_ROWS}}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        report = pipeline.run_pipeline(config, workdir=workdir, force=True, **options)
        times.append(time.perf_counter() - t0)
    split = pipeline.load(report.step("split").path).collect()
    digest = split.select(pl.col("id"), pl.col("split")).hash_rows().sum()
    return {"times": times, "rows": split.height, "digest": int(digest)}


def run(scale: str = "full") -> list[dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from loopback_cluster import LoopbackCluster  # the tests' harness: a real cluster on loopback

    settings = SCALES[scale]
    corpus = build_corpus(settings["limit"])
    work = Path(tempfile.mkdtemp(prefix="bench-ray-", dir=OUT))
    repo = Path(__file__).resolve().parent.parent
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH", "")) if p),
           "HF_HUB_OFFLINE": "1"}
    try:
        _, local_peak, local = in_fresh_process(timed_runs, str(corpus), str(work / "local"), settings["repeats"], None)
        local_s = statistics.median(local["times"])
        rows = []
        for nodes in settings["nodes"]:
            t0 = time.perf_counter()
            with LoopbackCluster(workers=nodes - 1, cpus_per_node=1, env=env) as cluster:
                started_s = time.perf_counter() - t0
                _, peak, result = in_fresh_process(
                    timed_runs, str(corpus), str(work / f"ray{nodes}"), settings["repeats"], cluster.address
                )
            ray_s = statistics.median(result["times"])
            rows.append({
                "benchmark": "ray",
                "case": f"stdlib {corpus.stat().st_size / 2**20:.1f} MB Parquet ({local['rows']} docs): "
                        f"read, length_filter, embed(static), split; Ray {nodes} node(s) x 1 CPU",
                "metric": "s",
                "value": round(ray_s, 3),
                "baseline": "local executor, same pipeline (all cores of this machine)",
                "baseline_value": round(local_s, 3),
                "ratio": round(local_s / ray_s, 3),
                "ratio_meaning": "speed-up of Ray over local (local s / Ray s; >1 = Ray faster)",
                "peak_rss_mb": round(peak, 1),
                "baseline_peak_rss_mb": round(local_peak, 1),
                "notes": (f"median of {settings['repeats']}; fragment_rows={FRAGMENT_ROWS}; "
                          f"cluster start {started_s:.1f}s not timed; "
                          f"same output as local: {result['digest'] == local['digest']}; "
                          f"{os.cpu_count()} cores on this machine"),
            })
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import sys

    rows = run(sys.argv[1] if len(sys.argv) > 1 else "full")
    print_rows(rows)
    print(json.dumps({"rows": len(rows)}))
