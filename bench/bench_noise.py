"""label_noise throughput against a plain NumPy/polars version of the same operation, in one run.

Both sides take the same in-memory polars table (id, label, a float payload) and return the same
columns (noisy label, clean_label, is_noisy, noise_origin, source_id). The baseline is the
tightest plain NumPy/polars version written here (a radix argsort and `Generator.choice` per class for
flips; whole cycles reusing the table's columns and one `integers` call for dilution). It draws from a
NumPy generator, so it is neither keyed by id (batch- and executor-independent) nor exact per
transition cell; the stage pays for those properties, and this measures what they cost.

    python -m bench.bench_noise            # 10M rows
    python -m bench.bench_noise quick      # 200k rows (smoke test)
"""

from __future__ import annotations

import sys

import numpy as np
import polars as pl

from bench.common import in_fresh_process, median_time, print_rows

CLASSES = 10
RATE = 0.2
ALPHA = 1.0
SCALES = {"full": 10_000_000, "quick": 200_000}


def make_table(rows: int) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame({
        "id": np.arange(rows, dtype=np.int64),
        "label": rng.integers(0, CLASSES, rows, dtype=np.int64),
        "x": rng.random(rows),
    })


ORIGINS = ("clean", "flipped")


def baseline_flip(df: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """The tightest plain version: exactly round(rate * N_i) flips per class, targets uniform over the others.

    One radix argsort groups rows by class, `Generator.choice` picks each class's flips, one
    `integers` call draws their targets; the output columns are built directly (no row-wise work).
    """
    rng = np.random.default_rng(seed)
    clean = df["label"].to_numpy()
    noisy = clean.copy()
    order = np.argsort(clean.astype(np.uint8), kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(clean, minlength=CLASSES))])
    for i in range(CLASSES):
        members = order[bounds[i] : bounds[i + 1]]
        chosen = rng.choice(members, size=int(np.floor(RATE * members.size + 0.5)), replace=False, shuffle=False)
        noisy[chosen] = (i + rng.integers(1, CLASSES, chosen.size)) % CLASSES
    flipped = noisy != clean
    return df.with_columns(
        pl.Series("label", noisy), pl.Series("clean_label", clean), pl.Series("is_noisy", flipped),
        pl.when(pl.Series(flipped)).then(pl.lit("flipped")).otherwise(pl.lit("clean")).alias("noise_origin"),
        pl.col("id").alias("source_id"),
    )


def baseline_dilute(df: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """The tightest plain version: every row kept, round(alpha * N) added in whole cycles plus a sample.

    Whole cycles reuse the table's columns as they are (no gather); only the partial cycle gathers.
    Labels of added rows are one `integers` call; new ids are one range.
    """
    rng = np.random.default_rng(seed)
    n = df.height
    added = int(np.floor(ALPHA * n + 0.5))
    full, rem = divmod(added, n)
    labels = rng.integers(0, CLASSES, added)
    clean = df.with_columns(pl.col("label").alias("clean_label"), pl.lit(False).alias("is_noisy"),
                            pl.lit("clean").alias("noise_origin"), pl.col("id").alias("source_id"))
    pools = [df] * full + ([df[np.sort(rng.choice(n, rem, replace=False))]] if rem else [])
    parts, start = [clean], 0
    for pool in pools:
        new = labels[start : start + pool.height]
        parts.append(pool.with_columns(
            pl.int_range(n + start, n + start + pool.height, dtype=pl.Int64).alias("id"), pl.Series("label", new),
            pl.col("label").alias("clean_label"), pl.Series("is_noisy", new != pool["label"].to_numpy()),
            pl.lit("added").alias("noise_origin"), pl.col("id").alias("source_id")))
        start += pool.height
    return pl.concat(parts, how="vertical", rechunk=False)


def ours_flip(df: pl.DataFrame) -> pl.DataFrame:
    from stages.noise import LabelNoise

    return LabelNoise(mode="flip", noise="symmetric", rate=RATE).apply(df, seed=0)


def ours_dilute(df: pl.DataFrame) -> pl.DataFrame:
    from stages.noise import LabelNoise

    return LabelNoise(mode="dilute", noise="uniform", alpha=ALPHA).apply(df, seed=0)


def ours_flip_parquet(src: str, dst: str) -> None:
    """What the engine does with the stage: stream Parquet parts in, batches out to Parquet."""
    import shutil
    from pathlib import Path

    from pipeline.io import Dataset
    from pipeline.stage import Context
    from pipeline.writing import write_table
    from stages.noise import LabelNoise

    out = Path(dst)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ctx = Context(step_id="flip", seed=0, out_dir=out)
    write_table(LabelNoise(mode="flip", noise="symmetric", rate=RATE).run(ctx, data=Dataset.from_parquet(src)), out)


def baseline_flip_parquet(src: str, dst: str) -> None:
    from pathlib import Path

    Path(dst).mkdir(parents=True, exist_ok=True)
    baseline_flip(pl.read_parquet(src)).write_parquet(Path(dst) / "part-00000.parquet", compression="zstd")


def _parquet_case(side: str, rows: int, repeats: int, workdir: str) -> dict:
    """Runs in a fresh process: the input file is written by the parent, so only the operation is measured."""
    fn = ours_flip_parquet if side == "ours" else baseline_flip_parquet
    dst = f"{workdir}/out-{side}"
    seconds = median_time(lambda: fn(f"{workdir}/input.parquet", dst), repeats=repeats)
    written = pl.scan_parquet(f"{dst}/*.parquet").select(pl.len()).collect().item()
    assert written == rows, written
    return {"seconds": seconds}


IMPLEMENTATIONS = {
    ("flip", "ours"): ours_flip, ("flip", "baseline"): baseline_flip,
    ("dilute", "ours"): ours_dilute, ("dilute", "baseline"): baseline_dilute,
}


def _peak(operation: str, side: str, rows: int) -> dict:
    """Runs in a fresh process: one call, for that side's peak RSS (checks the row count too)."""
    out = IMPLEMENTATIONS[(operation, side)](make_table(rows))
    expected = rows if operation == "flip" else rows + int(np.floor(ALPHA * rows + 0.5))
    assert out.height == expected, (operation, side, out.height)
    return {}


def _alternated(operation: str, rows: int, repeats: int) -> dict:
    """Runs in a fresh process: ours and the baseline on the same table, alternated, after one warm-up each."""
    import time

    df = make_table(rows)
    ours, base = IMPLEMENTATIONS[(operation, "ours")], IMPLEMENTATIONS[(operation, "baseline")]
    ours(df), base(df)
    times: dict[str, list] = {"ours": [], "baseline": [], "ours_cpu": [], "baseline_cpu": []}
    for _ in range(repeats):
        for side, fn in (("ours", ours), ("baseline", base)):
            wall, cpu = time.perf_counter(), time.process_time()
            fn(df)
            times[side].append(time.perf_counter() - wall)
            times[f"{side}_cpu"].append(time.process_time() - cpu)
    return times


def run(scale: str = "full") -> list[dict]:
    import os
    import statistics

    rows = SCALES[scale]
    repeats = 7 if scale == "full" else 3
    out = []
    for operation in ("flip", "dilute"):
        _, _, times = in_fresh_process(_alternated, operation, rows, repeats)
        _, ours_rss, _ = in_fresh_process(_peak, operation, "ours", rows)
        _, base_rss, _ = in_fresh_process(_peak, operation, "baseline", rows)
        med = {k: statistics.median(v) for k, v in times.items()}
        params = f"rate={RATE}" if operation == "flip" else f"alpha={ALPHA}"
        spread = ", ".join(f"{side} {min(times[side]):.3f}-{max(times[side]):.3f} s" for side in ("ours", "baseline"))
        out.append({
            "benchmark": "label_noise", "case": f"{operation} ({params}, {CLASSES} classes, {rows:,} rows, in memory)",
            "metric": "s (median, alternated)", "value": round(med["ours"], 3),
            "baseline": f"tightest plain numpy/polars {operation} (bench/bench_noise.py)",
            "baseline_value": round(med["baseline"], 3), "ratio": round(med["baseline"] / med["ours"], 3),
            "ratio_meaning": "baseline time / our time (target >= 0.8)",
            "peak_rss_mb": round(ours_rss), "baseline_peak_rss_mb": round(base_rss),
            "notes": f"median of {repeats} alternated runs in one fresh process after a warm-up each; spread {spread}; "
                     f"CPU s (all threads) ours {med['ours_cpu']:.3f} / baseline {med['baseline_cpu']:.3f}; "
                     f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)",
        })
    # Parquet in, Parquet out: the stage streams (bounded memory), the baseline loads the whole table.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-noise-") as workdir:
        make_table(rows).write_parquet(f"{workdir}/input.parquet", compression="zstd", row_group_size=1_000_000)
        _, ours_rss, ours = in_fresh_process(_parquet_case, "ours", rows, repeats, workdir)
        _, base_rss, base = in_fresh_process(_parquet_case, "baseline", rows, repeats, workdir)
    ours_rate, base_rate = rows / ours["seconds"], rows / base["seconds"]
    out.append({
        "benchmark": "label_noise", "case": f"flip (rate={RATE}, {rows:,} rows, Parquet to Parquet, streamed)",
        "metric": "input rows/s", "value": round(ours_rate),
        "baseline": "polars read_parquet + the numpy flip above + write_parquet (whole table in memory)",
        "baseline_value": round(base_rate), "ratio": round(ours_rate / base_rate, 3),
        "ratio_meaning": "ours/baseline throughput", "peak_rss_mb": round(ours_rss),
        "baseline_peak_rss_mb": round(base_rss),
        "notes": f"median of {repeats} runs, each side in a fresh process; both write zstd Parquet",
    })
    return out


if __name__ == "__main__":
    print_rows(run(sys.argv[1] if len(sys.argv) > 1 else "full"))
