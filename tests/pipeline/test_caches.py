"""`pipeline cache` lists the embedding, static-model, report-template and Arrow caches with sizes, and clears them (all or by age)."""

from __future__ import annotations

import json
import os
import time
from pydoc_data.topics import topics

import numpy as np
import polars as pl
from conftest import run_cli

import pipeline
from stages import _report
from stages.embedding import EmbeddingCache


def _fill(tmp_path, monkeypatch):
    """One entry of each cache, made by the code that normally makes them."""
    cache, models = tmp_path / "cache", tmp_path / "models"
    monkeypatch.setenv("CORPUSFORGE_CACHE", str(cache))
    monkeypatch.setenv("CORPUSFORGE_MODEL_CACHE", str(models))
    names = sorted(topics)[:50]
    pl.DataFrame({"id": names, "text": [topics[n] for n in names]}).write_parquet(tmp_path / "docs.parquet")
    pipeline.load_dataset(tmp_path / "docs.parquet")  # -> an Arrow copy in the cache
    _report._environment.cache_clear()  # as in a new process: the template compiled once, into this cache
    _report.render("index.html.j2", title="Reports", rows=[], runs=0)
    _report._environment.cache_clear()
    workdir = tmp_path / "runs"
    shards = EmbeddingCache(workdir / ".cache" / "embeddings" / "static-abc", dim=8)
    rng = np.random.default_rng(0)
    for _ in range(2):
        keys = rng.integers(0, 2**63, size=(2, 100), dtype=np.uint64)
        shards.store(keys[0], keys[1], rng.standard_normal((100, 8)).astype(np.float32))
    (models / "minilm-v1").mkdir(parents=True)
    (models / "minilm-v1" / "table.npy").write_bytes(np.zeros(1000, np.float32).tobytes())
    return workdir


def _templates(tmp_path) -> int:
    return len(list((tmp_path / "cache" / "report-templates").glob("*.cache")))


def _listing(workdir) -> dict:
    proc = run_cli("cache", "--workdir", str(workdir), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_lists_every_cache_with_sizes(tmp_path, monkeypatch):
    workdir = _fill(tmp_path, monkeypatch)
    shown = _listing(workdir)
    templates = _templates(tmp_path)  # the index page, the base page it extends, the stylesheet it includes
    assert templates >= 2
    assert {k: v["entries"] for k, v in shown.items()} == {"arrow": 1, "embeddings": 2, "report-templates": templates,
                                                                "static-models": 1}
    assert shown["static-models"]["bytes"] == 4000
    arrow = next((tmp_path / "cache" / "arrow").glob("*.arrow"))
    assert shown["arrow"]["bytes"] == arrow.stat().st_size
    assert str(workdir.resolve() / ".cache" / "embeddings") in shown["embeddings"]["roots"]
    text = run_cli("cache", "--workdir", str(workdir)).stdout
    assert "static-models" in text and "3.9 KiB" in text


def test_clears_by_age_by_cache_and_all(tmp_path, monkeypatch):
    workdir = _fill(tmp_path, monkeypatch)
    templates = _templates(tmp_path)
    old_shard = sorted((workdir / ".cache" / "embeddings" / "static-abc").glob("shard-*.parquet"))[0]
    long_ago = time.time() - 40 * 86400
    os.utime(old_shard, (long_ago, long_ago))
    proc = run_cli("cache", "clear", "--older-than", "30d", "--workdir", str(workdir))
    assert proc.returncode == 0 and proc.stdout.startswith("removed 1 entry "), proc.stderr
    assert not old_shard.exists()
    assert {k: v["entries"] for k, v in _listing(workdir).items()} == {"arrow": 1, "embeddings": 1,
                                                                             "report-templates": templates, "static-models": 1}
    assert run_cli("cache", "clear", "--older-than", "2000-01-01", "--workdir", str(workdir)).stdout.startswith(
        "removed 0 entries")
    assert run_cli("cache", "clear", "--cache", "arrow", "--workdir", str(workdir)).returncode == 0
    assert {k: v["entries"] for k, v in _listing(workdir).items()} == {"arrow": 0, "embeddings": 1,
                                                                             "report-templates": templates, "static-models": 1}
    assert run_cli("cache", "clear", "--workdir", str(workdir)).returncode == 0
    assert {v["entries"] for v in _listing(workdir).values()} == {0}


def test_bad_cache_name_or_date_is_one_line(tmp_path):
    bad = run_cli("cache", "clear", "--cache", "embedings", "--workdir", str(tmp_path))
    assert bad.returncode == 2 and "caches are: arrow, embeddings, report-templates, static-models" in bad.stderr
    date = run_cli("cache", "clear", "--older-than", "last tuesday", "--workdir", str(tmp_path))
    assert date.returncode == 2 and len(date.stderr.strip().splitlines()) == 1 and "30d" in date.stderr
