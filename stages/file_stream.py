"""Reading corpus files in bounded batches, so a source's memory does not grow with the file.

JSON Lines and CSV (plain, gzip or zstd) are decompressed as a stream and cut into chunks of about
`STREAM_BATCH_BYTES` at record boundaries (a newline; for CSV, one outside double quotes), and each
chunk is parsed on its own; Parquet is read a few row groups at a time. The rows and their types
are those of reading each file whole: CSV types are inferred from the first 10,000 rows (as
`pl.read_csv` does) or given (`schema_overrides`) and every chunk is parsed with them; JSON Lines types come from a first
streaming pass over every row (as `infer_schema_length=None` does); the files' schemas are then
unified as `pl.concat(how="diagonal_relaxed")` would. Plain text is one document per file and is
read whole, as is a compressed Parquet file (rare; Parquet compresses inside).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.columns import is_text, polars_schema
from pipeline.errors import InputDataError, first_line
from pipeline.files import describe_path
from pipeline.io import batch_frame
from stages import formats as corpus_formats
from stages.corpus_ids import id_column_problem, take_ids, unique_id_hint
from stages.formats import FileFormat, compression_of, csv_separator, read_frame, unreadable

# Decompressed bytes parsed at once. Files up to this size are read in one piece, exactly as before.
STREAM_BATCH_BYTES = 64 << 20
CSV_INFER_ROWS = 10_000


def _open(path: Path, compression: str | None):
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "zstd":
        return pa.CompressedInputStream(pa.OSFile(str(path)), "zstd")
    return open(path, "rb")


def _record_end(chunk: bytes, quoted: bool) -> int:
    """Index just past the last record boundary in `chunk` (0 if none): a newline, outside quotes for CSV."""
    end = chunk.rfind(b"\n")
    if not quoted:
        return end + 1
    # A newline ends a record when an even number of quotes comes before it (RFC 4180 doubles them).
    total, after, segment_end = chunk.count(b'"'), 0, len(chunk)
    while end >= 0:
        after += chunk.count(b'"', end, segment_end)
        segment_end = end
        if (total - after) % 2 == 0:
            return end + 1
        end = chunk.rfind(b"\n", 0, end)
    return 0


def _chunks(path: Path, compression: str | None, batch_bytes: int, quoted: bool) -> Iterator[bytes]:
    """The decompressed content in pieces of about `batch_bytes`, each ending at a record boundary."""
    pending = b""
    try:
        with _open(path, compression) as fh:
            while True:
                need = batch_bytes - len(pending)
                block = fh.read(need if need > 0 else batch_bytes)  # a record longer than a batch: read on
                if not block:
                    break
                pending += block
                if len(pending) < batch_bytes:
                    continue
                cut = _record_end(pending, quoted)
                if cut:
                    yield pending[:cut]
                    pending = pending[cut:]
    except (OSError, EOFError, zlib.error, pa.ArrowInvalid) as exc:
        reason = first_line(exc)
        raise InputDataError(f"corrupt or truncated {compression} data ({reason})", param="path",
                             file=describe_path(path)) from None
    if pending:
        yield pending


_UTF8_BOM = b"\xef\xbb\xbf"

# What pyarrow and polars raise on a file that is not Parquet, or whose footer or pages are damaged.
_PARQUET_ERRORS = (pa.ArrowException, pl.exceptions.PolarsError, OSError)


def _failed(path: Path, fmt: str, exc: Exception) -> InputDataError:
    return unreadable(fmt, exc, describe_path(path))


class FileBatches:
    """One corpus file as batches of rows, with its schema known before the first batch."""

    def __init__(self, path: Path, fmt: FileFormat, separator: str | None = None, batch_bytes: int | None = None,
                 text_column: str | None = None, csv_types: dict[str, Any] | None = None):
        self.path, self.fmt, self.separator, self.text_column = path, fmt, separator, text_column
        self.csv_types = csv_types or {}  # schema_overrides: {column: polars type}
        self.batch_bytes = batch_bytes or STREAM_BATCH_BYTES
        self._header = b""
        self._csv_schema: Any = None
        self._json_schema: Any = None

    @property
    def streams(self) -> bool:
        return self.fmt.format in ("jsonl", "csv") or (self.fmt.format == "parquet" and self.fmt.compression is None)

    def schema(self) -> dict[str, Any]:
        if not self.streams:
            return dict(read_frame(self.path, self.fmt, separator=self.separator).schema)
        if self.fmt.format == "parquet":
            try:
                return polars_schema(pq.read_schema(self.path))
            except _PARQUET_ERRORS as exc:
                raise _failed(self.path, "parquet", exc) from None
        if self.fmt.format == "csv":
            self._prepare_csv()
            return dict(self._csv_schema)
        return dict(self._jsonl_schema())

    def batches(self) -> Iterator[pl.DataFrame]:
        if not self.streams:
            yield read_frame(self.path, self.fmt, separator=self.separator)
        elif self.fmt.format == "parquet":
            yield from self._parquet_batches()
        elif self.fmt.format == "csv":
            yield from self._csv_batches()
        else:
            yield from self._jsonl_batches()

    def _parquet_batches(self) -> Iterator[pl.DataFrame]:
        pieces = self._parquet_pieces()
        while True:
            try:  # a damaged footer or row group: one line naming the file, not ArrowInvalid (exit 1)
                piece = next(pieces, None)
            except _PARQUET_ERRORS as exc:
                raise _failed(self.path, "parquet", exc) from None
            if piece is None:
                return
            yield piece

    def _parquet_pieces(self) -> Iterator[pl.DataFrame]:
        pf = pq.ParquetFile(self.path)
        meta = pf.metadata
        size = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
        rows = max(1, int(self.batch_bytes / max(size / max(meta.num_rows, 1), 1.0)))
        if meta.num_rows <= rows:
            yield pl.read_parquet(self.path)
            return
        for batch in pf.iter_batches(batch_size=rows):
            yield batch_frame(batch)

    def _jsonl_schema(self) -> Any:
        """Every row decides a JSON field's type, as `infer_schema_length=None` does: a first pass
        that only infers (about a third of the cost of parsing), chunk by chunk, unified."""
        if self._json_schema is None:
            schema = pl.DataFrame()
            for chunk in self._jsonl_chunks():
                try:
                    found = pl.scan_ndjson(io.BytesIO(chunk), infer_schema_length=None).collect_schema()
                except (pl.exceptions.PolarsError, pa.ArrowInvalid) as exc:
                    raise _failed(self.path, "jsonl", exc) from None
                schema = pl.concat([schema, pl.DataFrame(schema=found)], how="diagonal_relaxed")
            self._json_schema = schema.schema
        return self._json_schema

    def _jsonl_chunks(self, lines: list[int] | None = None) -> Iterator[bytes]:
        """The file's chunks that hold a record; `lines`, when given, is kept at [lines before the chunk]."""
        first = True
        for chunk in _chunks(self.path, self.fmt.compression, self.batch_bytes, quoted=False):
            if first and chunk.startswith(_UTF8_BOM):  # Windows editors write one; not part of the first record
                chunk = chunk[len(_UTF8_BOM):]
            first = False
            if not chunk.isspace():
                yield chunk
            if lines is not None:
                lines[0] += chunk.count(b"\n")

    def _jsonl_batches(self) -> Iterator[pl.DataFrame]:
        schema = self._jsonl_schema()
        lines = [0]
        for chunk in self._jsonl_chunks(lines):
            refuse_lone_surrogates(chunk, lines[0], self.path)
            if self.text_column is not None:
                refuse_nonstring_texts(chunk, lines[0], self.path, self.text_column)
            try:  # parsed with the whole file's types, as a whole-file read parses every row
                yield pl.read_ndjson(io.BytesIO(chunk), schema=schema)
            except (pl.exceptions.PolarsError, pa.ArrowInvalid) as exc:
                raise _failed(self.path, "jsonl", exc) from None

    def _prepare_csv(self) -> None:
        if self._csv_schema is not None:
            return
        first = next(_chunks(self.path, self.fmt.compression, self.batch_bytes, quoted=True), b"")
        self.separator = csv_separator(first, self.separator, describe_path(self.path))
        newline = first.find(b"\n")
        self._header = first[: newline + 1] if newline >= 0 else first
        try:
            sample = pl.read_csv(io.BytesIO(first), separator=self.separator, infer_schema_length=CSV_INFER_ROWS,
                                 n_rows=CSV_INFER_ROWS, encoding="utf8", schema_overrides=self.csv_types)
        except (pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
            raise self._csv_failed(exc, self.csv_types) from None
        self._csv_schema = sample.schema

    def _csv_failed(self, exc: Exception, schema: dict[str, Any]) -> InputDataError:
        return (corpus_formats.csv_misfit(exc, schema, self.csv_types, f"the first {CSV_INFER_ROWS:,} rows",
                                          describe_path(self.path)) or _failed(self.path, "csv", exc))

    def _csv_batches(self) -> Iterator[pl.DataFrame]:
        self._prepare_csv()
        for k, chunk in enumerate(_chunks(self.path, self.fmt.compression, self.batch_bytes, quoted=True)):
            data = chunk if k == 0 else self._header + chunk
            try:
                yield pl.read_csv(io.BytesIO(data), separator=self.separator, schema=self._csv_schema,
                                  encoding="utf8")
            except (pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
                raise self._csv_failed(exc, dict(self._csv_schema)) from None


_HIGH_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}")
_LOW_SURROGATE = re.compile(rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def refuse_lone_surrogates(chunk: bytes, lines_before: int, path: Path) -> None:
    """InputDataError for a JSON escape of a high surrogate with no low one after it ("\\ud800" alone), which
    polars' reader turns into NUL without a word. A pair ("\\ud83d\\ude00", json.dumps' escape of an emoji)
    is fine; a lone low surrogate polars refuses itself. A byte search first, so clean files pay ~nothing."""
    if b"\\ud" not in chunk and b"\\uD" not in chunk:
        return
    for found in _HIGH_SURROGATE.finditer(chunk):
        at = start = found.start()
        while start and chunk[start - 1] == 0x5C:  # an even run of backslashes before it: a real escape
            start -= 1
        if (at - start) % 2 == 0 and not _LOW_SURROGATE.match(chunk, found.end()):
            line = lines_before + chunk.count(b"\n", 0, at) + 1
            raise InputDataError(
                f"line {line}: a lone surrogate escape {found.group().decode()} (half of a pair, not valid Unicode; "
                "it would be read as NUL); repair or drop that record", param="path", file=describe_path(path))


class _Pairs:
    """A JSON object as its (key, value) pairs in order, every one kept; `plain` is it as a dict, to print."""

    def __init__(self, pairs: list[tuple[str, Any]]):
        self.pairs = pairs

    def plain(self) -> dict[str, Any]:
        return dict(self.pairs)


def _json_key_pattern(name: str) -> bytes:
    """A regex for `name` as a JSON string: in UTF-8, or as an ASCII-only writer puts it (each non-ASCII
    character a \\uXXXX escape, hex digits of either case). For an ASCII name the two are the same."""
    parts = re.split(r"(\\u[0-9a-f]{4})", json.dumps(name))  # odd parts: the escapes
    escaped = "".join(re.escape(part) if i % 2 == 0 else
                      r"\\u" + "".join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in part[2:])
                      for i, part in enumerate(parts))
    forms = {re.escape(json.dumps(name, ensure_ascii=False)), escaped}
    return ("(?:" + "|".join(sorted(forms)) + ")").encode()


def refuse_nonstring_texts(chunk: bytes, lines_before: int, path: Path, text_column: str) -> None:
    """InputDataError for a record whose text field holds a number, boolean, list or object: polars read it as
    the string of its JSON ("5", "true", "[1, 2]") when other records hold strings, a document made up without a
    word. Null (or a missing field) stays a null text, as before. A byte search first (the field's name, then a
    value that does not start a string or null); only the records it finds are parsed again, so clean files pay
    little. The name is searched for as written in UTF-8 and as an ASCII-only writer escapes it (Python's
    `json.dumps` default writes "t\\u00e9xt" for "t\u00e9xt"; polars reads both as the same field)."""
    for found in re.finditer(_json_key_pattern(text_column) + rb"\s*:\s*[^\s\"n]", chunk):
        start = chunk.rfind(b"\n", 0, found.start()) + 1
        end = chunk.find(b"\n", found.end())
        try:  # as (key, value) pairs: a key given twice is checked at both (polars reads the first)
            record = json.loads(chunk[start:end if end >= 0 else len(chunk)], object_pairs_hook=_Pairs)
        except ValueError:  # not one JSON record a line: the parse that follows names the file
            continue
        values = [v for k, v in record.pairs if k == text_column] if isinstance(record, _Pairs) else []
        value = next((v for v in values if v is not None and not isinstance(v, str)), None)
        if value is not None:  # else the match was inside another field
            line = lines_before + chunk.count(b"\n", 0, start) + 1
            shown = json.dumps(value, default=_Pairs.plain)
            raise InputDataError(
                f"line {line}: field '{text_column}' holds {shown[:40] + ('...' if len(shown) > 40 else '')}, not a "
                "string; it would be read as the text of a document. Quote it (or make it null), drop that record, "
                "or name the text field with text_column", param="text_column", file=describe_path(path))


def unified_schema(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    """The schema `pl.concat(frames, how="diagonal_relaxed")` gives frames of these schemas."""
    return dict(pl.concat([pl.DataFrame(schema=s) for s in schemas], how="diagonal_relaxed").schema)


def conform(batch: pl.DataFrame, schema: dict[str, Any]) -> pl.DataFrame:
    """A batch with exactly `schema`'s columns and types (missing ones null), as the whole-file concat had."""
    if dict(batch.schema) == schema:
        return batch
    return pl.concat([pl.DataFrame(schema=schema), batch], how="diagonal_relaxed")


# ------------------------------------------------------------ the `id` + `text` shape, batch by batch


def normalise(
    df: pl.DataFrame,
    *,
    text_column: str,
    id_column: str | None,
    default_ids: pl.Series | None,
    label: str,
) -> pl.DataFrame:
    """Rename the text column to `text`, ensure a unique string `id`, keep everything else."""
    if df.height == 0:
        raise InputDataError("the source has no rows", file=label)
    if text_column not in df.columns:
        raise InputDataError(
            f"no column '{text_column}'; columns are: {df.columns}", param="text_column", file=label
        )
    if df.schema[text_column] == pl.Null:  # a cast to a string would only make every text a null one
        raise no_text(text_column, "type Null", label)
    if not is_text(df.schema[text_column]):
        raise InputDataError(
            f"column '{text_column}' holds {df.schema[text_column]}, not text; cast it to a string first, or name "
            "the text column with text_column", param="text_column", file=label
        )
    if problem := id_column_problem(df.schema, text_column, id_column):
        raise InputDataError(problem, param="id_column", file=label)
    df = df.with_columns(pl.col(text_column).cast(pl.String))  # a Categorical or Enum text: a corpus holds strings
    if text_column != "text":
        if "text" in df.columns:
            raise InputDataError(
                f"both '{text_column}' and 'text' exist; rename one before using text_column='{text_column}'",
                param="text_column", file=label,
            )
        df = df.rename({text_column: "text"})
    df, ids = take_ids(df, id_column, default_ids, label)
    if ids.null_count():
        raise InputDataError("some ids are null", param="id_column", file=label)
    dup = ids.filter(ids.is_duplicated()).unique().head(3).to_list()
    if dup:
        raise InputDataError(f"ids are not unique, e.g. {dup}", param="id_column", file=label,
                             hint=unique_id_hint(id_column))
    return df.insert_column(0, ids.alias("id"))


# JSON and CSV integers beyond 64 bits (a uint64 hash) are read as Int128, which Arrow and Parquet cannot store;
# Decimal(38, 0) holds them exactly, as the sql stage's DuckDB writes a HUGEINT.
_WIDE_INTEGERS = (pl.Int128, pl.UInt128)
_STORABLE_INTEGER = pl.Decimal(38, 0)


def storable(df: pl.DataFrame, label: str) -> pl.DataFrame:
    """`df` with its 128-bit integer columns as Decimal(38, 0); a value of more than 38 digits is refused."""
    wide = {c: _STORABLE_INTEGER for c, t in df.schema.items() if t in _WIDE_INTEGERS}
    if not wide:
        return df
    try:
        return df.cast(wide)
    except pl.exceptions.InvalidOperationError as exc:
        column = next(c for c in wide if df[c].cast(_STORABLE_INTEGER, strict=False).null_count() > df[c].null_count())
        raise InputDataError(f"column '{column}' holds an integer of more than 38 digits, which Parquet cannot store "
                             "as a number; quote it in the file to read it as text", file=label) from exc


def no_text(text_column: str, how: str, label: str) -> InputDataError:
    """The refusal of a text column with no text in any row (`how`: its type Null, or its count of null rows):
    most likely the wrong column. A source with no rows is refused; one whose every text is null is as empty.
    (Some null texts are read as nulls: the stages that need a text refuse them, naming the rows.)"""
    return InputDataError(f"column '{text_column}' holds only nulls ({how}): no row has a text to read; name the "
                          "text column with text_column", param="text_column", file=label)


def file_names(files: list[Path], root: str) -> list[str]:
    """Each file's name in its rows' ids: its path from `root`, a folder, or from a glob's folder (the part before
    its first wildcard). Bare file names made 'x.txt:0' of both a/x.txt and b/x.txt under 'data/**/*.txt'."""
    parts = Path(root).parts
    magic = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), None)
    base = Path(root) if Path(root).is_dir() else Path(*parts[:magic]) if magic else None
    return [str(f.relative_to(base)) if base and f.is_relative_to(base) else f.name for f in files]


def normalised_schema(schema: dict, text_column: str, id_column: str | None) -> dict | None:
    """The columns `normalise` makes of a frame with `schema`; None where it would refuse the frame."""
    if text_column not in schema or (text_column != "text" and "text" in schema):
        return None
    if (id_column is not None and id_column not in schema) or id_column_problem(schema, text_column, id_column):
        return None
    drop = {id_column} if id_column is not None else {"id"} & set(schema)
    out = {"id": pl.String}
    out.update({("text" if c == text_column else c): _STORABLE_INTEGER if t in _WIDE_INTEGERS else t
                for c, t in schema.items() if c not in drop})
    if out["text"] is not None and is_text(out["text"]):
        out["text"] = pl.String  # what `normalise` casts a Categorical or Enum text to
    return out


def stream_files(files: list[Path], formats: list, *, text_column: str, id_column: str | None, root: str,
                 separator: str | None = None, csv_types: dict[str, Any] | None = None) -> Iterator[pl.DataFrame]:
    """Every file's rows, normalised, in batches of bounded size (stages/file_stream.py): the same rows
    and types as reading every file whole and concatenating them, without holding a file in memory."""
    readers = [FileBatches(f, fmt, separator, text_column=text_column, csv_types=csv_types) for f, fmt in zip(files, formats)]
    schema = _csv_typed_schema(readers, csv_types, root)
    names = file_names(files, root)

    def batches() -> Iterator[pl.DataFrame]:
        for reader, name in zip(readers, names):
            offset = 0
            for batch in reader.batches():
                if batch.height == 0:
                    continue
                ids = pl.Series("id", [f"{name}:{i}" for i in range(offset, offset + batch.height)], dtype=pl.String)
                offset += batch.height
                yield storable(normalise(conform(batch, schema), text_column=text_column, id_column=id_column,
                                         default_ids=ids, label=root), root)

    keyed = id_column is not None or "id" in schema
    hashes: list[np.ndarray] = []
    rows = texts = 0
    for out in batches():
        rows += out.height
        texts += out.height - out["text"].null_count()
        if keyed:  # 8 bytes a row, so the uniqueness check over all batches stays small
            hashes.append(out["id"].hash(seed=0).to_numpy())
        yield out
    if rows == 0:
        raise InputDataError("the source has no rows", file=root)
    if texts == 0:
        raise no_text(text_column, f"all {rows:,} rows", root)
    if len(hashes) > 1:
        _check_unique_across_batches(hashes, batches, root, id_column)


def _check_unique_across_batches(hashes: list[np.ndarray], again, label: str, id_column: str | None) -> None:
    """Ids unique within each batch may repeat across batches: find repeated hashes, then (only
    then) read the ids again to name real duplicates (a 64-bit collision alone is not one)."""
    values, counts = np.unique(np.concatenate(hashes), return_counts=True)
    suspects = set(values[counts > 1].tolist())
    if not suspects:
        return
    seen: set[str] = set()
    dup: list[str] = []
    for batch in again():
        ids = batch["id"]
        for i in ids.filter(ids.hash(seed=0).is_in(list(suspects))).to_list():
            if i in seen and i not in dup:
                dup.append(i)
            seen.add(i)
        if len(dup) >= 3:
            break
    if dup:
        raise InputDataError(f"ids are not unique, e.g. {dup[:3]}", param="id_column", file=label,
                             hint=unique_id_hint(id_column))


def file_formats(files: list[Path], fmt: str) -> list[FileFormat]:
    """Files of one format, each plain, gzip or zstd (told from its bytes)."""
    return [FileFormat(fmt, compression_of(f)) for f in files]


def declared_schema(files: list[Path], fmt: str | list[FileFormat], text_column: str, id_column: str | None,
                    separator: str | None = None, *, root: str, csv_types: dict[str, Any] | None = None) -> dict | None:
    """A file source's output columns, when they are cheap to know before reading: Parquet footers and
    CSV headers (types of the first rows). JSON Lines fields are known only after every row: None. `root`: the
    source's path, as its run names it."""
    formats = file_formats(files, fmt) if isinstance(fmt, str) else fmt
    if any(f.format == "jsonl" or (f.format == "parquet" and f.compression) for f in formats):
        return None
    # An unreadable file (not Parquet, a damaged footer, CSV that does not parse) is refused here, by `pipeline
    # validate` too, naming it: the step could only fail on it when it runs.
    readers = [FileBatches(f, fmt, separator, csv_types=csv_types) for f, fmt in zip(files, formats)]
    schema = _csv_typed_schema(readers, csv_types, root)
    if schema.get(text_column) == pl.Null:  # refused by `pipeline validate` too, as the step would refuse it
        raise no_text(text_column, "type Null", root)
    return normalised_schema(schema, text_column, id_column)




def _csv_typed_schema(readers: list[FileBatches], csv_types: dict[str, Any] | None, root: str) -> dict[str, Any]:
    """The files' unified schema; a `schema_overrides` column that no CSV file has is refused (polars ignores it)."""
    schemas = [r.schema() for r in readers]
    csv_columns = {c for r, s in zip(readers, schemas) if r.fmt.format == "csv" for c in s}
    corpus_formats.refuse_absent_columns(csv_types, csv_columns, root)
    return unified_schema(schemas)
