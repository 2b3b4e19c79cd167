"""Local vs Ray on the same pipeline: the scaling curve with one and two Ray worker nodes.

The pipeline reads the standard library's sources (real code and docstrings, about 31 MB), keeps
documents of at least 20 words (a row-wise task per fragment), embeds them with the static backend
(a model-holding stage: an actor pool), and splits train/test (a table stage). The baseline is the
local executor on the same config in the same run. Ray clusters are real `ray start` nodes on
loopback with one CPU each, started before timing (their start-up is reported in the notes, not
timed); the driver connects to them in every timed run, as `pipeline run --executor ray` does.

Peak RSS is the driver's (a fresh process per case); Ray workers' memory is not included.

On the two-node cluster it also measures what sharing the model actors between consecutive model steps
saves: a MiniLM `embed` of a test split right after the train split's, against the same step after a
table step (which releases the actors, so the second step starts fresh ones and loads the model again).
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


def model_steps_config(between: bool) -> dict:
    """Embed a train split, then its test split (MiniLM): back to back, or with a table step between them,
    which releases the first step's actors so the second starts its own (the A/B of a shared pool)."""
    embed = {"backend": "sentence-transformers", "cache": False}
    steps = [
        {"id": "docs", "stage": "python_docs", "params": {"granularity": "paragraph", "min_chars": 80}},
        {"id": "some", "stage": "sample", "inputs": "docs", "params": {"n": 400}},
        {"id": "split", "stage": "split", "inputs": "some", "params": {"fractions": {"train": 0.5, "test": 0.5}}},
        {"id": "train_vectors", "stage": "embed", "inputs": "split:train", "params": embed},
    ]
    test_input = "split:test"
    if between:
        steps.append({"id": "test_copy", "stage": "sql", "inputs": "split:test",
                      "params": {"query": "SELECT * FROM data"}})
        test_input = "test_copy"
    steps.append({"id": "test_vectors", "stage": "embed", "inputs": test_input, "params": embed})
    return {"name": "model_steps", "seed": 0, "steps": steps}


def timed_model_steps(workdir: str, address: str, between: bool) -> dict:
    """One run of `model_steps_config` on the cluster: each embed step's wall time and the test vectors' digest."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import polars as pl

    import pipeline

    report = pipeline.run_pipeline(model_steps_config(between), workdir=workdir, force=True, executor="ray",
                                   executor_options={"address": address, "fragment_rows": 50})
    vectors = pipeline.load(report.step("test_vectors").path).collect()
    return {"first_s": report.step("train_vectors").wall_time_s, "second_s": report.step("test_vectors").wall_time_s,
            "digest": int(vectors.select(pl.col("id"), pl.col("embedding").cast(pl.List(pl.Float32)).list.sum()).hash_rows().sum())}


def shared_pool_row(address: str, workdir: Path, repeats: int, nodes: int) -> dict:
    """The second of two consecutive MiniLM embed steps (actors shared) vs the same step after a table step
    (fresh actors: start, import, model load), alternated, a fresh driver per run."""
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for r in range(repeats):
        for between in (True, False):
            _, _, out = in_fresh_process(timed_model_steps, str(workdir / f"pool-{between}-{r}"), address, between)
            runs[between].append(out)
    shared = statistics.median(o["second_s"] for o in runs[False])
    fresh = statistics.median(o["second_s"] for o in runs[True])
    first = statistics.median(o["first_s"] for o in runs[False] + runs[True])
    spread = {k: f"{min(o['second_s'] for o in v):.2f}-{max(o['second_s'] for o in v):.2f}s" for k, v in runs.items()}
    same = len({o["digest"] for o in runs[False] + runs[True]}) == 1
    return {
        "benchmark": "ray", "case": f"embed test split (200 rows, MiniLM) right after embed train; Ray {nodes} node(s) x 1 CPU",
        "metric": "s", "value": round(shared, 3),
        "baseline": "same step after a table step (the pool released: fresh actors load the model again)",
        "baseline_value": round(fresh, 3), "ratio": round(fresh / shared, 3),
        "ratio_meaning": "speed-up from sharing the model actors between consecutive model steps",
        "notes": (f"median of {repeats} alternated runs, a fresh driver each; spreads shared {spread[False]}, fresh "
                  f"{spread[True]}; the first embed step (pays the pool's start either way) {first:.2f} s; "
                  f"identical test vectors in every run: {same}"),
    }


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
                pool = shared_pool_row(cluster.address, work, settings["repeats"], nodes) if nodes == 2 else None
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
            if pool is not None:
                rows.append(pool)
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import sys

    rows = run(sys.argv[1] if len(sys.argv) > 1 else "full")
    print_rows(rows)
    print(json.dumps({"rows": len(rows)}))
