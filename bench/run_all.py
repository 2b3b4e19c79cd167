"""One command for every benchmark: runs each bench/bench_*.py and writes bench/results.md.

    python -m bench.run_all                 # every benchmark at full scale (what the report quotes)
    python -m bench.run_all --quick         # every benchmark at smoke-test scale
    python -m bench.run_all --only ray noise   # re-measure some; the others keep their last figures

Each module runs in its own process (`run(scale)` per bench/common.py), so one that crashes, hangs
past its timeout or runs out of memory is recorded as a failure in the report and the rest still
run. Every figure is quoted as a ratio against its baseline measured in the same run of the same
module. The report carries its own data (a JSON comment at the end), which is how `--only` keeps
the figures of modules it does not re-run, each with the date, scale and machine it was measured on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results.md"
DATA_MARK = "<!-- bench-data:"
# Everything between this line and the data comment is written by people (analyses, held-out
# figures, verdicts on targets); a re-run keeps it verbatim and rewrites only the tables above it.
NOTES_MARK = "<!-- hand-written notes below: bench.run_all keeps them -->"
ROWS_MARK = "@@bench-rows@@"
# A module's child process runs this: the rows come back as one marked JSON line on stdout.
CHILD = (
    "import importlib, json, sys\n"
    "module = importlib.import_module('bench.' + sys.argv[1])\n"
    "rows = module.run(sys.argv[2])\n"
    f"print({ROWS_MARK!r} + json.dumps(rows, default=str), flush=True)\n"
)


def discover() -> list[str]:
    return sorted(p.stem[len("bench_"):] for p in BENCH_DIR.glob("bench_*.py"))


def machine() -> dict:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "none"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a broken torch only hides the GPU name
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        # Other work on the machine skews timings; the load when a module finished says how much.
        "load_1m": round(os.getloadavg()[0], 2),
    }


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("corpusforge", "polars", "pyarrow", "numpy", "duckdb", "faiss-cpu", "sentence-transformers",
                "torch", "model2vec", "scikit-learn", "datatrove", "ray", "rensa", "datasketch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run_module(name: str, scale: str, timeout_s: float) -> dict:
    """Run one benchmark module in a fresh process; never raises."""
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    record = {"module": name, "scale": scale, "started_at": started, "rows": [], "status": "ok", "error": None}
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, f"bench_{name}", scale], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout_s)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith(ROWS_MARK)]
        if done.returncode != 0 or not lines:
            tail = (done.stderr or done.stdout).strip().splitlines()[-12:]
            record.update(status="failed", error=f"exit status {done.returncode}: " + "\n".join(tail))
        else:
            record["rows"] = json.loads(lines[-1][len(ROWS_MARK):])
    except subprocess.TimeoutExpired:
        record.update(status="failed", error=f"did not finish within {timeout_s:.0f}s (timeout)")
    record["wall_s"] = round(time.perf_counter() - t0, 1)
    record["machine"] = machine()
    return record


# ------------------------------------------------------------------------------ the report


def _fmt(value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _machine_line(m: dict) -> str:
    return (f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, GPU: {m['gpu']}, "
            f"{m['os']}, Python {m['python']}, load average {m.get('load_1m', '?')}")


def render(records: dict[str, dict], header: dict, notes: str = "") -> str:
    lines = [
        "# corpusforge benchmark results",
        "",
        "Written by `python -m bench.run_all` (re-run it, or `--only MODULE`, when performance changes).",
        "Every figure is ours against a baseline measured side by side in the same run; read the",
        "`ratio` column with its meaning. Medians of repeats; peak RSS in MB from a fresh process per case.",
        "",
        f"- Last run: {header['date']} (scale: {header['scale']}, modules: {', '.join(header['modules'])})",
        f"- Machine: {_machine_line(header['machine'])}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in header["versions"].items()),
        "",
        "## Summary",
        "",
        "| benchmark | case | ratio | meaning |",
        "|---|---|---|---|",
    ]
    for name in sorted(records):
        rec = records[name]
        if rec["status"] != "ok":
            lines.append(f"| {name} | **failed** (see below) | | |")
        for row in rec["rows"]:
            lines.append(f"| {name} | {_fmt(row.get('case'))} | {_fmt(row.get('ratio'))} | "
                         f"{_fmt(row.get('ratio_meaning'))} |")
    for name in sorted(records):
        rec = records[name]
        lines += ["", f"## {name}", "",
                  f"Module `bench/bench_{name}.py`, scale `{rec['scale']}`, run {rec['started_at']} "
                  f"in {rec['wall_s']}s on {_machine_line(rec['machine'])}.", ""]
        if rec["status"] != "ok":
            lines += ["**Failed:**", "", "```", rec["error"] or "", "```"]
            continue
        if not rec["rows"]:
            lines.append("(no rows)")
            continue
        lines += ["| case | metric | ours | baseline | baseline value | ratio | ratio meaning | "
                  "peak RSS MB (ours / baseline) | notes |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in rec["rows"]:
            rss = " / ".join(_fmt(row.get(k)) for k in ("peak_rss_mb", "baseline_peak_rss_mb") if row.get(k) is not None)
            cells = [row.get("case"), row.get("metric"), row.get("value"), row.get("baseline"),
                     row.get("baseline_value"), row.get("ratio"), row.get("ratio_meaning"), rss, row.get("notes")]
            lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    failures = [n for n in sorted(records) if records[n]["status"] != "ok"]
    lines += ["", "## Failures", "", ", ".join(failures) if failures else "None."]
    lines += ["", NOTES_MARK, "", notes.strip("\n"), ""] if notes.strip() else ["", NOTES_MARK, ""]
    # "--" may not appear inside an HTML comment; "\\u002d" is the same character to a JSON reader.
    data = json.dumps({"header": header, "records": records}, default=str).replace("--", "-\\u002d")
    lines += ["", f"{DATA_MARK} {data} -->", ""]
    return "\n".join(lines)


def read_notes(path: Path) -> str:
    """The hand-written part of an earlier report (between NOTES_MARK and the data comment)."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    if NOTES_MARK not in text:
        return ""
    notes = text.split(NOTES_MARK, 1)[1]
    return notes[:notes.rindex(DATA_MARK)] if DATA_MARK in notes else notes


def read_previous(path: Path) -> dict[str, dict]:
    """The per-module records kept at the end of an earlier report (empty if none or unreadable)."""
    try:
        text = path.read_text()
        start = text.rindex(DATA_MARK) + len(DATA_MARK)
        return json.loads(text[start:text.rindex("-->")])["records"]
    except (OSError, ValueError, KeyError):
        return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test scale (each module well under a minute)")
    parser.add_argument("--only", nargs="+", metavar="MODULE", help="run these modules (e.g. ray noise); keep the rest")
    parser.add_argument("--out", type=Path, default=RESULTS, help="report path (default: bench/results.md)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per module (default: 300 with --quick, 3600 otherwise)")
    args = parser.parse_args(argv)
    available = discover()
    names = args.only or available
    unknown = [n.removeprefix("bench_") for n in names if n.removeprefix("bench_") not in available]
    if unknown:
        parser.error(f"no benchmark module bench_{unknown[0]}.py; available: {', '.join(available)}")
    names = [n.removeprefix("bench_") for n in names]
    scale = "quick" if args.quick else "full"
    timeout_s = args.timeout or (300.0 if args.quick else 3600.0)
    records = read_previous(args.out) if args.only else {}
    records = {k: v for k, v in records.items() if k in available}
    header = {"scale": scale, "modules": names, "versions": versions()}
    notes = read_notes(args.out)
    for name in names:
        print(f"[bench] {name} ({scale}) ...", flush=True)
        rec = run_module(name, scale, timeout_s)
        records[name] = rec
        status = f"{len(rec['rows'])} rows" if rec["status"] == "ok" else "FAILED: " + rec["error"].splitlines()[0]
        print(f"[bench] {name}: {status} in {rec['wall_s']}s", flush=True)
        # Written after every module, so a run stopped part-way still leaves what it measured.
        header.update(date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), machine=machine())
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(render(records, header, notes))
        os.replace(tmp, args.out)
    print(f"[bench] wrote {args.out}")
    return 1 if any(records[n]["status"] != "ok" for n in names) else 0


if __name__ == "__main__":
    sys.exit(main())
