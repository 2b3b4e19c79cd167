"""Parquet out: a stage's result written as zstd Parquet parts, hashed as they are written.

`write_table` takes what a stage returns (a frame, a LazyFrame, Arrow tables or a stream of batches)
and writes it in parts of bounded rows and row groups of bounded bytes; the digest of each part is
taken on the way to disk (`written_digest`), so describing the table (`pipeline.digests`) needs no
second read. A finished step is flushed to disk (`fsync_tree`) before it is published.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from pipeline.errors import PipelineError, first_line
from pipeline.io import PART_GLOB

COMPRESSION = "zstd"
# One explicit level for every writer (polars and pyarrow default to different ones).
COMPRESSION_LEVEL = 3
# Rows per part file when a stage hands back batches; big enough that part files stay few,
# small enough that a Ray task over one part fits comfortably in a worker.
ROWS_PER_PART = 1_000_000
# Row groups are bounded in bytes as batches are (`pipeline.io.BATCH_BYTES`).
ROW_GROUP_BYTES = 64 << 20
# polars' streaming sink takes row-group sizes in rows only; this keeps its buffer modest for text.
SINK_ROW_GROUP_ROWS = 16_384


def _as_arrow(batch: Any) -> pa.Table:
    if isinstance(batch, pl.DataFrame):
        return batch.to_arrow()
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    if isinstance(batch, pa.Table):
        return batch
    raise TypeError(f"a stage must yield polars DataFrames or Arrow tables, got {type(batch).__name__}")



# Digests of part files taken while they were written, keyed by what identifies those exact bytes
# on disk: (device, inode, size, mtime). A rename keeps the key; any later write changes it.
_WRITTEN_DIGESTS: dict[tuple[int, int, int, int], str] = {}


def _file_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class _HashingSink:
    """A write-only file that hashes (xxh3-128) what passes through, so no second read is needed."""

    def __init__(self, path: Path):
        self._fh = open(path, "wb")  # noqa: SIM115 - closed by close(), which the writer calls
        self._hash = xxhash.xxh3_128()
        self._pos = 0
        self.closed = False

    def write(self, data) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self._fh.write(view)
        self._pos += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        self._fh.flush()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if self.closed:
            return
        self._fh.flush()
        _WRITTEN_DIGESTS[_file_key(os.fstat(self._fh.fileno()))] = self._hash.hexdigest()
        while len(_WRITTEN_DIGESTS) > 65_536:  # library calls write tables nobody describes
            del _WRITTEN_DIGESTS[next(iter(_WRITTEN_DIGESTS))]
        self._fh.close()
        self.closed = True


class _SinkWriter(pq.ParquetWriter):
    """A ParquetWriter over a _HashingSink that also closes the sink (pyarrow leaves file objects open)."""

    def __init__(self, sink: _HashingSink, *args: Any, **kwargs: Any):
        super().__init__(sink, *args, **kwargs)
        self._sink = sink

    def close(self) -> None:
        super().close()
        self._sink.close()


def written_digest(path: Path) -> str | None:
    """The digest taken while `path` was written by this process, if its bytes are still those."""
    try:
        return _WRITTEN_DIGESTS.pop(_file_key(os.lstat(path)), None)
    except FileNotFoundError:
        return None


def write_table(result: Any, out_dir: Path, rows_per_part: int = ROWS_PER_PART) -> None:
    """Write a stage's result as zstd Parquet parts into `out_dir` (which must exist).

    A LazyFrame is sunk by polars' streaming engine; batches are written as they come, so a
    generator-based stage never holds its whole output.
    """
    if isinstance(result, pl.LazyFrame):
        result.sink_parquet(out_dir / "part-00000.parquet", compression=COMPRESSION,
                            compression_level=COMPRESSION_LEVEL, row_group_size=SINK_ROW_GROUP_ROWS)
        return
    if isinstance(result, pl.DataFrame):
        result = result.to_arrow()
    if isinstance(result, (pa.Table, pa.RecordBatch)):
        result = [result]
    if not isinstance(result, Iterable):
        raise TypeError(f"a stage must return a table or an iterable of tables, got {type(result).__name__}")
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    piece: pa.Table | None = None
    part, rows_in_part = 0, 0
    retyped = False
    try:
        for item in result:
            table = _as_arrow(item)
            if schema is None:
                schema = table.schema
            elif not table.schema.equals(schema):
                try:
                    if set(table.schema.names) - set(schema.names):  # a column first seen now: not dropped
                        raise KeyError(sorted(set(table.schema.names) - set(schema.names)))
                    table = _conformed(table, schema)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError, ValueError) as exc:
                    filled = _widened(schema, table.schema)
                    if filled is None:
                        raise PipelineError(
                            f"the stage produced batches with different schemas ({_schema_line(table.schema)} vs "
                            f"{_schema_line(schema)}): {first_line(exc)}"
                        ) from None
                    # A column all null so far (type null) has its type now: this batch starts a part of its
                    # own, and the parts get one schema at the end (the type one writer of it all would give).
                    table = _conformed(table, filled)
                    if writer is not None:
                        writer.close()
                        writer, part, rows_in_part = None, part + 1, 0
                    schema, retyped = filled, True
            offset = 0
            while offset < table.num_rows or (writer is None and table.num_rows == 0):
                if writer is None:
                    sink = _HashingSink(out_dir / f"part-{part:05d}.parquet")
                    writer = _SinkWriter(sink, schema, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL)
                take = min(table.num_rows - offset, rows_per_part - rows_in_part)
                if take > 0:
                    piece = table.slice(offset, take)
                    group = max(1, int(ROW_GROUP_BYTES / max(piece.nbytes / take, 1.0)))
                    writer.write_table(piece, row_group_size=group)
                offset += take
                rows_in_part += take
                if rows_in_part >= rows_per_part:
                    writer.close()
                    writer, part, rows_in_part = None, part + 1, 0
                if table.num_rows == 0:
                    break
            item = table = piece = None  # written: hold nothing while the stage makes the next batch
    finally:
        if writer is not None:
            writer.close()
    if schema is None:
        # The stage produced nothing at all: leave an empty, schemaless part so readers see zero rows.
        pq.write_table(pa.table({}), out_dir / "part-00000.parquet", compression=COMPRESSION)
    elif retyped:
        unify_part_schemas(out_dir)


def _widened(before: pa.Schema, after: pa.Schema) -> pa.Schema | None:
    """The schema holding batches of both: a null-typed column typed, integers widened to floats, columns first
    seen later added (as one polars frame of every batch has them); None for a real conflict (text vs numbers)."""
    try:
        return pa.unify_schemas([before, after], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns, in order and cast; a column it lacks is all null."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.schema.names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _schema_line(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def unify_part_schemas(out_dir: Path) -> None:
    """Give every part one schema: fragments are written independently, and readers refuse mixed ones.

    A column whose type depends on the data (all nulls in one fragment, text in another) is
    promoted to the common type, which is what one writer gives when its first batch has
    the wider type; a real conflict (text vs numbers) is an error naming both schemas.
    """
    parts = sorted(out_dir.glob(PART_GLOB))
    schemas = [pq.read_schema(p) for p in parts]
    if all(s.equals(schemas[0]) for s in schemas[1:]):
        return
    try:
        unified = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise PipelineError(f"fragments of this step produced incompatible schemas: {exc}") from None
    for part, schema in zip(parts, schemas):
        if schema.equals(unified):
            continue
        try:
            table = _conformed(pq.read_table(part), unified)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError, ValueError) as exc:
            raise PipelineError(
                f"the stage produced batches with different schemas ({_schema_line(schema)} vs "
                f"{_schema_line(unified)}): {first_line(exc)}"
            ) from None
        tmp = part.with_name(f".{part.name}.tmp")
        pq.write_table(table, tmp, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL)
        os.replace(tmp, part)



def fsync_tree(root: Path) -> None:
    """Flush a finished step to disk before it is renamed into place, so a crash cannot expose torn files."""
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
