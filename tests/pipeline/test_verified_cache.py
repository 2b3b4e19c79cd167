"""A cache hit is trusted only when the step's files are what its manifest recorded.

One tampering case per rule (issue #17): flipped bytes, a same-size edit, a stray part, a deleted
artefact, a manifest without `output`, a garbage index.faiss, a truncated embedding-cache shard.
Each must recompute the damaged step (saying why) and hand downstream steps the right data.
"""

from __future__ import annotations

import json
import os

import numpy as np
import polars as pl
import pytest
from conftest import run_cli, write_config

from pipeline import run_pipeline
from pipeline.errors import InputDataError, ParamError
from pipeline.registry import STAGES
from pipeline.stage import Context, Stage

TEXTS = [f"document {i} alpha beta gamma {i * 7}" for i in range(40)]


@pytest.fixture
def report_stage():
    """A test stage that passes its input through and writes report.html beside it.

    Registered only while a test runs, so the library-wide conformance test never sees it.
    """

    class WritesReport(Stage):
        """Test stage: passes its input through and writes a report artefact beside it."""

        name = "test_trust_report"

        def run(self, ctx: Context, data):
            ctx.artefact_path("report.html").write_text("<p>report</p>")
            return data.collect()

    yield WritesReport
    STAGES.pop("test_trust_report", None)


def _config(tmp_path):
    data = tmp_path / "in.parquet"
    if not data.exists():
        pl.DataFrame({"id": [f"r{i}" for i in range(len(TEXTS))], "text": TEXTS}).write_parquet(
            data, compression="uncompressed")
    return {"name": "tamper", "seed": 0, "steps": [
        {"id": "copy", "stage": "select", "inputs": str(data)},
        {"id": "report", "stage": "test_trust_report", "inputs": "copy"},
        {"id": "down", "stage": "select", "inputs": "report", "params": {"columns": ["text"]}},
    ]}


@pytest.fixture
def run(tmp_path, report_stage):
    config = _config(tmp_path)
    workdir = tmp_path / "runs"
    first = run_pipeline(config, workdir=workdir)
    assert first.ran == ["copy", "report", "down"]
    return config, workdir, workdir / "tamper"


def _part(run_dir, step="copy"):
    return run_dir / step / "part-00000-000.parquet"


def _again(config, workdir, verify="fast"):
    report = run_pipeline(config, workdir=workdir, verify=verify)
    down = pl.read_parquet(workdir / "tamper" / "down" / "part-*.parquet")
    assert down["text"].to_list() == TEXTS  # downstream always sees the right rows
    return report


def test_an_untouched_run_is_all_cache_hits(run):
    config, workdir, _ = run
    assert _again(config, workdir).cached == ["copy", "report", "down"]
    assert _again(config, workdir, verify="full").cached == ["copy", "report", "down"]


def test_flipped_bytes_recompute_the_step(run):
    config, workdir, run_dir = run
    part = _part(run_dir)
    raw = bytearray(part.read_bytes())
    middle = len(raw) // 2
    raw[middle] ^= 0xFF
    part.write_bytes(bytes(raw))
    report = _again(config, workdir)
    assert report.ran == ["copy"] and report.cached == ["report", "down"]
    assert "part-00000-000.parquet: content differs" in report.step("copy").recomputed_because


def _edit_text_in_place(part):
    """Rewrite the part with one text changed and the file size unchanged (a hand edit a size check misses).

    The edited table is padded with footer metadata until its size is exactly the original's.
    """
    import pyarrow.parquet as pq

    size = part.stat().st_size
    table = pq.read_table(part)
    texts = [t.replace("document 17 alpha", "document 17 ALPHA") for t in table.column("text").to_pylist()]
    edited = table.set_column(table.schema.get_field_index("text"), "text", [texts]).replace_schema_metadata(None)
    candidate = part.with_name("candidate.tmp")
    for pad in range(4096):
        with pq.ParquetWriter(candidate, edited.schema, compression="zstd", store_schema=False) as writer:
            writer.write_table(edited)
            writer.add_key_value_metadata({"pad": "x" * pad})
        if candidate.stat().st_size == size:
            os.replace(candidate, part)
            return
    raise AssertionError("no same-size edit found")


def test_a_same_size_edit_recomputes_the_step(run):
    config, workdir, run_dir = run
    before = _part(run_dir).stat().st_size
    _edit_text_in_place(_part(run_dir))
    assert _part(run_dir).stat().st_size == before
    report = _again(config, workdir)
    assert report.ran == ["copy"] and "content differs" in report.step("copy").recomputed_because


def test_an_edit_that_restores_the_mtime_is_caught_by_full(run):
    config, workdir, run_dir = run
    part = _part(run_dir)
    st = part.stat()
    _edit_text_in_place(part)
    os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns))
    # fast trusts an unchanged size and mtime (that is its documented limit); full re-hashes.
    assert run_pipeline(config, workdir=workdir, verify="fast").ran == []
    report = _again(config, workdir, verify="full")
    assert report.ran == ["copy"] and "content differs" in report.step("copy").recomputed_because


def test_a_touched_but_intact_part_is_still_a_cache_hit(run):
    config, workdir, run_dir = run
    os.utime(_part(run_dir))  # e.g. copied without -p: re-hashed, found intact
    assert _again(config, workdir).cached == ["copy", "report", "down"]


def test_a_stray_part_recomputes_the_step(run):
    config, workdir, run_dir = run
    (run_dir / "copy" / "part-00099.parquet").write_bytes(_part(run_dir).read_bytes())
    report = _again(config, workdir)
    assert report.ran == ["copy"]
    assert report.step("copy").recomputed_because == "part-00099.parquet is not in the manifest"
    assert not (run_dir / "copy" / "part-00099.parquet").exists()


def test_a_deleted_artefact_recomputes_the_step(run):
    config, workdir, run_dir = run
    (run_dir / "report" / "report.html").unlink()
    report = _again(config, workdir)
    assert report.ran == ["report"] and report.step("report").recomputed_because == "report.html is missing"
    assert (run_dir / "report" / "report.html").read_text() == "<p>report</p>"


def test_a_manifest_without_output_recomputes_instead_of_crashing(run):
    config, workdir, run_dir = run
    manifest_path = run_dir / "copy" / "_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["output"]
    manifest_path.write_text(json.dumps(manifest))
    report = _again(config, workdir)
    assert report.ran == ["copy"] and "no 'output' record" in report.step("copy").recomputed_because


def test_a_damaged_input_step_is_refused_under_only(run):
    config, workdir, run_dir = run
    _edit_text_in_place(_part(run_dir))
    with pytest.raises(InputDataError, match="the output of step 'copy' differs from its manifest"):
        run_pipeline(config, workdir=workdir, only="report", force=True)


def test_verify_off_checks_sizes_only_and_bad_modes_are_refused(run):
    config, workdir, run_dir = run
    _edit_text_in_place(_part(run_dir))
    assert run_pipeline(config, workdir=workdir, verify="off").ran == []
    with pytest.raises(ParamError, match="verify"):
        run_pipeline(config, workdir=workdir, verify="sometimes")


def test_the_cli_takes_verify(run, tmp_path):
    config, workdir, _ = run
    text = "name: tamper\nseed: 0\nsteps:\n  - id: copy\n    stage: select\n" \
           f"    inputs: {config['steps'][0]['inputs']}\n"
    cfg = write_config(tmp_path / "c.yaml", text)
    ok = run_cli("run", str(cfg), "--workdir", str(workdir), "--verify", "full")
    assert ok.returncode == 0 and "cached, unchanged" in ok.stdout, ok.stderr
    bad = run_cli("run", str(cfg), "--workdir", str(workdir), "--verify", "never")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


# ------------------------------------------------------------------ artefacts and caches of stages


def _vectors(n=64, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_a_garbage_index_faiss_is_rebuilt(tmp_path):
    pytest.importorskip("faiss")
    from stages.embedding import vectors_to_series

    data = tmp_path / "vectors.parquet"
    pl.DataFrame({"chunk_id": [f"c{i}" for i in range(64)], "doc_id": [f"d{i // 4}" for i in range(64)]}) \
        .with_columns(vectors_to_series("embedding", _vectors())).write_parquet(data)
    config = {"name": "faissy", "seed": 0, "steps": [
        {"id": "index", "stage": "index", "inputs": str(data)},
        {"id": "hits", "stage": "retrieve", "inputs": {"queries": str(data), "index": "index"}, "params": {"k": 3}},
    ]}
    workdir = tmp_path / "runs"
    run_pipeline(config, workdir=workdir)
    expected = pl.read_parquet(workdir / "faissy" / "hits" / "part-*.parquet")
    index_file = workdir / "faissy" / "index" / "index.faiss"
    index_file.write_bytes(b"\x00garbage" * (index_file.stat().st_size // 8) + b"\x00" * (index_file.stat().st_size % 8))
    # Asked for the retrieval alone, the damaged index is refused in one line, not a crash...
    with pytest.raises(InputDataError, match=r"index\.faiss"):
        run_pipeline(config, workdir=workdir, only="hits", force=True)
    # ...and a normal run rebuilds it, then retrieves exactly as before.
    report = run_pipeline(config, workdir=workdir, force=False)
    assert "index.faiss: content differs" in report.step("index").recomputed_because
    assert pl.read_parquet(workdir / "faissy" / "hits" / "part-*.parquet").equals(expected)


def test_a_truncated_embedding_cache_shard_is_dropped_and_rebuilt(tmp_path):
    from stages.embedding import EmbeddingCache

    root = tmp_path / "cache"
    vectors = _vectors(8)
    key_hi = np.arange(8, dtype=np.uint64)
    key_lo = np.arange(8, dtype=np.uint64) + 100
    EmbeddingCache(root, 16).store(key_hi, key_lo, vectors)
    (shard,) = root.glob("shard-*.parquet")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    cache = EmbeddingCache(root, 16)
    found, got = cache.lookup(key_hi, key_lo)
    assert not found.any() and got.shape == (0, 16)
    assert not shard.exists()
    cache.store(key_hi, key_lo, vectors)  # the texts are embedded again and stored again
    found, got = EmbeddingCache(root, 16).lookup(key_hi, key_lo)
    assert found.all() and np.array_equal(got, vectors)


def test_a_cache_shard_damaged_after_its_keys_were_read_becomes_misses(tmp_path):
    from stages.embedding import EmbeddingCache

    root = tmp_path / "cache"
    key_hi, key_lo = np.arange(4, dtype=np.uint64), np.arange(4, dtype=np.uint64)
    cache = EmbeddingCache(root, 16)
    cache.store(key_hi, key_lo, _vectors(4))
    assert cache.lookup(key_hi, key_lo)[0].all()
    (shard,) = root.glob("shard-*.parquet")
    shard.write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1")
    found, got = cache.lookup(key_hi, key_lo)
    assert not found.any() and got.shape == (0, 16)
    cache.store(key_hi, key_lo, _vectors(4))
    assert cache.lookup(key_hi, key_lo)[0].all()


def test_a_manifest_from_before_per_part_digests_is_still_verified(run):
    from pipeline.digests import fingerprint_files

    config, workdir, run_dir = run
    manifest_path = run_dir / "copy" / "_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for f in manifest["output"]["files"]:
        del f["xxh3"]
    del manifest["mtimes"]
    manifest["output"]["fingerprint"] = fingerprint_files([_part(run_dir)])  # how it was computed then
    manifest_path.write_text(json.dumps(manifest))
    # (report re-runs once: the fingerprint of its input, as recorded, is a different number now)
    assert "copy" in _again(config, workdir, verify="full").cached
    _edit_text_in_place(_part(run_dir))
    assert run_pipeline(config, workdir=workdir, verify="fast").ran == []  # sizes only: all it can check
    report = _again(config, workdir, verify="full")
    assert report.ran[0] == "copy" and "differs from its fingerprint" in report.step("copy").recomputed_because


def test_parts_are_hashed_while_written(tmp_path):
    from pipeline.digests import describe_table, hash_file
    from pipeline.writing import _WRITTEN_DIGESTS, write_table

    write_table(pl.DataFrame({"n": list(range(30_000))}), tmp_path, rows_per_part=10_000)
    assert len(list(tmp_path.glob("part-*.parquet"))) == 3
    info = describe_table(tmp_path)
    assert all(f["xxh3"] == hash_file(tmp_path / f["name"]) for f in info.files)
    assert not any(k[1] == (tmp_path / "part-00000.parquet").stat().st_ino for k in _WRITTEN_DIGESTS)
