"""Leakage audit: n-gram throughput against datatrove, semantic-pass throughput per backend, calibration.

Corpus: the standard library's Python sources (about 30 MB at scale "full"; 150 files at "quick").
Test set: 1,000 draws of 80 words (200 at "quick"), half cut from training files (so the probe finds real
matches) and half from pydoc topics; at full, the 12 cuts from files of no words are dropped (988 items).

- n-gram pass: our `leakage_audit` (semantic passes off) against datatrove's `NGramsDecontFilter`
  with the same n over the same training texts, in the same run. datatrove's index is built with its
  own `NGramsDecontIndexer.compute_hashes` (label n-grams only; the lighteval task loader is not
  needed) and its filter is called on every training document, as its pipeline would.
- semantic pass: training MB/s of the chunk/semantic passes with each embedding backend
  (sentence-transformers on a slice of the corpus, as it runs at tens of chunks per second on CPU).
- `python -m bench.bench_leakage --paraphrase [--quick] [--humaneval DIR] [--mmlu DIR]`: the paraphrase evidence
  study (`bench/leakage_paraphrase.py`): recall/FPR per planted kind, calibrated on pydoc, judged on
  stdlib sources and on llm-decontaminator's HumanEval rephrasings (given as a path, not vendored).
- `python -m bench.bench_leakage --speed [32 126 504]`: the n-gram audit on distinct stdlib +
  site-packages sources against the issue's baselines, alternated in one run: a minimal
  read-normalise-hash-probe loop on 1 and 2 threads (`minimal_loop`), and datatrove at 32 MB.
- memory (scale "full"): peak RSS of the n-gram audit on 1x / 4x / 16x distinct sources with one test set
  (`bench/leakage_memory.py`). Past the ~390 MB this machine's sources give, the 504 MB corpus continues with a pinned
  wheel's Python sources, fetched once from PyPI (`bench.bench_ray_audit.EXTRA_WHEEL`).
- `python -m bench.bench_leakage --calibrate` prints the score distributions behind the default
  similarity thresholds (planted leaks of each kind vs clean controls).

Bench-only dependency: datatrove (`pip install -c constraints.txt -e ".[bench]"`).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import polars as pl

from bench.common import in_fresh_process, print_rows

N = 13


def stdlib_corpus(limit: int | None) -> pl.DataFrame:
    from stages.sources import PythonStdlib

    # With the test suites: about 30 MB of real code, comments and docstrings.
    return PythonStdlib(include_tests=True, limit=limit).apply()


def make_test_set(train: pl.DataFrame, items: int, seed: int = 0) -> pl.DataFrame:
    from pydoc_data.topics import topics

    rng = np.random.default_rng(seed)
    texts, ids = [], []
    train_texts = train["text"].to_list()
    for i in range(items // 2):
        words = train_texts[int(rng.integers(0, len(train_texts)))].split()
        start = int(rng.integers(0, max(len(words) - 80, 1)))
        texts.append(" ".join(words[start : start + 80]))
        ids.append(f"from-train-{i}")
    names = sorted(topics)
    for i in range(items - items // 2):
        words = topics[names[int(rng.integers(0, len(names)))]].split()
        start = int(rng.integers(0, max(len(words) - 80, 1)))
        texts.append(" ".join(words[start : start + 80]))
        ids.append(f"pydoc-{i}")
    # A cut from a file of no words is empty (12 of 1,000 at full scale), and the audit refuses an empty item:
    # dropped, the others as drawn before.
    return pl.DataFrame({"id": ids, "text": texts}).filter(pl.col("text") != "")


def _paths(scale: str, workdir: Path) -> tuple[str, str, float]:
    limit = 150 if scale == "quick" else None
    train = stdlib_corpus(limit)
    test = make_test_set(train, 200 if scale == "quick" else 1000)
    train_path, test_path = workdir / "train.parquet", workdir / "test.parquet"
    train.write_parquet(train_path)
    test.write_parquet(test_path)
    return str(train_path), str(test_path), float(train["text"].str.len_bytes().sum()) / 1e6


# Imported before each side's clock starts: the comparison is of audit work, not of import time. Each list holds
# what that side's run imports (`sys.modules` before and after a run): ours the fold, the report and jinja2;
# datatrove's English word tokenizer spaCy (and torch through thinc, ~1,700 modules). Until wave 25 spaCy was
# imported on datatrove's clock: ~2 s of its ~30 s, a looser baseline by ~7%.
OURS_MODULES = ("stages.leakage", "pipeline.partition_fold", "stages.leakage.report", "jinja2")
DATATROVE_MODULES = ("datatrove.pipeline.decont.n_grams", "datatrove.utils.word_tokenizers", "datatrove.data",
                     "xxhash", "spacy", "spacy.lang.en", "spacy_legacy", "spacy_loggers")


def run_ours(train_path: str, test_path: str, batch_rows: int = 20_000) -> dict:
    """The n-gram audit end to end; `cpu_s` is the process's CPU time (all threads), steadier than wall on a shared machine."""
    import time

    from stages.leakage import LeakageAudit

    cpu = time.process_time()
    with tempfile.TemporaryDirectory(prefix="bench-leak-") as workdir:
        result = LeakageAudit(n=N, chunk_overlap=False, semantic=False, report_items=5, batch_rows=batch_rows).execute(
            train=train_path, test=test_path, workdir=workdir
        )
        cpu = time.process_time() - cpu
        return {"dirty": int((result.table["verdict"] != "clean").sum()), "stats": result.stats, "cpu_s": cpu,
                "verdicts": result.table["verdict"].value_counts().sort("verdict").rows()}


def run_datatrove(train_path: str, test_path: str) -> dict:
    from types import SimpleNamespace

    import xxhash
    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter, NGramsDecontIndexer
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    config = NGramsDecontConfig(n_grams=N, find_query_ngrams=True, find_overlap_ngrams=False)
    index_dir = tempfile.mkdtemp(prefix="bench-dt-index-")
    # The indexer's own hashing code, called on a stand-in object: constructing the indexer would
    # demand lighteval, which only its task loader (not used here) needs.
    # datatrove's xxhash64 passes a str, which xxhash 4 (installed here) refuses; xxhash 3 encoded it
    # as UTF-8, which is exactly what this wrapper does.
    def hash_func(text: str) -> int:
        return xxhash.xxh64_intdigest(text.encode("utf-8"))

    indexer = SimpleNamespace(config=config, tokenizer=load_word_tokenizer("en"), hash_func=hash_func)
    hashes = set()
    for text in pl.read_parquet(test_path)["text"].to_list():
        hashes.update(NGramsDecontIndexer.compute_hashes(indexer, text))
    np.array(sorted(hashes), dtype=config.hash_config.np_descr).tofile(Path(index_dir) / "test.index.hashes")
    filt = NGramsDecontFilter(index_folder=index_dir, config=config)
    filt.hash_func = hash_func
    removed = 0
    for batch in pl.read_parquet(train_path).iter_slices(2000):
        for doc_id, text in zip(batch["id"].to_list(), batch["text"].to_list()):
            if filt.filter(Document(text=text, id=str(doc_id))) is not True:
                removed += 1
    shutil.rmtree(index_dir, ignore_errors=True)
    return {"removed_train_docs": removed}


def minimal_loop(train_path: str, test_path: str, threads: int = 1, n: int = N) -> dict:
    """The issue's baseline: a minimal read-normalise-hash-probe loop doing the n-gram pass's work.

    Read each row group's text, lower-case it, split it into words with the text core's regex
    (polars), hash the words (polars), hash every n-gram inside a document (n multiply-adds) and
    probe them against the test n-grams (a sorted array). No findings, spans or report. With
    `threads` > 1 the row groups are shared out to threads (polars and NumPy release the GIL).
    """
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    from stages.text import WORD_REGEX
    from stages.text.ngrams import MULTIPLIERS

    def ngrams(texts: pl.Series) -> np.ndarray:
        words = texts.str.to_lowercase().str.extract_all(WORD_REGEX)
        counts = words.list.len().fill_null(0).to_numpy()
        tokens = words.explode().drop_nulls().hash(seed=1).to_numpy()
        m = tokens.size - n + 1
        if m <= 0:
            return np.empty(0, np.uint64)
        acc = tokens[:m] * MULTIPLIERS[0]
        for j in range(1, n):
            acc += tokens[j : j + m] * MULTIPLIERS[j]
        doc = np.repeat(np.arange(counts.size), counts)
        return acc[doc[:m] == doc[n - 1 :]]

    test = np.unique(ngrams(pl.read_parquet(test_path)["text"]))
    pf = pq.ParquetFile(train_path)

    def groups(which: range) -> tuple[int, int]:
        hits = nbytes = 0
        reader = pq.ParquetFile(train_path)
        for g in which:
            texts = pl.from_arrow(reader.read_row_group(g, columns=["text"]))["text"]
            nbytes += int(texts.str.len_bytes().sum())
            h = ngrams(texts)
            index = np.minimum(np.searchsorted(test, h), max(test.size - 1, 0))
            hits += int((test[index] == h).sum()) if test.size else 0
        return hits, nbytes

    shares = [range(t, pf.num_row_groups, threads) for t in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(groups, shares))
    return {"hits": sum(r[0] for r in results), "bytes": sum(r[1] for r in results)}


def run_audit_file(train_path: str, test_path: str) -> dict:
    """Our n-gram audit on a Parquet file (default local executor: maps on the cores it may use)."""
    from stages.leakage import LeakageAudit

    with tempfile.TemporaryDirectory(prefix="bench-leak-") as workdir:
        result = LeakageAudit(n=N, chunk_overlap=False, semantic=False, report_items=5).execute(
            train=train_path, test=test_path, workdir=workdir
        )
        verdicts = result.table["verdict"].value_counts().sort("verdict").rows()
        return {"verdicts": verdicts, "stats": result.stats}


def run_speed(sizes_mb: tuple[int, ...] = (32, 126), repeats: int = 3, datatrove_at: int = 32) -> list[dict]:
    """n-gram audit throughput on distinct real sources vs the minimal loop (1 and 2 threads) and datatrove.

    Corpus and test set: `bench.bench_ray_audit` (stdlib + site-packages sources, 8 MB row groups,
    1,000 items of 60 words, half leaked). Cases alternate within each repeat (ours, loop x1,
    loop x2, datatrove), each in a fresh process; medians over repeats, spreads in the notes.
    """
    from bench.bench_ray_audit import build_corpus, build_test_set

    rows = []
    for mb in sizes_mb:
        corpus = build_corpus(mb)
        test = build_test_set(corpus)
        size = float(pl.scan_parquet(corpus).select(pl.col("text").str.len_bytes().sum()).collect().item()) / 1e6
        cases = {"ours": (run_audit_file, OURS_MODULES), "loop1": (minimal_loop, ()), "loop2": (minimal_loop, ())}
        if mb == datatrove_at and _datatrove_available():
            cases["datatrove"] = (run_datatrove, DATATROVE_MODULES)
        times: dict[str, list[float]] = {k: [] for k in cases}
        rss: dict[str, float] = {}
        ours_out = None
        for r in range(repeats):
            for name, (fn, preload) in cases.items():
                if name == "datatrove" and r > 0:
                    continue  # minutes per run: once
                args = (str(corpus), str(test)) + ((2 if name == "loop2" else 1,) if name.startswith("loop") else ())
                wall, peak, out = in_fresh_process(fn, *args, preload=preload)
                times[name].append(wall)
                rss[name] = max(rss.get(name, 0.0), peak)
                ours_out = out if name == "ours" else ours_out
        med = {k: statistics.median(v) for k, v in times.items()}
        spread = {k: f"{min(v):.2f}-{max(v):.2f}s" for k, v in times.items()}
        for name, label in (("loop2", "minimal loop, 2 threads"), ("loop1", "minimal loop, 1 thread"),
                            ("datatrove", "datatrove NGramsDecontFilter (same n, same texts)")):
            if name not in med:
                continue
            rows.append({
                "benchmark": "leakage", "case": f"n-gram audit n={N}, {size:.1f} MB distinct sources, 1,000 items",
                "metric": "MB/s", "value": round(size / med["ours"], 2), "baseline": label,
                "baseline_value": round(size / med[name], 2), "ratio": round(med[name] / med["ours"], 2),
                "ratio_meaning": "ours/baseline throughput", "peak_rss_mb": round(rss["ours"], 1),
                "baseline_peak_rss_mb": round(rss[name], 1),
                "notes": f"medians of {len(times['ours'])} (ours) / {len(times[name])} alternated runs; spreads {spread}; "
                         f"ours end to end incl. findings+report, verdicts {ours_out['verdicts']}",
            })
    return rows


def run_semantic(train_path: str, test_path: str, backend: str, max_mb: float | None, test_items: int = 200) -> dict:
    from stages.leakage import LeakageAudit

    train = pl.read_parquet(train_path)
    if max_mb is not None:
        size = train["text"].str.len_bytes().cum_sum() / 1e6
        train = train.filter(size <= max(max_mb, float(size[0])))
    mb = float(train["text"].str.len_bytes().sum()) / 1e6
    test = pl.read_parquet(test_path).head(test_items)
    import time

    from stages.embedding.models import load_sentence_transformer, load_static_model

    # The model is loaded before the clock (once per process in a pipeline too). The pass is timed by
    # wall: `chunk_pass_s` sums the maps' times, which run on threads when the input has partitions.
    (load_static_model if backend == "static" else load_sentence_transformer)()
    # cache=False: both backends embed every chunk (MiniLM would otherwise reuse vectors of an earlier run).
    with tempfile.TemporaryDirectory(prefix="bench-sem-") as workdir:
        wall = time.perf_counter()
        result = LeakageAudit(ngram=False, backend=backend, report_items=5, cache=False).execute(
            train=train, test=test, workdir=workdir
        )
        return {"mb": mb, "wall_s": time.perf_counter() - wall, "maps_s": result.stats["chunk_pass_s"],
                "partitions": result.stats.get("partitions"), "chunks": result.stats["train_chunks_embedded"]}


def _datatrove_available() -> bool:
    try:
        import datatrove.pipeline.decont.n_grams  # noqa: F401
        from datatrove.utils.word_tokenizers import load_word_tokenizer

        load_word_tokenizer("en")
        return True
    except Exception:  # noqa: BLE001 - any missing piece means no baseline
        return False


def _alternated(train_path: str, test_path: str, repeats: int, with_datatrove: bool) -> tuple[list, list]:
    """Ours and datatrove alternated (ours, datatrove, ours, ...), each in a fresh process with its imports done."""
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(in_fresh_process(run_ours, train_path, test_path, preload=OURS_MODULES))
        if with_datatrove:
            theirs.append(in_fresh_process(run_datatrove, train_path, test_path, preload=DATATROVE_MODULES))
    return ours, theirs


def _pair_ratios(ours: list, theirs: list) -> list[float]:
    """datatrove's wall over ours, per alternated pair, sorted (the row's ratio is their median)."""
    return sorted(t[0] / o[0] for o, t in zip(ours, theirs))


def _without_huge_pages(train_path: str, test_path: str, mb: float, repeats: int) -> dict:
    """The same comparison with both sides in processes without transparent huge pages, as the `pipeline` command
    runs (pipeline.cli.THP_SETTING): on this project's VMs a huge-page fault costs milliseconds of system time, a
    varying number per fresh process, the spread of the row above. Alternated pairs again."""
    from unittest import mock

    from pipeline.cli import THP_SETTING

    with mock.patch.dict(os.environ, dict([THP_SETTING])):  # the spawned processes inherit it
        ours, theirs = _alternated(train_path, test_path, repeats, with_datatrove=True)
    ours_s, theirs_s = statistics.median(o[0] for o in ours), statistics.median(t[0] for t in theirs)
    pairs = _pair_ratios(ours, theirs)
    return {
        "benchmark": "leakage", "case": f"n-gram audit, n={N}, {mb:.1f} MB train, both sides without transparent "
                                        f"huge pages ({THP_SETTING[0]}={THP_SETTING[1]}, as the pipeline command runs)",
        "metric": "MB/s", "value": round(mb / ours_s, 2), "peak_rss_mb": round(max(o[1] for o in ours), 1),
        "baseline": "datatrove NGramsDecontFilter (same n, same texts, same setting)",
        "baseline_value": round(mb / theirs_s, 3), "ratio": round(statistics.median(pairs), 1),
        "ratio_meaning": "ours/baseline throughput (median of alternated pairs)",
        "baseline_peak_rss_mb": round(max(t[1] for t in theirs), 1),
        "notes": f"walls ours {min(o[0] for o in ours):.2f}-{max(o[0] for o in ours):.2f}s, datatrove "
                 f"{min(t[0] for t in theirs):.1f}-{max(t[0] for t in theirs):.1f}s; pair ratios "
                 f"{', '.join(f'{r:.1f}' for r in pairs)}",
    }


def run(scale: str = "full") -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench-leakage-") as workdir:  # the data goes with the run
        return _run(scale, Path(workdir))


def _run(scale: str, workdir: Path) -> list[dict]:
    train_path, test_path, mb = _paths(scale, workdir)
    repeats = 1 if scale == "quick" else 3
    rows = []
    # Ours and datatrove alternate (ours, datatrove, ours, ...), and the ratio is the median of the pairs'
    # ratios: datatrove's ~40 s runs read 0.61-0.93 MB/s across sessions on this shared machine while ours
    # stayed at 44 MB/s, so two datatrove runs after all of ours gave ratios of 47-60x for the same code.
    with_datatrove = _datatrove_available()
    ours, theirs = _alternated(train_path, test_path, repeats, with_datatrove)
    ours_s = statistics.median(o[0] for o in ours)
    ours_rss = max(o[1] for o in ours)
    cpu = sorted(o[2]["cpu_s"] for o in ours)
    row = {
        "benchmark": "leakage", "case": f"n-gram audit, n={N}, {mb:.1f} MB train, stdlib sources",
        "metric": "MB/s", "value": round(mb / ours_s, 2), "peak_rss_mb": round(ours_rss, 1),
        "notes": f"end to end incl. reading Parquet and writing findings/report; dirty items {ours[0][2]['dirty']}; "
                 f"wall {min(o[0] for o in ours):.2f}-{max(o[0] for o in ours):.2f}s, CPU s median {cpu[len(cpu) // 2]:.2f} "
                 f"({cpu[0]:.2f}-{cpu[-1]:.2f}, all threads)",
    }
    if with_datatrove:
        theirs_s = statistics.median(t[0] for t in theirs)
        pairs = _pair_ratios(ours, theirs)
        row.update(
            baseline="datatrove NGramsDecontFilter (same n, same texts)", baseline_value=round(mb / theirs_s, 3),
            ratio=round(statistics.median(pairs), 1), ratio_meaning="ours/baseline throughput (median of alternated pairs)",
            baseline_peak_rss_mb=round(max(t[1] for t in theirs), 1),
        )
        row["notes"] += (f"; datatrove removed {theirs[0][2]['removed_train_docs']} train docs; datatrove walls "
                         f"{min(t[0] for t in theirs):.1f}-{max(t[0] for t in theirs):.1f}s; pair ratios "
                         f"{', '.join(f'{r:.1f}' for r in pairs)}")
    else:
        row.update(baseline="datatrove (not installed)", baseline_value=None, ratio=None)
    rows.append(row)
    if with_datatrove and scale != "quick":
        rows.append(_without_huge_pages(train_path, test_path, mb, repeats))
    stream = statistics.median(o[2]["stats"]["ngram_mb_per_s"] for o in ours)
    rows.append({
        **{k: v for k, v in row.items() if k.startswith("baseline") or k == "ratio_meaning"},
        "benchmark": "leakage", "case": f"n-gram streaming pass only (tokenise, hash, probe), n={N}, {mb:.1f} MB",
        "metric": "MB/s", "value": stream, "peak_rss_mb": row["peak_rss_mb"],
        "ratio": round(stream / row["baseline_value"], 1) if row.get("baseline_value") else None,
        "ratio_meaning": "ours/baseline throughput (datatrove's median)",
        "notes": "time inside the training-corpus loop only (the part that grows with the corpus)",
    })
    if scale != "quick":
        # Memory follows the test set: the same audit over 1x and 4x the corpus (Parquet parts on
        # disk, 200-row batches) should peak at about the same RSS (the wave-2/3 case, kept for comparison).
        big = workdir / "train4"
        big.mkdir()
        for i in range(4):
            pl.read_parquet(train_path).with_columns(pl.col("id") + f"#{i}").write_parquet(big / f"part-{i:05d}.parquet")
        one = in_fresh_process(run_ours, train_path, test_path, 200)
        four = in_fresh_process(run_ours, str(big), test_path, 200)
        rows.append({
            "benchmark": "leakage", "case": f"n-gram audit memory, 4x corpus ({4 * mb:.0f} MB) vs 1x, 200-row batches",
            "metric": "peak RSS MB", "value": round(four[1], 1), "baseline": f"same audit on 1x ({mb:.0f} MB)",
            "baseline_value": round(one[1], 1), "ratio": round(four[1] / one[1], 2),
            "ratio_meaning": "peak RSS 4x corpus / 1x corpus (1.0 = bounded by the test set)",
            "peak_rss_mb": round(four[1], 1), "notes": f"4x run {4 * mb / four[0]:.1f} MB/s end to end, "
                                                       f"{four[2]['cpu_s']:.2f} CPU s; 4 copies of the 1x corpus",
        })
        from bench.leakage_memory import run_memory

        rows += run_memory()
    # sentence-transformers runs at tens of chunks per second on 2 CPU cores: a slice of the corpus.
    sem_mb = {"static": None, "sentence-transformers": 0.01 if scale == "quick" else 0.25}
    sem_items = 20 if scale == "quick" else 200
    static = None
    for backend, limit in sem_mb.items():
        wall, rss, out = in_fresh_process(run_semantic, train_path, test_path, backend, limit, sem_items)
        rate = out["mb"] / max(out["wall_s"], 1e-9)
        static = static or rate
        rows.append({
            "benchmark": "leakage", "case": f"chunk+semantic pass, backend={backend}, {out['mb']:.2f} MB train",
            "metric": "MB/s (audit call's wall, model loaded before)", "value": round(rate, 3),
            "baseline": "static backend, same run", "baseline_value": round(static, 3), "ratio": round(rate / static, 4),
            "ratio_meaning": "this backend / static throughput", "peak_rss_mb": round(rss, 1),
            "notes": f"{out['chunks']} chunks embedded ({out['chunks'] / max(out['wall_s'], 1e-9):.0f} chunks/s), "
                     f"{sem_items} test items, 64-word chunks, stride 32, {out['partitions']} partition(s) "
                     f"(maps {out['maps_s']:.2f} s summed); process wall {wall:.1f}s incl. model load",
        })
    return rows


# ---------------------------------------------------------------------------------- calibration


def calibration_set(per_kind: int = 40, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Training = pydoc topics; test = planted leaks of every kind + clean controls (stdlib docstrings).

    Controls are module docstrings of the standard library: the same domain and vocabulary as the
    training text (hard negatives), written separately from the language reference.
    """
    import importlib
    import inspect
    import pkgutil
    from pydoc_data.topics import topics

    from stages.leakage import PLANT_KINDS, plant

    rng = np.random.default_rng(seed)
    names = sorted(topics)
    train = pl.DataFrame({"id": names, "text": [topics[t] for t in names]})
    controls = []
    for module in sorted(m.name for m in pkgutil.iter_modules() if not m.name.startswith("_")):
        if module in ("antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo") or "test" in module:
            continue
        try:
            doc = inspect.getdoc(importlib.import_module(module)) or ""
        except Exception:  # noqa: BLE001 - some modules cannot import here
            continue
        words = doc.split()
        if len(words) >= 40 and module in sys.stdlib_module_names:
            controls.append((f"control:{module}", " ".join(words[:80])))
    ids, texts, kinds = [], [], []
    for kind in PLANT_KINDS:
        for i in range(per_kind):
            words = topics[names[int(rng.integers(0, len(names)))]].split()
            start = int(rng.integers(0, max(len(words) - 80, 1)))
            source = " ".join(words[start : start + 80])
            host = controls[int(rng.integers(0, len(controls)))][1]
            ids.append(f"{kind}:{i}")
            texts.append(plant(source, kind, rng, host=host))
            kinds.append(kind)
    for cid, text in controls:
        ids.append(cid)
        texts.append(text)
        kinds.append("control")
    return train, pl.DataFrame({"id": ids, "text": texts, "kind": kinds})


def calibrate(backend: str = "static") -> pl.DataFrame:
    from stages.leakage import LeakageAudit

    train, test = calibration_set()
    findings = LeakageAudit(backend=backend, subset_column="kind").apply(train=train, test=test)
    return findings.group_by("subset").agg(
        pl.len().alias("items"),
        (pl.col("verdict") != "clean").mean().round(3).alias("flagged"),
        (pl.col("verdict") == "contaminated").mean().round(3).alias("contaminated"),
        pl.col("longest_span_tokens").median().alias("span_median"),
        pl.col("chunk_overlap_ratio").median().round(3).alias("r_median"),
        pl.col("chunk_overlap_ratio").max().round(3).alias("r_max"),
        pl.col("max_similarity").min().round(3).alias("sim_min"),
        pl.col("max_similarity").quantile(0.1).round(3).alias("sim_p10"),
        pl.col("max_similarity").median().round(3).alias("sim_median"),
        pl.col("max_similarity").quantile(0.99).round(3).alias("sim_p99"),
        pl.col("max_similarity").max().round(3).alias("sim_max"),
    ).sort("subset")


if __name__ == "__main__":
    if "--paraphrase" in sys.argv:
        import json

        from bench.leakage_paraphrase import study

        where = sys.argv[sys.argv.index("--humaneval") + 1] if "--humaneval" in sys.argv else None
        mmlu = sys.argv[sys.argv.index("--mmlu") + 1] if "--mmlu" in sys.argv else None
        print(json.dumps(study("--quick" in sys.argv, where, mmlu), indent=1))
    elif "--calibrate" in sys.argv:
        backend = sys.argv[sys.argv.index("--calibrate") + 1] if len(sys.argv) > sys.argv.index("--calibrate") + 1 else "static"
        with pl.Config(tbl_cols=20, tbl_width_chars=200):
            print(calibrate(backend))
    elif "--speed" in sys.argv:
        sizes = tuple(int(a) for a in sys.argv[sys.argv.index("--speed") + 1:] if a.isdigit()) or (32, 126)
        print_rows(run_speed(sizes))
    else:
        print_rows(run("quick" if "--quick" in sys.argv else "full"))
