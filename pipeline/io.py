"""Parquet in, Parquet out.

A `Dataset` is what a stage receives for each input: either Parquet parts on disk (a step's output
or a user's path) or an in-memory frame (library use). Stages read it lazily, in batches, or whole,
so the same stage code streams over a corpus larger than memory and also runs on a DataFrame inside
training code.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from pipeline.errors import InputDataError, PipelineError

PART_GLOB = "part-*.parquet"
COMPRESSION = "zstd"
# One explicit level for every writer (polars and pyarrow default to different ones).
COMPRESSION_LEVEL = 3
# Rows per part file when a stage hands back batches; big enough that part files stay few,
# small enough that a Ray task over one part fits comfortably in a worker.
ROWS_PER_PART = 1_000_000
DEFAULT_BATCH_ROWS = 65_536
# Batches and row groups are bounded in bytes as well as rows: a corpus of whole source files or
# books has rows of 100 KB and more, where 65,536 rows would be gigabytes in memory at once.
BATCH_BYTES = 32 << 20
ROW_GROUP_BYTES = 64 << 20
# Row groups up to this size (decoded) are read whole and cut into batches, not streamed: the same
# batches for less CPU, and no more memory than one batch.
WHOLE_GROUP_BYTES = BATCH_BYTES
# polars' streaming sink takes row-group sizes in rows only; this keeps its buffer modest for text.
SINK_ROW_GROUP_ROWS = 16_384


def _expand_parquet_path(path: str | Path) -> list[Path]:
    from pipeline.files import find_files

    return find_files(path, (PART_GLOB, "**/*.parquet"), what="Parquet files")


class Dataset:
    """One input table of a stage: Parquet parts on disk, or a frame in memory."""

    def __init__(self, *, files: list[Path] | None = None, frame: pl.DataFrame | None = None, label: str):
        if (files is None) == (frame is None):
            raise ValueError("a Dataset holds either files or a frame")
        self.files = files
        self.frame = frame
        self.label = label
        self._schema: pa.Schema | None = None
        self._num_rows: int | None = None

    @classmethod
    def from_parquet(cls, path: str | Path) -> Dataset:
        """Open a Parquet file, a directory of parts, or a glob; fail clearly on corrupt files."""
        files = _expand_parquet_path(path)
        schema = None
        rows = 0
        for f in files:
            try:
                meta = pq.read_metadata(f)
                file_schema = meta.schema.to_arrow_schema()
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputDataError(f"not a readable Parquet file ({exc})", file=str(f)) from None
            if schema is None:
                schema = file_schema
            elif not file_schema.equals(schema):
                raise InputDataError(f"{schema_difference(file_schema, schema)} in {files[0]}; the files of one "
                                     "input need one schema", file=str(f))
            rows += meta.num_rows
        ds = cls(files=files, label=str(path))
        ds._schema, ds._num_rows = schema, rows
        return ds

    @classmethod
    def from_any(cls, obj: Any, label: str = "in-memory table") -> Dataset:
        """Wrap what library users have at hand: polars, Arrow, pandas, a datasets.Dataset or a path."""
        if isinstance(obj, Dataset):
            return obj
        if isinstance(obj, (str, Path)):
            return cls.from_parquet(obj)
        if isinstance(obj, pl.LazyFrame):
            obj = obj.collect()
        elif isinstance(obj, (pa.Table, pa.RecordBatch)):
            obj = pl.from_arrow(obj)
        elif type(obj).__module__.startswith("datasets"):
            obj = pl.from_arrow(obj.data.table)
        elif type(obj).__module__.startswith("pandas"):
            obj = pl.from_pandas(obj)
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(f"cannot use {type(obj).__name__} as a table; pass a polars or Arrow table")
        return cls(frame=obj, label=label)

    @property
    def schema(self) -> pa.Schema:
        if self._schema is None:
            self._schema = self.frame.head(0).to_arrow().schema
        return self._schema

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    @property
    def num_rows(self) -> int:
        if self._num_rows is None:
            self._num_rows = self.frame.height
        return self._num_rows

    def lazy(self) -> pl.LazyFrame:
        if self.frame is not None:
            return self.frame.lazy()
        return pl.scan_parquet([str(f) for f in self.files])

    def collect(self) -> pl.DataFrame:
        if self.frame is not None:
            return self.frame
        return pl.read_parquet([str(f) for f in self.files])

    def to_arrow(self) -> pa.Table:
        if self.frame is not None:
            return self.frame.to_arrow()
        return pq.read_table([str(f) for f in self.files]) if len(self.files) > 1 else pq.read_table(self.files[0])

    def iter_batches(self, rows: int = DEFAULT_BATCH_ROWS, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """Stream the table in row order, holding about one batch in memory."""
        if self.frame is not None:
            frame = self.frame if columns is None else self.frame.select(columns)
            for offset in range(0, frame.height, rows):
                yield frame.slice(offset, rows)
            return
        for batch in self.iter_arrow_batches(rows, columns):
            frame = batch_frame(batch)
            batch = None
            yield frame
            frame = None  # hold no batch while the next one is read

    def iter_batches_with_arrow(self, rows: int = DEFAULT_BATCH_ROWS) -> Iterator[tuple[pl.DataFrame, Any]]:
        """`iter_batches`, each batch paired with the Arrow batch it was made from (None for a frame).

        A stage that hands a batch back unchanged (a pass-through `select`) is then written from the
        Arrow batch as read: polars' conversion back to Arrow copies every string, ~10% of a
        pass-through's CPU and one more batch in memory. The Arrow batch is offered only when it is
        exactly what that conversion gives (same schema, metadata included), so the same bytes are
        written either way.
        """
        if self.frame is not None:
            for frame in self.iter_batches(rows):
                yield frame, None
            return
        yield from with_arrow(self.iter_arrow_batches(rows))

    def iter_arrow_batches(self, rows: int = DEFAULT_BATCH_ROWS,
                           columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Stream the Parquet files as Arrow record batches, bounded in rows and in bytes."""
        if self.frame is not None:
            yield from self.frame.to_arrow().to_batches(max_chunksize=rows)
            return
        yield from read_ahead(self._file_batches(rows, columns))

    def _file_batches(self, rows: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        for f in self.files:
            yield from file_batches(f, rows, columns=columns)

    def stat_fingerprint(self) -> str:
        """Identity of the files by path, size and modification time (cheap: no reading)."""
        h = xxhash.xxh3_128()
        for f in self.files or []:
            st = f.stat()
            h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"Dataset({self.label!r}, rows={self.num_rows})"


# ---------------------------------------------------------------- writing


def batch_frame(batch: pa.RecordBatch) -> pl.DataFrame:
    """`pl.from_arrow` of one batch read from Parquet. A batch cut from a row group keeps a fixed-size-list
    column's child values whole, and polars refuses such a column when it holds a null ("validity mask length
    must be equal to the number of values divided by size": a null first vector failed every small-batch read,
    exit 1, before a stage could refuse it). Only then is the batch compacted, by a copy of its rows."""
    try:
        return pl.from_arrow(batch)
    except pl.exceptions.ComputeError:
        return pl.from_arrow(batch.take(pa.array(range(batch.num_rows), pa.int64())))


def with_arrow(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[pl.DataFrame, pa.RecordBatch | None]]:
    """Each Arrow batch as a polars batch, paired with the Arrow batch where it is exactly what polars'
    conversion back gives (same schema, metadata included); see `Dataset.iter_batches_with_arrow`."""
    for batch in batches:
        frame = batch_frame(batch)
        same = batch.schema.equals(frame.head(0).to_arrow().schema, check_metadata=True)
        pair = (frame, batch if same else None)
        frame = batch = None
        yield pair
        pair = None  # hold no batch while the next one is read


def file_batches(path: str | Path, rows: int, start: int = 0, stop: int | None = None,
                 columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Rows [start, stop) of one Parquet file as Arrow batches, bounded in rows and in bytes.

    One row group at a time: asked for a whole file, pyarrow reads ahead and holds most of it (1.5 GB
    peak on a 1.1 GB file); per row group it stays near one group. The batches depend on the file and
    the range only, so a fragment of a row-wise step is cut the same way wherever it runs.
    """
    pf = pq.ParquetFile(path)
    meta = pf.metadata
    stop = meta.num_rows if stop is None else stop
    first = 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        lo, hi = max(start - first, 0), min(stop - first, group.num_rows)
        first += group.num_rows
        if hi <= lo:
            if first >= stop:
                return
            continue
        per_row = group.total_byte_size / max(group.num_rows, 1)
        size = max(1, min(rows, int(BATCH_BYTES / max(per_row, 1.0))))
        if group.total_byte_size > WHOLE_GROUP_BYTES:
            position = 0
            for batch in pf.iter_batches(batch_size=size, row_groups=[i], columns=columns):
                a, b = max(lo - position, 0), min(hi - position, batch.num_rows)
                position += batch.num_rows
                if b > a:
                    yield batch if (a, b) == (0, batch.num_rows) else batch.slice(a, b - a)
                batch = None
                if position >= hi:
                    break
            continue
        # A group that fits in one batch is decoded whole: the same batches as iter_batches (its reader
        # cuts a group at `size` rows too) for ~25% less CPU than its streaming decoder (measured on the
        # 1.1 GB pass-through).
        table = pf.read_row_group(i, columns=columns)
        if (lo, hi) != (0, group.num_rows):
            table = table.slice(lo, hi - lo)
        for batch in table.to_batches(max_chunksize=size):
            yield batch
            batch = None
        table = None


@dataclass
class TableInfo:
    """What was written for one table (the main output or a side output)."""

    rows: int = 0
    files: list[dict] = field(default_factory=list)
    schema: list[dict] = field(default_factory=list)
    fingerprint: str = ""

    def to_dict(self) -> dict:
        return {"rows": self.rows, "fingerprint": self.fingerprint, "files": self.files, "schema": self.schema}


def schema_to_json(schema: pa.Schema) -> list[dict]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


def _as_arrow(batch: Any) -> pa.Table:
    if isinstance(batch, pl.DataFrame):
        return batch.to_arrow()
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    if isinstance(batch, pa.Table):
        return batch
    raise TypeError(f"a stage must yield polars DataFrames or Arrow tables, got {type(batch).__name__}")


_END = object()


def schema_difference(here: pa.Schema, first: pa.Schema) -> str:
    """What differs between two Arrow schemas, in one line: the first column that does (Arrow prints a schema
    one column per line, and a message of two whole schemas hid the difference in a dozen lines)."""
    for column in here:
        if column.name not in first.names:
            return f"column '{column.name}' ({column.type}) is not"
        other = first.field(column.name)
        if not column.type.equals(other.type):
            return f"column '{column.name}' is {column.type} here, {other.type}"
    missing = [name for name in first.names if name not in here.names]
    if missing:
        return f"column '{missing[0]}' is missing here but present"
    if here.names != first.names:
        return f"columns are in another order ({', '.join(here.names)}) than"
    return "the schema's metadata or nullability differs from that"


def read_ahead(batches: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """Yield from `batches`, producing up to `depth` items ahead on a background thread.

    Reading and decoding Parquet (pyarrow releases the GIL) then overlaps with what the consumer
    does with the previous batch (a stage's work, encoding the output), so a pass-through step
    costs about max(read, write) instead of read + write. Memory: `depth` more batches, no more:
    the reader starts item k+1 only once the consumer has taken item k (a handshake, not a queue
    the reader fills while the consumer still works on k-1; that held three batches at once and
    raised the 1.1 GB pass-through's peak RSS by ~200 MB). Items come in order; an error in the
    reader is raised here; closing this generator stops the reader.
    """
    ready: queue.Queue = queue.Queue()
    permits = threading.Semaphore(depth - 1)  # the first item is read at once, before any is taken
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                ready.put(("item", item))
                del item  # the reader must not keep a batch the consumer has dropped
                permits.acquire()
                if stop.is_set():
                    return
                # The consumer has dropped the batch before last: hand its pages (allocated on this
                # thread) back now. Else the allocator keeps a second working set on this thread,
                # ~100 MB more peak RSS on 30 MB row groups.
                pa.default_memory_pool().release_unused()
            ready.put(("end", _END))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            ready.put(("error", exc))

    thread = threading.Thread(target=produce, name="parquet-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            permits.release()
            yield value
            value = None  # hold nothing while waiting for the next item
    finally:
        stop.set()
        permits.release()  # wake a reader waiting for its next turn; it sees `stop` and ends
        thread.join()


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
                    table = table.select(schema.names).cast(schema)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError, ValueError) as exc:
                    filled = _null_types_filled(schema, table.schema)
                    if filled is None:
                        raise PipelineError(
                            f"the stage produced batches with different schemas ({table.schema} vs {schema}): {exc}"
                        ) from None
                    # A column all null so far (type null) has its type now: this batch starts a part of its
                    # own, and the parts get one schema at the end (the type one writer of it all would give).
                    table = table.select(filled.names).cast(filled)
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


def _null_types_filled(before: pa.Schema, after: pa.Schema) -> pa.Schema | None:
    """`before` with its null-typed columns typed as `after` types them; None if the two differ otherwise."""
    if before.names != after.names:
        return None
    fields = []
    for a, b in zip(before, after):
        if a.type == b.type or pa.types.is_null(b.type):
            fields.append(a)
        elif pa.types.is_null(a.type):
            fields.append(b)
        else:
            return None
    return pa.schema(fields, metadata=before.metadata)


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
            table = pq.read_table(part).select(unified.names).cast(unified)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError, ValueError) as exc:
            raise PipelineError(
                f"the stage produced batches with different schemas ({schema} vs {unified}): {exc}"
            ) from None
        tmp = part.with_name(f".{part.name}.tmp")
        pq.write_table(table, tmp, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL)
        os.replace(tmp, part)


def hash_file(path: Path) -> str:
    """Content digest (xxh3-128) of one file, read in 8 MB chunks."""
    h = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def combine_digests(names: Iterable[str], digests: Iterable[str]) -> str:
    """A table's fingerprint: its part names with their content digests, in order."""
    h = xxhash.xxh3_128()
    for name, digest in zip(names, digests):
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


def fingerprint_files(files: Iterable[Path]) -> str:
    """Content digest of files as manifests before per-part digests recorded it (name + bytes, one stream)."""
    h = xxhash.xxh3_128()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb", buffering=0) as fh:
            while chunk := fh.read(8 << 20):
                h.update(chunk)
    return h.hexdigest()


def describe_file(path: Path, digest: str) -> dict:
    """What a file holds: name, size and content digest (the same for the same bytes on any disk)."""
    return {"name": path.name, "bytes": os.lstat(path).st_size, "xxh3": digest}


def describe_table(table_dir: Path) -> TableInfo:
    """Rows, schema and digests of a written table; parts written by write_table in this process
    were hashed as they were written, so only parts written elsewhere (Ray workers) are read again."""
    files = sorted(table_dir.glob(PART_GLOB))
    info = TableInfo()
    schema = None
    digests = [written_digest(f) or hash_file(f) for f in files]
    for f, digest in zip(files, digests):
        meta = pq.read_metadata(f)
        schema = schema or meta.schema.to_arrow_schema()
        info.rows += meta.num_rows
        info.files.append({"rows": meta.num_rows, **describe_file(f, digest)})
    info.schema = schema_to_json(schema) if schema is not None else []
    info.fingerprint = combine_digests([f.name for f in files], digests)
    return info


def read_parquet_checked(path: Path, columns: list[str] | None = None) -> pa.Table | None:
    """Read a Parquet file a stage keeps for itself (a cache shard); None when it is damaged.

    A cache that is truncated or overwritten must be rebuilt, not crash the step that reads it:
    callers treat None as a miss and drop the file.
    """
    try:
        table = pq.read_table(path, columns=columns)
        table.validate(full=True)
    except (pa.ArrowException, OSError, ValueError):
        return None
    return table


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
