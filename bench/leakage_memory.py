"""Peak memory of the n-gram audit as the corpus grows (issue #12: 16x distinct text <= 1.1x of 1x).

Run by `python -m bench.run_all --only leakage` (scale "full"). Each case runs in a fresh process; the cases
alternate. Besides the default run, the 16x corpus runs with one map in flight (`run_ours_one_map`): the local
executor runs two maps at once on two cores, and each thread's allocator arenas keep their own freed pages, so
the default's peak holds two maps' worth of retained memory where the 1x corpus's (two partitions, done in a
second) holds less. The difference says what the second core costs in memory, apart from the corpus size.
"""

from __future__ import annotations

import os
import statistics
from unittest import mock

from bench.bench_leakage import run_ours
from bench.common import in_fresh_process


def run_ours_one_map(train_path: str, test_path: str) -> dict:
    """`run_ours` with one map in flight at a time (the audit's maps not run on threads)."""
    from stages.leakage import LeakageAudit

    LeakageAudit.map_in_threads = False  # this fresh process only
    return run_ours(train_path, test_path)


# polars' allocator (jemalloc) keeps freed pages for reuse and hands them back over time: polars 2.1 sets
# dirty_decay_ms:500,muzzy_decay_ms:1000 when it loads (wave 22's notes said jemalloc's 10 s default; polars
# appends this setting after its own, so it wins). This setting hands pages back at once.
PROMPT_PURGE = {"_RJEM_MALLOC_CONF": "dirty_decay_ms:0"}


def run_memory(sizes_mb: tuple[int, ...] = (32, 126, 504), repeats: int = 3) -> list[dict]:
    """Peak RSS of the n-gram audit on 1x / 4x / 16x distinct text with ONE test set (default batches).

    Corpus: `bench.bench_ray_audit.build_corpus` (distinct stdlib + site-packages sources, then a pinned
    wheel's past ~380 MB; the larger corpora start with the smaller's files); test set: the 1x corpus's
    1,000 items. Memory should follow the test set and the partition size, not the corpus (issue #12:
    16x <= 1.1x of 1x). Each case runs `repeats` times, alternated, each in a fresh process: a peak is
    the maximum of a noisy curve (two maps in flight), so one run's ratio moves by +-0.05; medians are
    compared. The 1x and 16x cases run again with PROMPT_PURGE (both sides), with their CPU seconds, and
    the 16x case with one map in flight.
    """
    from bench.bench_ray_audit import build_corpus, build_test_set

    corpora = {mb: build_corpus(mb) for mb in sizes_mb}
    test = build_test_set(corpora[sizes_mb[0]])
    one, largest = sizes_mb[0], sizes_mb[-1]
    cases = {(mb, False): path for mb, path in corpora.items()} | {(mb, True): corpora[mb] for mb in (one, largest)}
    runs: dict[tuple, list] = {key: [] for key in [*cases, (largest, "one map")]}
    for _ in range(repeats):
        for (mb, purge), path in cases.items():
            with mock.patch.dict(os.environ, PROMPT_PURGE if purge else {}):  # the spawned process inherits it
                runs[mb, purge].append(in_fresh_process(run_ours, str(path), str(test)))
        runs[largest, "one map"].append(in_fresh_process(run_ours_one_map, str(corpora[largest]), str(test)))
    peaks = {key: sorted(run[1] for run in value) for key, value in runs.items()}
    cpu = {key: statistics.median(run[2]["cpu_s"] for run in value) for key, value in runs.items()}
    rows = []
    walls = {key: statistics.median(run[0] for run in value) for key, value in runs.items()}
    for mb, purge in [(mb, False) for mb in sizes_mb[1:]] + [(largest, "one map"), (largest, True)]:
        _, _, out = runs[mb, purge][0]
        side = purge is True  # the 1x run it is compared with: the same setting, else the default
        base = runs[one, side][0][2]
        peak, one_peak = statistics.median(peaks[mb, purge]), statistics.median(peaks[one, side])
        size = out["stats"]["train_mb"]
        setting = {True: f", {' '.join(f'{k}={v}' for k, v in PROMPT_PURGE.items())} (both sides)",
                   "one map": ", one map in flight (1x: the default)", False: ""}[purge]
        rows.append({
            "benchmark": "leakage",
            "case": f"n-gram audit memory, {size / base['stats']['train_mb']:.0f}x distinct corpus ({size:.0f} MB) "
                    f"vs 1x, same test set{setting}",
            "metric": f"peak RSS MB (median of {repeats})", "value": round(peak, 1),
            "baseline": f"same audit on 1x ({base['stats']['train_mb']:.0f} MB)",
            "baseline_value": round(one_peak, 1), "ratio": round(peak / one_peak, 2),
            "ratio_meaning": "peak RSS Nx corpus / 1x corpus (target <= 1.1 at 16x: bounded by test set and partition)",
            "peak_rss_mb": round(peak, 1),
            "notes": f"peaks {', '.join(f'{p:.0f}' for p in peaks[mb, purge])} MB (1x: "
                     f"{', '.join(f'{p:.0f}' for p in peaks[one, side])}); median CPU s {cpu[mb, purge]:.2f} (1x "
                     f"{cpu[one, side]:.2f}; default {cpu[mb, False]:.2f} and {cpu[one, False]:.2f}); median wall "
                     f"{walls[mb, purge]:.2f} s (default {walls[mb, False]:.2f} s), {size / walls[mb, purge]:.1f} MB/s "
                     f"end to end; verdicts {out['verdicts']} (1x: {base['verdicts']}); "
                     f"partitions {out['stats']['partitions']}",
        })
    return rows
