"""Parquet in.

A `Dataset` is what a stage receives for each input: either Parquet parts on disk (a step's output
or a user's path) or an in-memory frame (library use). Stages read it lazily, in batches, or whole,
so the same stage code streams over a corpus larger than memory and also runs on a DataFrame inside
training code.

Parquet out is `pipeline.writing`; digests of written tables are `pipeline.digests`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from pipeline.errors import InputDataError
from pipeline.files import fingerprint_path

PART_GLOB = "part-*.parquet"
DEFAULT_BATCH_ROWS = 65_536
# Batches and row groups are bounded in bytes as well as rows: a corpus of whole source files or
# books has rows of 100 KB and more, where 65,536 rows would be gigabytes in memory at once.
BATCH_BYTES = 32 << 20
# Row groups up to this size (decoded) are read whole and cut into batches, not streamed: the same
# batches for less CPU, and no more memory than one batch.
WHOLE_GROUP_BYTES = BATCH_BYTES


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
            # A filtered, shuffled or selected Dataset keeps the whole table and a row mapping beside it: the table
            # alone was every row in the original order. Rows through the mapping only when there is one (the
            # memory-mapped table as it is otherwise).
            table = obj.data.table if getattr(obj, "_indices", None) is None else obj.with_format("arrow")[:]
            obj = pl.from_arrow(table)
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
        """Identity of the files by path (relative to the project in a run: `files.fingerprint_path`), size and
        modification time (cheap: no reading)."""
        h = xxhash.xxh3_128()
        for f in self.files or []:
            st = f.stat()
            h.update(f"{fingerprint_path(f)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"Dataset({self.label!r}, rows={self.num_rows})"



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
