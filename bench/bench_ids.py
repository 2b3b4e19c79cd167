"""Peak memory and time of the id check `chunk` and `leakage_audit` make before running (`check_input_data`).

`stages._ids.refuse_bad_id_column` streams the id column keeping a 64-bit word per id, sorts the words and
re-reads only the ids whose word repeats; the baseline is the check it replaced, `refuse_bad_ids` on the
whole column read at once (`is_duplicated` over the strings). Each case runs in a fresh process; the figure
is the peak RSS above the RSS once the input is open (imports excluded), and the wall time of the check.

    python -m bench.bench_ids           # 2e7 string ids of 16 and 49 bytes, 2e7 integer ids, 10% repeated
    python -m bench.bench_ids quick     # 1e6 of each
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from bench.common import in_fresh_process, print_rows

SCALES = {"full": 20_000_000, "quick": 1_000_000}
CASES = {  # name: (prefix of each string id, or None for integer ids; every n-th id repeats the one before)
    "unique 16-byte string ids": ("doc-", 0),
    "unique 49-byte string ids": ("https://example.org/corpus/documents/", 0),
    "unique integer ids": (None, 0),
    "16-byte string ids, 10% repeated": ("doc-", 10),
}


def write_ids(path: Path, rows: int, prefix: str | None, repeat_every: int) -> None:
    i = pl.int_range(0, rows, eager=True)
    if repeat_every:
        i = pl.select(pl.when(i % repeat_every == repeat_every - 1).then(i - 1).otherwise(i)).to_series()
    ids = i if prefix is None else pl.select(pl.lit(prefix) + i.cast(pl.String).str.zfill(12)).to_series()
    pl.DataFrame({"id": ids}).write_parquet(path, row_group_size=1_000_000)


def _check(path: str, whole: bool) -> dict:
    from pipeline.errors import InputDataError
    from pipeline.io import Dataset
    from stages._ids import refuse_bad_id_column, refuse_bad_ids

    def status(key: str) -> float:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key))
        return int(line.split()[1]) / 1024

    data = Dataset.from_parquet(path)
    before = status("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on
    start = time.perf_counter()
    try:
        if whole:
            refuse_bad_ids(data.lazy().select("id").collect().to_series(), "id", data.label)
        else:
            refuse_bad_id_column(data, "id")
        outcome = "unique"
    except InputDataError as exc:
        outcome = str(exc)
    return {"seconds": time.perf_counter() - start, "extra_mb": status("VmHWM:") - before, "outcome": outcome}


def run(scale: str = "full") -> list[dict]:
    rows = SCALES[scale]
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-ids-") as work:
        for case, (prefix, repeat_every) in CASES.items():
            path = Path(work) / "ids.parquet"
            write_ids(path, rows, prefix, repeat_every)
            _, _, ours = in_fresh_process(_check, str(path), False)
            _, _, whole = in_fresh_process(_check, str(path), True)
            assert ours["outcome"] == whole["outcome"], (ours["outcome"], whole["outcome"])
            out.append({
                "benchmark": "id check", "case": f"{case} ({rows:,})", "metric": "peak RSS above the open input, MB",
                "value": round(ours["extra_mb"]), "baseline": "the whole column read and checked at once",
                "baseline_value": round(whole["extra_mb"]), "ratio": round(ours["extra_mb"] / whole["extra_mb"], 3),
                "ratio_meaning": "ours / baseline memory (lower is better)",
                "notes": f"{ours['seconds']:.1f} s against {whole['seconds']:.1f} s; same verdict: "
                         f"{ours['outcome'].rsplit(': ', 1)[-1][:70]}",
            })
    return out


if __name__ == "__main__":
    print_rows(run(sys.argv[1] if len(sys.argv) > 1 else "full"))
