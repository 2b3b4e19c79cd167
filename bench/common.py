"""Shared helpers for benchmarks: medians of repeated timings, and peak memory measured in a fresh process.

Every benchmark module exposes `run(scale: str = "full") -> list[dict]`, each dict a row:
    {"benchmark": ..., "case": ..., "metric": "rows/s" | "s" | "MB/s" | ...,
     "value": ours, "baseline": "what we compare with", "baseline_value": theirs,
     "ratio": value / baseline_value (or the inverse for times; say which in "ratio_meaning"),
     "ratio_meaning": "ours/baseline throughput", "peak_rss_mb": ..., "baseline_peak_rss_mb": ..., "notes": ...}
`scale="quick"` must finish in well under a minute (the aggregator uses it as a smoke test);
`scale="full"` is what the issue asks to measure. `python -m bench.<module>` prints the rows.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def median_time(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Median wall time of `fn` over `repeats` runs (machines here are shared and noisy)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _child(fn, args, queue, preload=()):  # pragma: no cover - runs in a subprocess
    import importlib

    for module in preload:  # import time is not the throughput being measured
        importlib.import_module(module)
    t0 = time.perf_counter()
    result = fn(*args)
    wall = time.perf_counter() - t0
    queue.put((wall, own_peak_rss_mb(), result))


def own_peak_rss_mb() -> float:
    """This process's own peak RSS in MB.

    `ru_maxrss` is carried across fork and exec on Linux (the kernel keeps the larger of the old and
    new address spaces' high-water marks), so a spawned child of a 600 MB parent reports >= 600 MB
    whatever it did. VmHWM in /proc/self/status belongs to the current address space, which starts
    afresh at exec; elsewhere fall back to ru_maxrss.
    """
    import resource

    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024.0
    except (OSError, IndexError, ValueError):
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak_kb / 1024.0


def in_fresh_process(fn: Callable[..., Any], *args: Any, preload: tuple[str, ...] = ()) -> tuple[float, float, Any]:
    """Run `fn(*args)` in a new process; return (wall seconds, peak RSS in MB, fn's return value).

    A fresh process per case keeps one case's memory from hiding inside another's peak. `fn` must be
    a module-level function (it is pickled). Modules in `preload` are imported before the clock
    starts, so both sides of a comparison are timed on their work, not on Python imports.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue, preload))
    proc.start()
    import queue as queue_module

    while True:
        try:
            wall, peak, result = queue.get(timeout=1.0)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"benchmark case {getattr(fn, '__name__', fn)} died (exit code {proc.exitcode})") from None
    proc.join()
    return wall, peak, result


def print_rows(rows: list[dict]) -> None:
    for row in rows:
        print(json.dumps(row, default=str))
