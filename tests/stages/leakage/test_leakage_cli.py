"""`pipeline audit` on real corpus formats; bad inputs exit 2 with one line and overwrite nothing."""

from __future__ import annotations

import gzip
import json
import shutil

import polars as pl
import pyarrow as pa
import pytest
from conftest import run_cli

from stages.sources import PythonStdlib


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """Train: 30 stdlib modules as .jsonl.zst; test: a saved DatasetDict whose `test` split copies 5 of them (rows 5-9)."""
    import datasets

    root = tmp_path_factory.mktemp("audit-formats")
    code = PythonStdlib(limit=40).apply().select("id", "text")
    code.head(30).write_ndjson(root / "train.jsonl")
    with pa.CompressedOutputStream(str(root / "train.jsonl.zst"), "zstd") as out:
        out.write((root / "train.jsonl").read_bytes())
    test = pl.concat([code.slice(5, 5), code.tail(10)])
    datasets.DatasetDict({"validation": datasets.Dataset.from_polars(code.tail(3)),
                          "test": datasets.Dataset.from_polars(test)}).save_to_disk(str(root / "dd"))
    (root / "train.csv.gz").write_bytes(gzip.compress(code.head(30).write_csv().encode()))
    return root


def _audit(*args, workdir):
    return run_cli("audit", *map(str, args), "--workdir", str(workdir), "--no-semantic", "--quiet", timeout=300)


@pytest.fixture(scope="module")
def first_audit(corpora, tmp_path_factory):
    """`pipeline audit train.jsonl.zst dd:test` once for the module: its process and the workdir it wrote.

    Every test starts from that audit; they take a copy of its workdir (see `audited`) instead of each running
    the same audit again (2-4 s each)."""
    workdir = tmp_path_factory.mktemp("first-audit")
    return _audit(corpora / "train.jsonl.zst", f"{corpora / 'dd'}:test", workdir=workdir), workdir


def audited(first_audit, workdir):
    """`workdir` holding what the first audit wrote (file times kept, so its steps are cache hits as they were)."""
    proc, written = first_audit
    assert proc.returncode == 0, proc.stderr
    assert not [p for p in written.rglob("*") if p.is_symlink()]  # a plain tree, so a copy is the same state
    shutil.copytree(written, workdir, dirs_exist_ok=True)
    return proc


def _one_line_exit_2(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    return lines[0]


def test_compressed_jsonl_against_a_datasetdict_split(corpora, first_audit, tmp_path):
    proc = audited(first_audit, tmp_path)
    assert proc.stdout.startswith("15 test items: ")
    findings = pl.read_parquet(tmp_path / "audit" / "audit" / "part-*.parquet")
    assert findings.filter(pl.col("verdict") == "contaminated").height >= 5
    same = _audit(corpora / "train.jsonl.zst", corpora / "dd", "--test-split", "test", workdir=tmp_path)
    assert same.returncode == 0, same.stderr  # the same inputs written another way: not a different audit


def test_second_audit_of_other_inputs_does_not_replace_the_first(corpora, first_audit, tmp_path):
    audited(first_audit, tmp_path)
    report = tmp_path / "audit" / "audit" / "report.html"
    before = report.read_bytes()
    line = _one_line_exit_2(_audit(corpora / "train.csv.gz", f"{corpora / 'dd'}:validation", workdir=tmp_path))
    assert "already holds the audit of" in line and "train.jsonl.zst" in line and "--force" in line
    assert report.read_bytes() == before
    named = _audit(corpora / "train.csv.gz", f"{corpora / 'dd'}:validation", "--name", "validation", workdir=tmp_path)
    assert named.returncode == 0, named.stderr
    assert report.read_bytes() == before and (tmp_path / "validation" / "audit" / "report.html").exists()
    index = (tmp_path / "index.html").read_text()  # the run index links both audits' reports
    assert 'href="audit/audit/report.html"' in index and 'href="validation/audit/report.html"' in index
    forced = _audit(corpora / "train.csv.gz", f"{corpora / 'dd'}:validation", "--force", workdir=tmp_path)
    assert forced.returncode == 0 and forced.stdout.startswith("3 test items")


@pytest.mark.parametrize("case", ["corrupt_gzip", "unknown_split", "unknown_format"])
def test_bad_inputs_exit_2_with_one_line_and_overwrite_nothing(corpora, first_audit, tmp_path, case):
    audited(first_audit, tmp_path)
    step = tmp_path / "audit" / "train"
    manifest = (step / "_manifest.json").read_text()
    train, test = corpora / "train.jsonl.zst", f"{corpora / 'dd'}:test"
    if case == "corrupt_gzip":
        data = (corpora / "train.csv.gz").read_bytes()
        train = tmp_path / "cut.csv.gz"
        train.write_bytes(data[: len(data) // 3])
        expected = ["corrupt or truncated gzip data", "cut.csv.gz"]
    elif case == "unknown_split":
        test = f"{corpora / 'dd'}:tset"
        expected = ["no split 'tset'; available splits: validation, test"]
    else:
        train = tmp_path / "weights.bin"
        train.write_bytes(b"\x00\x01\x02\x03" * 1000)
        expected = ["cannot tell what this file holds", "Parquet, JSON Lines, CSV or plain text", "weights.bin"]
    line = _one_line_exit_2(_audit(train, test, "--force", workdir=tmp_path))
    assert all(e in line for e in expected), line
    assert (step / "_manifest.json").read_text() == manifest
    assert json.loads(manifest)["params"]["path"] == str(corpora / "train.jsonl.zst")


@pytest.mark.parametrize("args, expected", [
    (["--n", "0"], "step 'audit' (stage 'leakage_audit'), parameter 'n', file 'pipeline audit arguments': must be in"),
    (["--name", "../escape"], "file 'pipeline audit arguments': 'name' must be letters")])
def test_bad_arguments_are_named_as_arguments(corpora, tmp_path, args, expected):
    # The config `pipeline audit` builds was named '<dict>' in its errors: no file the user has.
    line = _one_line_exit_2(_audit(corpora / "train.jsonl", corpora / "train.jsonl", *args, workdir=tmp_path))
    assert expected in line and "<dict>" not in line
    assert not list(tmp_path.iterdir())  # refused before anything was written
