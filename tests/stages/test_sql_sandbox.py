"""The sql stage: one SELECT over its input, in a DuckDB that reaches no file, URL, extension or setting.

One test per way out that a hostile shared config tried (issue #17), each checked on the CLI: exit 2,
one line naming the step and `query`, and nothing read or written outside the run folder.
"""

from __future__ import annotations

import re

import polars as pl
import pytest
from conftest import run_cli, write_config

from pipeline.errors import ParamError
from stages.sql import Sql

ROWS = pl.DataFrame({"id": ["a", "b", "c"], "n": [1, 2, 3]})


def _config(tmp_path, query: str) -> str:
    data = tmp_path / "in.parquet"
    ROWS.write_parquet(data)
    escaped = query.replace("'", "''")
    return (f"name: sandbox\nseed: 0\nsteps:\n  - id: q\n    stage: sql\n    inputs: {data}\n"
            f"    params: {{query: '{escaped}'}}\n")


def _refused(tmp_path, query: str, *expected: str) -> str:
    cfg = write_config(tmp_path / "c.yaml", _config(tmp_path, query))
    proc = run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"), "--quiet")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "step 'q' (stage 'sql')" in lines[0] and "parameter 'query'" in lines[0], lines[0]
    for piece in expected:
        assert piece in lines[0], lines[0]
    assert not (tmp_path / "runs" / "sandbox" / "q").exists()
    return lines[0]


def test_a_select_streams_the_input():
    out = Sql("SELECT id, n * 2 AS m FROM data WHERE n > 1").apply(ROWS)
    assert out.to_dict(as_series=False) == {"id": ["b", "c"], "m": [4, 6]}
    with_cte = Sql("WITH big AS (SELECT * FROM data WHERE n >= 2) SELECT count(*) AS k FROM big").apply(ROWS)
    assert with_cte["k"].to_list() == [2]
    empty = Sql("SELECT * FROM data WHERE false").apply(ROWS)
    assert empty.height == 0 and empty.columns == ["id", "n"]


def test_reading_a_local_file_is_refused(tmp_path):
    # The line names the step's input like every other run-time query error (it named no file).
    _refused(tmp_path, "SELECT * FROM read_csv('/etc/passwd')", "sandbox refuses", "/etc/passwd", "in.parquet")


def test_reading_parquet_outside_the_inputs_is_refused(tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    pl.DataFrame({"pw": ["hunter2"]}).write_parquet(secret / "x.parquet")
    line = _refused(tmp_path, f"SELECT * FROM read_parquet('{secret}/*.parquet')", "sandbox refuses")
    assert "hunter2" not in line
    _refused(tmp_path, f"SELECT * FROM '{secret}/x.parquet'", "sandbox refuses")


def test_urls_are_refused(tmp_path):
    _refused(tmp_path, "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')", "sandbox refuses")


def test_attach_is_refused(tmp_path):
    _refused(tmp_path, f"ATTACH '{tmp_path}/x.duckdb' AS x", "must be a SELECT", "ATTACH")
    assert not (tmp_path / "x.duckdb").exists()


def test_copy_to_is_refused(tmp_path):
    _refused(tmp_path, f"COPY (SELECT * FROM data) TO '{tmp_path}/out.csv'", "must be a SELECT", "COPY")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("query", ["INSTALL httpfs", "LOAD httpfs"])
def test_install_and_load_are_refused(tmp_path, query):
    _refused(tmp_path, query, "must be a SELECT")


@pytest.mark.parametrize("query", ["PRAGMA database_list", "SET enable_external_access = true",
                                   "DROP TABLE data", "CREATE TABLE t AS SELECT 1"])
def test_statements_other_than_select_are_refused(tmp_path, query):
    _refused(tmp_path, query, "must be a SELECT")


def test_multiple_statements_are_refused(tmp_path):
    _refused(tmp_path, "SELECT * FROM data; SELECT * FROM read_csv('/etc/passwd')", "exactly one", "2 statements")


def test_a_failing_query_is_one_line_naming_the_columns(tmp_path):
    _refused(tmp_path, "SELECT no_such_column FROM data", "no_such_column", "columns are ['id', 'n']")
    _refused(tmp_path, "SELEC id FROM data", "not valid SQL")


def test_the_sandbox_holds_inside_a_select():
    # Even reached through a subquery or a table function in a CTE, files stay out of reach.
    for query in ("SELECT * FROM data WHERE id IN (SELECT column0 FROM read_csv('/etc/passwd'))",
                  "WITH x AS (SELECT * FROM glob('/etc/*')) SELECT * FROM x",
                  "SELECT * FROM read_text('/etc/hostname')"):
        with pytest.raises(ParamError, match="sandbox refuses"):
            Sql(query).apply(ROWS)


def test_the_temp_folder_in_the_working_directory_is_not_readable(tmp_path, monkeypatch):
    # DuckDB allows its temp directory with external access off, and its default is `.tmp` in the
    # working directory, which may hold (or link to) anything.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.csv").write_text("pw\nhunter2\n")
    (tmp_path / ".tmp").symlink_to(elsewhere)
    monkeypatch.chdir(tmp_path)
    for query in ("SELECT * FROM read_csv('.tmp/secret.csv')", f"SELECT * FROM read_csv('{tmp_path}/.tmp/secret.csv')",
                  f"SELECT * FROM glob('{tmp_path}/.tmp/*')"):
        with pytest.raises(ParamError, match="sandbox refuses"):
            Sql(query).apply(ROWS)
        assert Sql(query).output_schema({"data": {"id": pl.String, "n": pl.Int64}}) is None  # not the file's columns


def test_python_variables_are_not_reachable():
    secret_table = pl.DataFrame({"pw": ["hunter2"]})  # noqa: F841 - what a replacement scan would find
    with pytest.raises(ParamError, match="secret_table"):
        Sql("SELECT * FROM secret_table").apply(ROWS)


def test_group_by_is_reproducible():
    many = pl.DataFrame({"id": [str(i) for i in range(50_000)], "n": [i % 997 for i in range(50_000)]})
    query = "SELECT n, count(*) AS k FROM data GROUP BY n"
    assert Sql(query).apply(many).equals(Sql(query).apply(many))


@pytest.mark.parametrize("query, column, kind", [
    ("SELECT id, CAST('2024-03-01' AS TIMESTAMP) - CAST('2024-01-01' AS TIMESTAMP) AS gap FROM data", "gap", "INTERVAL"),
    ("SELECT id, union_value(k := n) AS u FROM data", "u", "UNION"),
    ("SELECT id, [INTERVAL 1 DAY] AS gaps FROM data", "gaps", "INTERVAL"),
])
def test_a_result_column_polars_cannot_hold_is_one_line(tmp_path, query, column, kind):
    # Polars' import of these panics (a Rust backtrace and exit 1) instead of raising an error.
    _refused(tmp_path, query, f"result column '{column}' is a{'n' if kind == 'INTERVAL' else ''} {kind}", "epoch(")
    with pytest.raises(ParamError, match=f"'{column}' is a"):
        Sql(query).apply(ROWS)


@pytest.mark.parametrize("query, column, kind", [
    ("SELECT id, md5_number(id) AS h FROM data", "h", "UHUGEINT"),
    ("SELECT id, [n::VARINT] AS v FROM data", "v", "BIGNUM[]"),
])
def test_a_result_column_duckdb_writes_wrong_is_refused(query, column, kind):
    # md5_number's UHUGEINT went out through Arrow as decimal128(38, 0) of its bits: negative numbers, silently.
    from stages.sql import describe_query

    message = f"result column '{column}' is {kind}, whose values would be written wrong"
    with pytest.raises(ParamError, match=re.escape(message)):
        Sql(query).apply(ROWS)
    with pytest.raises(ParamError, match=re.escape(message)):  # `pipeline validate` too
        describe_query(query, dict(ROWS.schema))


BIGGEST = 2**127 - 1  # a HUGEINT's largest: 39 digits


def test_a_hugeint_of_more_than_38_digits_is_refused(tmp_path):
    # A HUGEINT goes out as decimal(38, 0): one of 39 digits was written anyway and read back rounded (1.70...E+38).
    query = f"SELECT id, CASE WHEN n = 2 THEN {BIGGEST}::HUGEINT ELSE n END AS h FROM data"
    _refused(tmp_path, query, f"result column 'h' holds {BIGGEST}, an integer of 39 digits", "CAST(... AS VARCHAR)")
    for wide, value in ((f"[n::HUGEINT, -{BIGGEST}::HUGEINT - 1]", -BIGGEST - 1), (f"{{'a': {{'b': {10**38}::HUGEINT}}}}",
                        10**38), (f"MAP {{n::HUGEINT: -{10**38}::HUGEINT}}", -10**38)):  # in a list, struct or map
        with pytest.raises(ParamError, match=f"'w' holds {value}, an integer of"):
            Sql(f"SELECT id, {wide} AS w FROM data").apply(ROWS)
    # 38 digits are written as they were, exactly.
    most = 10**38 - 1
    out = Sql(f"SELECT {most}::HUGEINT AS a, -{most}::HUGEINT AS b, NULL::HUGEINT AS c FROM data LIMIT 1").apply(ROWS)
    assert out.rows() == [(most, -most, None)] and out.schema == pl.Schema(dict.fromkeys("abc", pl.Decimal(38, 0)))


def test_the_38_digit_check_reads_each_value_and_no_other():
    """Values at the bounds, either side of each 64-bit word's edge, under nulls and in a slice (its offset)."""
    import random

    import numpy as np
    import pyarrow as pa

    from stages.sql import _first_over_38_digits

    rng, most = random.Random(0), 10**38 - 1
    edges = [0, 1, -1, most, -most, most + 1, -most - 1, BIGGEST, -BIGGEST - 1, 2**64, -(2**64), 2**64 - 1,
             (most >> 64) << 64, ((most >> 64) + 1) << 64, -(((most >> 64) + 1) << 64) + 1]
    for _ in range(300):
        values = [rng.choice(edges) + rng.choice([0, 0, 1, -1, rng.randrange(-2**70, 2**70)]) for _ in range(8)]
        values = [min(max(v, -BIGGEST - 1), BIGGEST) for v in values]
        valid = [rng.random() < 0.8 for _ in values]
        data = pa.py_buffer(b"".join(v.to_bytes(16, "little", signed=True) for v in values))
        bits = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
        array = pa.Array.from_buffers(pa.decimal128(38, 0), len(values), [bits, data]).slice(1)
        wide = [v for v, ok in zip(values[1:], valid[1:]) if ok and abs(v) > most]
        assert _first_over_38_digits(array) == (wide[0] if wide else None), values
    # A slice of a list or map reads the values of its own rows only.
    items = pa.Array.from_buffers(pa.decimal128(38, 0), 3, [None, pa.py_buffer(
        b"".join(v.to_bytes(16, "little", signed=True) for v in (most + 1, 0, 0)))])
    keys = pa.array([1, 2, 3], pa.decimal128(38, 0))
    for nested in (pa.ListArray.from_arrays([0, 1, 3], items), pa.MapArray.from_arrays([0, 1, 3], keys, items)):
        assert _first_over_38_digits(nested) == most + 1 and _first_over_38_digits(nested.slice(1)) is None


def test_a_result_with_a_column_named_twice_is_one_line(tmp_path):
    # `SELECT id, id` failed in polars with DuplicateError: exit 1, read as a bug in corpusforge.
    _refused(tmp_path, "SELECT id, id FROM data", "the result has two columns named 'id'", "AS id_2")
    with pytest.raises(ParamError, match="two columns named 'n'"):
        Sql("SELECT n, id, n FROM data").apply(ROWS)


def test_random_functions_follow_the_pipeline_seed():
    many = pl.DataFrame({"id": [str(i) for i in range(1000)], "n": list(range(1000))})
    for query in ("SELECT id FROM data ORDER BY random() LIMIT 20", "SELECT id, uuid() AS u FROM data",
                  "SELECT id FROM data USING SAMPLE reservoir(20 ROWS)"):
        first = Sql(query).execute(many, seed=3).table
        assert first.equals(Sql(query).execute(many, seed=3).table), query
        assert not first.equals(Sql(query).execute(many, seed=4).table), query


def test_an_unseeded_percentage_sample_is_refused_and_a_seeded_one_repeats(tmp_path):
    # setseed() does not reach a system or bernoulli sample: `USING SAMPLE 1%` gave other rows on every run.
    _refused(tmp_path, "SELECT id FROM data USING SAMPLE 50%", "system sample of 50% without a seed",
             "USING SAMPLE 50% (system, 42)")
    for query in ("SELECT id FROM data USING SAMPLE 10 PERCENT (bernoulli)",
                  "WITH t AS (SELECT * FROM data TABLESAMPLE 5%) SELECT id FROM t"):
        with pytest.raises(ParamError, match="without a seed"):
            Sql(query).validate()
    many = pl.DataFrame({"id": [str(i) for i in range(1000)], "n": list(range(1000))})
    seeded = "SELECT id FROM data USING SAMPLE 30% (bernoulli, 42)"
    assert Sql(seeded).execute(many, seed=3).table.equals(Sql(seeded).execute(many, seed=3).table)


@pytest.mark.parametrize("query, clock", [("SELECT id FROM data WHERE d > now() - INTERVAL 7 DAY", "now()"),
                                          ("SELECT id, current_date AS day FROM data", "current_date"),
                                          ("WITH t AS (SELECT today() AS t) SELECT * FROM t", "today()")])
def test_a_query_reading_the_clock_is_refused(query, clock):
    # Its rows changed from run to run while the step's fingerprint did not: a re-run was a cache hit.
    with pytest.raises(ParamError, match=re.escape(f"reads the clock ({clock})")):
        Sql(query).validate()


def test_a_column_named_like_a_clock_function_is_not_the_clock():
    Sql("SELECT data.current_date, today FROM (SELECT 1 AS today), data").validate()
