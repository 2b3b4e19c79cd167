"""Corpus file formats: what a file holds, told from its bytes, and reading it into a polars frame.

Real corpora arrive as `shard-0001.jsonl.zst`, `data.csv.gz`, a Parquet file without an extension,
or JSON Lines saved as `.json`. The name is a hint; the content decides: compression by its magic
number (gzip, zstd), Parquet by its `PAR1` header, JSON Lines by a first `{`, then the extension or
a CSV sniff. Bytes that are none of these are refused with the list of supported formats.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from pipeline.errors import InputDataError, ParamError, first_line
from pipeline.files import describe_path

FORMATS = ("parquet", "jsonl", "csv", "text")
SUPPORTED = "Parquet, JSON Lines, CSV or plain text (each may be .gz or .zst), or a folder saved by datasets"
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
_COMPRESSION_SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
             ".csv": "csv", ".tsv": "csv", ".txt": "text", ".text": "text", ".md": "text", ".rst": "text"}
_SNIFF_BYTES = 64 << 10


@dataclass(frozen=True)
class FileFormat:
    format: str  # one of FORMATS
    compression: str | None  # gzip | zstd | None


def _compression_of(head: bytes) -> str | None:
    return next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)


def decompress(data: bytes, compression: str | None, path: Path) -> bytes:
    """The file's bytes, decompressed; corrupt or truncated data is one clear InputDataError."""
    if compression is None:
        return data
    try:
        if compression == "gzip":
            return gzip.decompress(data)
        return pa.CompressedInputStream(pa.BufferReader(data), "zstd").read()
    except (OSError, EOFError, zlib.error, pa.ArrowInvalid) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputDataError(f"corrupt or truncated {compression} data ({reason})", param="path",
                             file=describe_path(path)) from None


def _head(path: Path, compression: str | None) -> bytes:
    """The first bytes of the (decompressed) content, without decompressing the whole file."""
    if compression == "gzip":
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read(_SNIFF_BYTES)
        except (OSError, EOFError, zlib.error):
            return decompress(path.read_bytes(), compression, path)[:_SNIFF_BYTES]
    if compression == "zstd":
        try:
            with pa.CompressedInputStream(pa.OSFile(str(path)), "zstd") as fh:
                return fh.read(_SNIFF_BYTES)
        except (OSError, pa.ArrowInvalid):
            return decompress(path.read_bytes(), compression, path)[:_SNIFF_BYTES]
    with open(path, "rb") as fh:
        return fh.read(_SNIFF_BYTES)


_BLANK = b"\xef\xbb\xbf \t\r\n"  # a UTF-8 BOM and whitespace before the first record


def _starts_with_json_object(head: bytes) -> bool:
    text = head.lstrip(_BLANK)
    if not text.startswith(b"{"):
        return False
    line, newline, _ = text.partition(b"\n")
    if not newline:  # the first record is longer than the sample
        return True
    try:
        return isinstance(json.loads(line), dict)
    except UnicodeDecodeError:  # a record in another encoding: the JSON Lines reader names the bytes
        return True
    except ValueError:
        return False


def _looks_like_csv(sample: str) -> bool:
    lines = [line for line in sample.splitlines()[:20] if line.strip()]
    if len(lines) < 2:
        return False
    try:
        dialect = csv.Sniffer().sniff("\n".join(lines), delimiters=",\t;|")
    except csv.Error:
        return False
    return dialect.delimiter in lines[0]


def compression_of(path: str | Path) -> str | None:
    """gzip, zstd or None, from the file's magic number."""
    with open(path, "rb") as fh:
        return _compression_of(fh.read(4))


def detect(path: str | Path) -> FileFormat:
    """The format and compression of one file, from its content first and its name second."""
    path = Path(path)
    compression = compression_of(path)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    by_name = _SUFFIXES.get(suffixes[-1]) if suffixes else None
    head = _head(path, compression)
    if not head.strip() and by_name is not None:  # an empty .jsonl holds no records, not one empty text
        return FileFormat(by_name, compression)
    if head.startswith(b"PAR1"):
        return FileFormat("parquet", compression)
    if _starts_with_json_object(head):
        return FileFormat("jsonl", compression)
    if by_name == "jsonl" and head.lstrip(_BLANK)[:1] in (b"[", b"{"):
        # A JSON array (or an object spread over lines) named .json: read as text it became one document.
        raise InputDataError(
            "is named as JSON but is not JSON Lines (one object per line): a JSON array, or an object over several "
            "lines; write one object per line (`jq -c '.[]' FILE`), or set format: text to read it as one document",
            param="path", file=describe_path(path))
    if b"\x00" in head:
        raise InputDataError(f"cannot tell what this file holds (not {SUPPORTED})", param="path",
                             file=describe_path(path))
    if by_name in ("csv", "text"):
        return FileFormat(by_name, compression)
    sample = head.decode("utf-8", errors="replace")
    return FileFormat("csv" if _looks_like_csv(sample) else "text", compression)


def check_format(fmt: str, param: str = "format") -> None:
    if fmt != "auto" and fmt not in FORMATS:
        raise ParamError(param, f"unknown format '{fmt}'; supported: auto, {', '.join(FORMATS)}")


def read_frame(path: Path, fmt: FileFormat, *, separator: str | None = None, encoding: str = "utf-8",
               errors: str = "strict") -> pl.DataFrame:
    """One file as a frame: its columns for table formats, a one-row `text` column for plain text."""
    label = describe_path(path)
    try:
        if fmt.format == "parquet" and fmt.compression is None:
            return pl.read_parquet(path)
        data = decompress(path.read_bytes(), fmt.compression, path)
        if fmt.format == "parquet":
            return pl.read_parquet(io.BytesIO(data))
        if fmt.format == "jsonl":
            return pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
        if fmt.format == "csv":
            return pl.read_csv(io.BytesIO(data), separator=csv_separator(data, separator, label),
                               infer_schema_length=10000, encoding="utf8")
        return pl.DataFrame({"text": [decode_text(data, encoding, errors)]}, schema={"text": pl.String})
    except (pl.exceptions.PolarsError, UnicodeDecodeError, OSError, pa.ArrowInvalid) as exc:
        raise unreadable(fmt.format, exc, label) from None


def decode_text(data: bytes, encoding: str = "utf-8", errors: str = "strict") -> str:
    """A text file's bytes as its text, without a leading byte-order mark: the BOM an editor on Windows writes
    marks the encoding, it is not the document's first character (JSON Lines and CSV drop it too); kept, it
    made the same text from two editors two different documents to dedup and the leakage audit."""
    text = data.decode(encoding, errors=errors)
    return text[1:] if text.startswith("\ufeff") else text


# The line breaks of a text file: `str.splitlines` also breaks at form feeds, vertical tabs, U+2028 and other
# separators, which cut one line in two and numbered every later line wrong.
LINE_BREAK = re.compile(r"\r\n|\r|\n")


def unreadable(fmt: str, exc: BaseException, label: str) -> InputDataError:
    """The refusal of a file a reader failed on (whole or streamed), with what to do when its bytes are not UTF-8
    (an Excel CSV in latin-1, cp1252)."""
    msg = first_line(exc)
    hint = ("the file is not UTF-8: convert it first, e.g. iconv -f cp1252 -t utf-8 FILE > FILE.utf8"
            if "utf-8" in msg.lower() or "utf8" in msg.lower() else None)
    return InputDataError(f"cannot read as {fmt} ({msg})", param="path", file=label, hint=hint)


# The types `schema_overrides` takes for a CSV column, by name (polars' names, and Python's short ones).
CSV_TYPES = {"string": pl.String, "str": pl.String, "int64": pl.Int64, "int": pl.Int64, "float64": pl.Float64,
             "float": pl.Float64, "boolean": pl.Boolean, "bool": pl.Boolean, "date": pl.Date, "datetime": pl.Datetime}


def csv_types(overrides: dict[str, str] | None) -> dict[str, pl.DataType]:
    """`schema_overrides` ({column: type name}) as polars types; an unknown name is refused, listing the names."""
    types = {}
    for column, name in (overrides or {}).items():
        dtype = CSV_TYPES.get(name.lower())
        if dtype is None:
            raise ParamError("schema_overrides", f"column '{column}': unknown type {name!r}; types are: String, "
                                                 "Int64, Float64, Boolean, Date, Datetime")
        types[column] = dtype
    return types


def refuse_absent_columns(csv_types: dict[str, Any] | None, csv_columns: set[str], label: str) -> None:
    """A `schema_overrides` column that no CSV file has is refused (polars ignores it: a typo went unnoticed)."""
    missing = [c for c in csv_types or {} if c not in csv_columns]
    if missing:
        raise ParamError("schema_overrides", f"names column '{missing[0]}', which no CSV file has; CSV columns are: "
                                             f"{sorted(csv_columns) or 'none (no CSV file)'}", file=label)


_MISFIT = re.compile(r"could not parse `(.*)` as dtype `([^`]*)` at column '(.*)' \(column number", re.S)
_POLARS_SHORT_NAMES = {"i64": "Int64", "f64": "Float64", "bool": "Boolean", "date": "Date", "str": "String"}


def csv_misfit(exc: BaseException, schema: dict[str, Any], given: dict[str, Any], inferred_from: str,
               label: str) -> InputDataError | None:
    """The refusal of a CSV value that does not fit its column's type (polars' own text spans ten lines and suggests
    arguments the stage does not have), naming the column, the value and the parameter that fixes it; None for
    another failure."""
    found = _MISFIT.search(str(exc))
    if found is None:
        return None
    value, short_name, column = found.groups()
    how = "given in schema_overrides" if column in given else f"inferred from {inferred_from}"
    dtype = schema.get(column) or _POLARS_SHORT_NAMES.get(short_name, short_name)
    return InputDataError(f"column '{column}' holds {value[:40]!r}, which is no {dtype} (its type, {how}); set "
                          f"schema_overrides: {{{column}: String}} (or another type) to read the column as that type",
                          param="schema_overrides", file=label)


def csv_separator(data: bytes, separator: str | None, label: str) -> str:
    """The separator of the CSV starting with `data` (given, or sniffed), once its lines are known to end in \\n.

    Lines ending in a lone \\r (classic Mac OS, some Excel exports) are one line to the CSV reader: every row
    went into the header and the file was refused as having no rows."""
    head = data[:_SNIFF_BYTES]
    if b"\n" not in head and b"\r" in head.rstrip(b"\r"):
        raise InputDataError("its lines end in a lone carriage return (\\r, classic Mac OS), which the CSV reader "
                             "does not split at; convert them to \\n first (e.g. `tr '\\r' '\\n'`)",
                             param="path", file=label)
    return separator or _sniffed_separator(head)


def _sniffed_separator(data: bytes) -> str:
    sample = data[:_SNIFF_BYTES].decode("utf-8", errors="replace")
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
    except csv.Error:
        return ","
