"""Engine overhead: a pass-through step over >= 1 GB of Parquet vs plain pyarrow copies of the file.

Baselines: a per-row-group copy (`read_row_group` -> `ParquetWriter.write_table`, the tighter one)
and the streaming `iter_batches` copy of earlier runs; the three cases alternate in each repeat.

Both sides decode and re-encode the same file with the same codec and level; ours additionally
plans the step, fingerprints input and output, fsyncs, writes the manifest and renames atomically.
Each case runs in a fresh process (peak RSS per case), alternating ours/baseline, median of repeats.

Corpus: the standard library's Python sources (real code and docstrings), repeated with distinct
ids until the Parquet file reaches the target size. Built once under bench/out/.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench.common import in_fresh_process, print_rows

OUT = Path(__file__).parent / "out" / "engine"
SCALES = {"quick": 64 << 20, "mid": 256 << 20, "full": 1100 << 20}  # bytes of Parquet


def build_corpus(target_bytes: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.writing import COMPRESSION, COMPRESSION_LEVEL
    from stages.sources import PythonStdlib

    path = OUT / f"stdlib-{target_bytes >> 20}MB.parquet"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    base = PythonStdlib(include_tests=True).apply().to_arrow()
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, base.schema, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL) as w:
        copy = 0
        while True:
            ids = pa.array([f"{copy}/{i}" for i in base.column("id").to_pylist()], pa.large_string())
            w.write_table(base.set_column(0, "id", ids))
            copy += 1
            if copy % 8 == 0:
                if tmp.stat().st_size >= target_bytes:
                    break
    tmp.rename(path)
    return path


def _cpu_s() -> float:
    """CPU seconds of this process, all threads (steadier than wall time on a shared machine)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def with_cpu(fn, src: str, dst: str) -> tuple[int, float]:
    """(rows copied, CPU seconds the copy took) of one copy function, run in the child process."""
    start = _cpu_s()
    rows = fn(src, dst)
    return rows, _cpu_s() - start


def baseline_copy(src: str, dst: str) -> int:
    """The tighter plain-library baseline: copy the file one whole row group at a time."""
    import pyarrow.parquet as pq

    from pipeline.writing import COMPRESSION, COMPRESSION_LEVEL

    pf = pq.ParquetFile(src)
    rows = 0
    with pq.ParquetWriter(dst, pf.schema_arrow, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL) as w:
        for i in range(pf.num_row_groups):
            table = pf.read_row_group(i)
            w.write_table(table)
            rows += table.num_rows
    return rows


def batches_copy(src: str, dst: str) -> int:
    """The looser baseline of earlier runs: stream record batches (`iter_batches`) into a writer."""
    import pyarrow.parquet as pq

    from pipeline.writing import COMPRESSION, COMPRESSION_LEVEL

    pf = pq.ParquetFile(src)
    rows = 0
    with pq.ParquetWriter(dst, pf.schema_arrow, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL) as w:
        for batch in pf.iter_batches():
            w.write_batch(batch)
            rows += batch.num_rows
    return rows


def engine_copy(src: str, workdir: str) -> int:
    import pipeline

    config = {"name": "overhead", "seed": 0, "steps": [{"id": "copy", "stage": "select", "inputs": {"data": src}}]}
    report = pipeline.run_pipeline(config, workdir=workdir, force=True)
    return report.step("copy").rows


def verification_cost(src: str, workdir: str, repeats: int = 5) -> dict:
    """Write the pass-through step once, then time what a cached re-run spends checking it.

    The write time is the step's own wall time in its manifest; verification is `verify_step` on the
    published step (fast: stat calls; full: re-hash every part, page cache warm as on a re-run), and
    the cached re-run is a whole `run_pipeline` call that finds the step unchanged.
    """
    import json
    import time

    import pipeline
    from pipeline.verify import verify_step

    config = {"name": "verify", "seed": 0, "steps": [{"id": "copy", "stage": "select", "inputs": {"data": src}}]}
    pipeline.run_pipeline(config, workdir=workdir, force=True)
    step_dir = Path(workdir) / "verify" / "copy"
    manifest = json.loads((step_dir / "_manifest.json").read_text())
    out = {"write_s": manifest["wall_time_s"], "bytes": sum(f["bytes"] for f in manifest["output"]["files"])}
    for mode in ("fast", "full"):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            assert verify_step(step_dir, manifest, mode) is None
            times.append(time.perf_counter() - t0)
        out[f"{mode}_s"] = statistics.median(times)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        assert pipeline.run_pipeline(config, workdir=workdir).cached == ["copy"]
        times.append(time.perf_counter() - t0)
    out["cached_rerun_s"] = statistics.median(times)
    return out


def verification_rows(src: Path) -> list[dict]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-verify-", dir=OUT))
    try:
        _, peak, cost = in_fresh_process(verification_cost, str(src), str(tmp / "runs"), preload=("pipeline",))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mb = cost["bytes"] / 2**20
    rows = []
    for mode in ("fast", "full"):
        rows.append({
            "benchmark": "cache verification",
            "case": f"verify={mode} on a cached {mb:,.0f} MB pass-through step",
            "metric": "ms (median of 5)",
            "value": round(cost[f"{mode}_s"] * 1000, 3),
            "baseline": "writing the step (its wall time in the manifest)",
            "baseline_value": round(cost["write_s"] * 1000, 1),
            "ratio": float(f"{cost[f'{mode}_s'] / cost['write_s']:.3g}"),
            "ratio_meaning": "verification time / write time (target for fast < 0.10)",
            "peak_rss_mb": round(peak),
            "baseline_peak_rss_mb": None,
            "notes": f"whole cached re-run (lock, plan, verify fast, run record): {cost['cached_rerun_s']:.3f} s; "
                     "full re-hashes with the page cache warm",
        })
    return rows


def run(scale: str = "full", repeats: int = 3) -> list[dict]:
    src = build_corpus(SCALES[scale])
    size = src.stat().st_size
    walls: dict[str, list[float]] = {"ours": [], "row_groups": [], "batches": []}
    peaks: dict[str, list[float]] = {k: [] for k in walls}
    cpus: dict[str, list[float]] = {k: [] for k in walls}
    rows = {}
    for _ in range(repeats):  # alternated: each case once per repeat, each in a fresh process
        tmp = Path(tempfile.mkdtemp(prefix="bench-engine-", dir=OUT))
        try:
            for name, fn, dst in (("row_groups", baseline_copy, tmp / "copy.parquet"),
                                  ("ours", engine_copy, tmp / "runs"),
                                  ("batches", batches_copy, tmp / "copy2.parquet")):
                wall, peak, (rows[name], cpu) = in_fresh_process(with_cpu, fn, str(src), str(dst))
                walls[name].append(wall)
                peaks[name].append(peak)
                cpus[name].append(cpu)
            assert rows["ours"] == rows["row_groups"] == rows["batches"], rows
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    spread = "; ".join(f"{k} {min(v):.2f}-{max(v):.2f}s" for k, v in walls.items())
    cpu = "; ".join(f"{k} {statistics.median(v):.2f}s" for k, v in cpus.items())
    mb = size / 2**20
    out = []
    for name, label in (("row_groups", "pyarrow read_row_group -> ParquetWriter, per row group (the tighter)"),
                        ("batches", "pyarrow ParquetFile.iter_batches -> ParquetWriter")):
        out.append({
            "benchmark": "engine overhead",
            "case": f"pass-through step, {mb:,.0f} MB Parquet ({rows['ours']:,} rows)",
            "metric": f"s (median of {repeats})",
            "value": round(med["ours"], 2),
            "baseline": label,
            "baseline_value": round(med[name], 2),
            "ratio": round(med["ours"] / med[name], 3),
            "ratio_meaning": "our time / baseline time (target <= 1.0 against the per-row-group copy)",
            "peak_rss_mb": round(max(peaks["ours"])),
            "baseline_peak_rss_mb": round(max(peaks[name])),
            "notes": f"data {mb:,.0f} MB on disk; peak RSS is {max(peaks['ours']) / mb:.2f}x the file size; "
                     f"spreads {spread}; CPU s (median, all threads) {cpu}; ours reads the next row group "
                     "on a thread while writing (one batch ahead)",
        })
    return out + verification_rows(src)


if __name__ == "__main__":
    print_rows(run(sys.argv[1] if len(sys.argv) > 1 else "full"))
