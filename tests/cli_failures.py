"""Shared by the bad-input tests: a config that fails must exit 2 with one clear line and no traceback."""

from __future__ import annotations

from conftest import run_cli, write_config

BASE = """
name: bad
seed: 0
steps:
  - id: docs
    stage: python_docs
    params: {granularity: topic}
"""


def fails_cleanly(tmp_path, text, *expected, code=2, extra=(), in_process=True):
    """Run `text` as a config; assert the exit code, no traceback, and every expected piece in stderr."""
    cfg = write_config(tmp_path / "c.yaml", text)
    proc = run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"), *extra, in_process=in_process)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    for piece in expected:
        assert piece in proc.stderr, proc.stderr
    return proc


def audit_config(tmp_path, params: str = "chunk_overlap: false, semantic: false") -> str:
    """A config of one leakage_audit step (id audit) of tmp_path's train.parquet against its test.parquet."""
    return f"""
name: bad
steps:
  - id: audit
    stage: leakage_audit
    inputs: {{train: {tmp_path / 'train.parquet'}, test: {tmp_path / 'test.parquet'}}}
    params: {{{params}}}
"""


def refused_by_validate(path, text) -> str:
    """Write `text` as a config at `path`, run `pipeline validate`: exit 2, one line, no traceback; the line."""
    proc = run_cli("validate", str(write_config(path, text)))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    return message


def digits_with_nonfinite_pixels(path, *bad) -> str:
    """scikit-learn's digits as the studies read them, with `bad` = ((row, pixel, value), ...) written in: a
    Parquet a study must refuse in one line, not train on (NaN) or fail inside scikit-learn on."""
    import polars as pl

    from stages.studies import digits_example

    pixels = digits_example().get_column("pixels").to_list()
    for row, pixel, value in bad:
        pixels[row][pixel] = value
    digits_example().with_columns(pixels=pl.Series(pixels, dtype=pl.List(pl.Float32))).write_parquet(path)
    return str(path)

