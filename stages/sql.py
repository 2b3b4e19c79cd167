"""The `sql` stage: one SELECT over the step's input, in a DuckDB that can reach nothing else.

A shared config is data, not code: whoever runs it must not be exposing their files or network to
the person who wrote it. So the query runs in an in-memory DuckDB that is sealed before the query
is seen:

- the step's input is registered as a view called `data` (an Arrow dataset read by pyarrow, so the
  input streams and DuckDB itself never opens a file);
- `enable_external_access = false`: no `read_csv`/`read_parquet`/`glob` of any path or URL, no
  `ATTACH`, `COPY`, `EXPORT`, `INSTALL` or `LOAD`;
- Python replacement scans are off (a query cannot name a Python variable of this process);
- `lock_configuration = true`: the query cannot switch any of this back on;
- the text must be exactly one `SELECT` (or `WITH ... SELECT`) statement, checked by DuckDB's own
  parser before anything runs: no `PRAGMA`, `SET`, `CREATE`, `DROP`, or a second statement.

`pipeline validate` learns the output's columns without running the query: DuckDB binds it against
an empty table of the input's schema (`describe_query`), so a later step that names a column the
query does not produce is refused before anything runs, as is a query naming a missing input column.

DuckDB runs single-threaded here: with several threads the order of rows out of a `GROUP BY`
changes from run to run, and the project promises the same bytes for the same config. For the same
reason its random functions are seeded from the pipeline seed before the query runs.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.columns import polars_schema
from pipeline.errors import ParamError, first_line
from pipeline.io import Dataset
from pipeline.stage import Context, Stage

# Settings applied, in order, before the configuration is locked.
SANDBOX_SETTINGS = (
    "SET python_enable_replacements = false",
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET allow_community_extensions = false",
    "SET threads = 1",
    "SET enable_external_access = false",
    "SET lock_configuration = true",
)
BATCH_ROWS = 65_536


def sandboxed_connection(tables: dict[str, object], spill: bool = False):
    """An in-memory DuckDB that sees `tables` (name -> Arrow table/dataset/reader) and nothing else.

    DuckDB allows its temp directory even with external access off, and the default one is `.tmp` in
    the working directory: a query could read whatever sits (or links) there. So the temp directory is
    set first: none at all (`spill=False`, for schema probes), or a fresh private folder for a query
    that may spill, removed with the connection.
    """
    import duckdb

    con = duckdb.connect(":memory:")
    spill_dir = tempfile.mkdtemp(prefix="corpusforge-sql-spill-") if spill else ""
    if spill_dir:
        weakref.finalize(con, shutil.rmtree, spill_dir, ignore_errors=True)
    con.execute("SET temp_directory = ?", [spill_dir])
    for name, table in tables.items():
        con.register(name, table)
    for statement in SANDBOX_SETTINGS:
        con.execute(statement)
    return con


def check_single_select(query: str) -> None:
    """Refuse anything but one SELECT/WITH statement, using DuckDB's parser (nothing is run)."""
    import duckdb

    try:
        statements = duckdb.connect(":memory:").extract_statements(query)
    except duckdb.Error as exc:
        raise ParamError("query", f"not valid SQL: {first_line(exc)}") from None
    if len(statements) != 1:
        raise ParamError("query", f"must be exactly one SELECT statement, got {len(statements)} statements")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise ParamError(
            "query", f"must be a SELECT (or WITH ... SELECT) statement, got {kind.name}",
            hint="the sql stage only reads its input `data`; it cannot change or reach anything else",
        )
    unseeded = next(_unseeded_samples(query), None)
    if unseeded is not None:
        size, method = unseeded["sample_size"].get("value"), unseeded["method"].lower()
        raise ParamError("query", f"a {method} sample of {size:g}% without a seed draws other rows on every run (the "
                         f"pipeline seed reaches random(), uuid() and reservoir samples, not this one); give it one: "
                         f"USING SAMPLE {size:g}% ({method}, 42)")
    clock = next(_clock_reads(query), None)
    if clock is not None:
        raise ParamError("query", f"reads the clock ({clock}): the same config gives other rows on every run, and a "
                         "re-run is a cache hit that keeps the first run's; compare with a fixed date instead (e.g. "
                         "TIMESTAMP '2026-01-01')")


def _parse_tree_nodes(query: str) -> Iterator[dict]:
    """Every node (a dict) of DuckDB's parse tree of `query`; none when it has no tree to read (the run's own
    checks stand)."""
    import json

    import duckdb

    try:
        tree = json.loads(duckdb.connect(":memory:").execute("SELECT json_serialize_sql(?::VARCHAR)", [query])
                          .fetchall()[0][0])
    except (duckdb.Error, ValueError):
        return
    nodes = [tree]
    while nodes:
        node = nodes.pop()
        if isinstance(node, list):
            nodes.extend(node)
        elif isinstance(node, dict):
            yield node
            nodes.extend(node.values())


def _unseeded_samples(query: str) -> Iterator[dict]:
    """The query's percentage samples (system or bernoulli) without a seed of their own, from DuckDB's parse tree:
    setseed() does not reach their generator, so the same config gave other rows on every run."""
    for node in _parse_tree_nodes(query):
        sample = node.get("sample")
        if isinstance(sample, dict) and sample.get("method") in ("System", "Bernoulli") \
                and not sample.get("repeatable"):
            yield sample


# DuckDB's clock: called as functions, or written as SQL keywords (parsed as a column of that name; a column of
# the input so named is still reachable as data.current_date).
_CLOCK_KEYWORDS = {"current_date", "current_time", "current_timestamp", "localtime", "localtimestamp"}
_CLOCK_FUNCTIONS = {"now", "today", "get_current_time", "get_current_timestamp", "transaction_timestamp",
                    "current_localtime", "current_localtimestamp"} | _CLOCK_KEYWORDS


def _clock_reads(query: str) -> Iterator[str]:
    """The names of the clock functions the query calls: their value changes from run to run while the step's
    fingerprint does not, so a re-run was a cache hit holding the first run's rows (WHERE ts > now() - ...)."""
    for node in _parse_tree_nodes(query):
        if node.get("class") == "FUNCTION" and str(node.get("function_name")).lower() in _CLOCK_FUNCTIONS:
            yield f"{node['function_name']}()"
        names = node.get("column_names") if node.get("class") == "COLUMN_REF" else None
        if isinstance(names, list) and len(names) == 1 and str(names[0]).lower() in _CLOCK_KEYWORDS:
            yield str(names[0])


def describe_query(query: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The query's output columns (name -> polars dtype, None where unknown) for an input of `schema`.

    The query is bound against an empty table of that schema in the same sandbox as a run, so no
    input row is read. A column the query names but the input lacks is a ParamError naming the input's
    columns; a schema DuckDB cannot take (an exotic dtype) gives None, and the column flow stops here.
    """
    import duckdb
    import polars as pl

    try:
        empty = pl.DataFrame(schema={c: pl.Null if t is None else t for c, t in schema.items()}).to_arrow()
    except Exception:  # noqa: BLE001 - a dtype with no Arrow form: the output stays undeclared
        return None
    con = sandboxed_connection({"data": empty})
    try:
        relation = con.sql(query).limit(0)
        refuse_miswritten(relation, None)
        result = _arrow_reader(relation).schema
    except (duckdb.BinderException, duckdb.CatalogException) as exc:
        missing_name = "not found" in str(exc) or "does not exist" in str(exc)
        if not missing_name and any(t is None for t in schema.values()):
            return None  # an untyped input column may be why the query did not bind: decide at run time
        raise ParamError("query", f"{first_line(exc)}; the input's columns are {list(schema)}") from None
    except duckdb.Error:
        return None
    finally:
        con.close()
    refuse_unholdable(result, None)
    columns = polars_schema(result)
    return {c: None if t == pl.Null else t for c, t in columns.items()}


# DuckDB types its Arrow export writes wrong: a UHUGEINT goes out as decimal128(38, 0) of its bits, so
# md5_number(text) (a UHUGEINT) came out negative; a BIGNUM (VARINT) as DuckDB's opaque bytes.
_MISWRITTEN = re.compile(r"\b(UHUGEINT|BIGNUM|VARINT)\b")


def refuse_miswritten(relation: Any, file: str | None) -> None:
    """A ParamError for a result column of a DuckDB type written wrong through Arrow (also inside a list or struct)."""
    for name, dtype in zip(relation.columns, relation.types):
        found = _MISWRITTEN.search(str(dtype))
        if found:
            raise ParamError("query", f"result column '{name}' is {dtype}, whose values would be written wrong "
                             f"({found.group(1)} has no Parquet form); convert it in the query (CAST(... AS VARCHAR), "
                             "or, for a hash, hash(...), a UBIGINT)", file=file)


# A HUGEINT goes out as decimal128(38, 0) too, which holds 38 digits; one of 39 (up to 2**127 - 1) was written
# anyway, and polars read it back rounded (170141183460469231731687303715884105727 as 1.70...E+38).
_HUGEINT = re.compile(r"\bHUGEINT\b")
_MOST = 10**38 - 1  # the widest decimal(38, 0), and its 16 bytes' high (signed) and low (unsigned) 64-bit words
_HIGH, _LOW = _MOST >> 64, _MOST & (2**64 - 1)
_NEG_HIGH, _NEG_LOW = -_MOST >> 64, -_MOST & (2**64 - 1)


def hugeint_columns(relation: Any) -> list[str]:
    """The result columns holding a HUGEINT (also inside a list or struct): `refuse_over_38_digits` checks them."""
    return [name for name, dtype in zip(relation.columns, relation.types) if _HUGEINT.search(str(dtype))]


def refuse_over_38_digits(batch: pa.RecordBatch, columns: list[str], file: str | None) -> None:
    """A ParamError for a HUGEINT of more than 38 digits in `columns` of `batch`: decimal(38, 0) cannot hold it."""
    for name in columns:
        value = _first_over_38_digits(batch.column(name))
        if value is not None:
            raise ParamError("query", f"result column '{name}' holds {value}, an integer of {len(str(abs(value)))} "
                             "digits, which its Parquet type decimal(38, 0) cannot hold (it would be read back "
                             "rounded); convert it in the query: CAST(... AS VARCHAR) keeps every digit, "
                             "CAST(... AS DOUBLE) about 16", file=file)


def _first_over_38_digits(array: pa.Array) -> int | None:
    """The first value of more than 38 digits in `array`'s decimal128 values (also inside a list, struct or map).

    Vectorised over the values' 16 little-endian bytes: a value is above 10**38 - 1 (or below its negative) when its
    high word is, or the high words are equal and its low word is.
    """
    kind = array.type
    if pa.types.is_struct(kind):
        children = array.flatten()
    elif pa.types.is_map(kind):  # (its keys and items are the whole buffer's: the slice's are cut out)
        lo, hi = (array.offsets[i].as_py() for i in (0, -1)) if len(array) else (0, 0)
        children = [array.keys.slice(lo, hi - lo), array.items.slice(lo, hi - lo)]
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        children = [array.flatten()]
    elif pa.types.is_decimal128(kind) and len(array):
        words = np.frombuffer(array.buffers()[1], "<u8", 2 * (array.offset + len(array)))[2 * array.offset:]
        low, high = words[0::2], words[1::2].view("<i8")
        bad = (high > _HIGH) | ((high == _HIGH) & (low > _LOW)) | (high < _NEG_HIGH) | (
            (high == _NEG_HIGH) & (low < _NEG_LOW))
        if array.null_count:
            bad &= array.is_valid().to_numpy(zero_copy_only=False)
        first = int(np.argmax(bad))
        return int(high[first]) * 2**64 + int(low[first]) if bad[first] else None
    else:
        return None
    return next((value for value in map(_first_over_38_digits, children) if value is not None), None)


def refuse_unholdable(schema: pa.Schema, file: str | None) -> None:
    """A ParamError for a result polars cannot hold: a column named twice, or an INTERVAL or UNION (also inside a
    list or struct).

    `SELECT id, id` gave two columns 'id' and polars' DuplicateError (exit 1, "a bug"). Subtracting two timestamps
    gives an INTERVAL; polars' import of such a column is a panic (a BaseException with a Rust backtrace on
    stderr), not an error the step could report."""
    twice = next((name for i, name in enumerate(schema.names) if name in schema.names[:i]), None)
    if twice is not None:
        raise ParamError("query", f"the result has two columns named '{twice}'; name each once (... AS {twice}_2)",
                         file=file)
    for field in schema:
        bad = _unholdable(field.type)
        if bad is not None:
            raise ParamError("query", f"result column '{field.name}' is {bad}, which cannot be written; convert it in "
                             "the query (e.g. epoch(a) - epoch(b) for seconds between timestamps, or CAST(... AS VARCHAR))",
                             file=file)


def _unholdable(dtype: pa.DataType) -> str | None:
    if pa.types.is_interval(dtype):
        return "an INTERVAL"
    if pa.types.is_union(dtype):
        return "a UNION"
    children = [dtype.field(i).type for i in range(dtype.num_fields)] if dtype.num_fields else []
    return next((bad for bad in map(_unholdable, children) if bad is not None), None)


def _input_table(data: Dataset) -> object:
    """The input as something DuckDB scans through Arrow: pyarrow reads the files, not DuckDB."""
    if data.frame is not None:
        return data.frame.to_arrow()
    import pyarrow.dataset as pads

    return pads.dataset([str(f) for f in data.files], format="parquet")


class Sql(Stage):
    """Transform with one SQL SELECT over the input, which is called `data` (DuckDB, sandboxed).

    The query sees this step's input and nothing else: no files, URLs, extensions or settings
    (see the README's "Guarantees"). Add ORDER BY when the row order of an aggregate matters to you.
    A result that would be written wrong is refused: an INTERVAL, UNION, UHUGEINT or VARINT column, or a HUGEINT
    value of more than 38 digits (it is written as decimal(38, 0)); CAST it in the query (e.g. AS VARCHAR).

    Parameters:
        query: e.g. "SELECT id, text FROM data WHERE length(text) > 200"
    """

    name = "sql"
    version = "4"  # 4: a query reading the clock is refused; 3: random() is seeded
    allow_empty_input = True

    def __init__(self, query: str):
        self.query = query

    def validate(self) -> None:
        if not isinstance(self.query, str):
            raise ParamError("query", f"expects a SQL string, got {self.query!r} ({type(self.query).__name__})")
        if not self.query.strip():
            raise ParamError("query", "is empty")
        check_single_select(self.query)

    def output_schema(self, inputs):
        return describe_query(self.query, inputs["data"])

    def run(self, ctx: Context, data: Dataset) -> Iterator[pa.RecordBatch]:
        import duckdb

        con = sandboxed_connection({"data": _input_table(data)}, spill=True)
        try:
            # random(), uuid() and reservoir samples follow the pipeline seed, not the clock: the same config and
            # seed give the same rows (ORDER BY random() LIMIT 100 drew other rows on every run). A system or
            # bernoulli percentage sample keeps its own generator, so `validate` asks for its seed (`_unseeded_samples`).
            con.execute("SELECT setseed(?)", [float(ctx.rng("sql").uniform(0.0, 1.0))]).fetchall()
            relation = con.sql(self.query)
            refuse_miswritten(relation, data.label)
            wide = hugeint_columns(relation)
            reader = _arrow_reader(relation)
            refuse_unholdable(reader.schema, data.label)
        except duckdb.Error as exc:
            con.close()
            raise _query_error(exc, data) from None
        except ParamError:
            con.close()
            raise
        return _stream(con, reader, data, wide)

    @classmethod
    def example(cls):
        import polars as pl

        return {"query": "SELECT id, upper(text) AS text FROM data WHERE n > 1"}, {
            "data": pl.DataFrame({"id": ["a", "b"], "text": ["x y", "z"], "n": [1, 2]})
        }


def _stream(con, reader: pa.RecordBatchReader, data: Dataset, wide: list[str]) -> Iterator[pa.RecordBatch]:
    """Yield the result batch by batch; an error found mid-stream is still one line about `query`. `wide`: the
    HUGEINT columns, each batch's checked by `refuse_over_38_digits`."""
    import duckdb

    try:
        empty = True
        for batch in reader:
            empty = False
            refuse_over_38_digits(batch, wide, data.label)
            yield batch
        if empty:
            yield pa.Table.from_batches([], schema=reader.schema)
    except duckdb.Error as exc:
        raise _query_error(exc, data) from None
    finally:
        con.close()


def _arrow_reader(relation) -> pa.RecordBatchReader:
    """A streaming Arrow reader over a DuckDB relation (the method's name changed in DuckDB 2.0)."""
    if hasattr(relation, "to_arrow_reader"):
        return relation.to_arrow_reader(BATCH_ROWS)
    return relation.fetch_arrow_reader(BATCH_ROWS)


def _query_error(exc: BaseException, data: Dataset) -> ParamError:
    import duckdb

    if isinstance(exc, duckdb.PermissionException):
        return ParamError("query", f"reaches outside its input, which the sql sandbox refuses ({first_line(exc)})",
                          hint="a query may read only the table `data`", file=data.label)
    return ParamError("query", f"{first_line(exc)}; the input's columns are {data.columns}", file=data.label)
