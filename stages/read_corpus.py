"""`read_corpus`: one source for a corpus in whatever shape it arrives.

A file, a folder, a glob or a saved Hugging Face dataset; Parquet, JSON Lines, CSV or plain text,
each plain, gzip or zstd; the format of each file told from its bytes (`format: auto`), so a
`.json` that holds JSON Lines or a shard without an extension reads as what it is. This is the
reader `pipeline audit` uses for both of its arguments.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

from pipeline.errors import ParamError
from pipeline.files import describe_path, find_files
from pipeline.rundir import refuse_run_folder
from pipeline.stage import Context, Stage
from stages.formats import FileFormat, check_format, compression_of, csv_types, detect
from stages.sources import (
    _example_dir,
    _file_stats,
    declared_schema,
    is_saved_hf_dataset,
    read_saved_dataset,
    split_path,
    stream_files,
)


class ReadCorpus(Stage):
    """Read a corpus in any supported format (Parquet, JSONL, CSV, text; plain, .gz or .zst; saved HF datasets).

    Parameters:
        path: a file, a folder, a glob, or a folder saved by datasets (`folder:split` picks a split)
        format: auto tells each file's format from its content; or parquet, jsonl, csv, text
        text_column: the column holding the text (renamed to `text`)
        id_column: a unique column to use as `id`; by default `id` if present, else file:row
        split: the split of a saved DatasetDict (same as `path: folder:split`)
        separator: the CSV field separator; null sniffs it from the file
        glob: file pattern used when `path` is a folder
        schema_overrides: a CSV column's type ({column: String, Int64, Float64, Boolean, Date or Datetime}) instead
            of the one inferred from its first 10,000 rows (e.g. zip codes, or numbers that turn to text further down)
    """

    name = "read_corpus"
    version = "2"  # 2: a text file's leading BOM is not part of its text
    inputs: ClassVar[tuple[str, ...]] = ()
    allow_empty_input = True

    def __init__(self, path: str, format: str = "auto", text_column: str = "text", id_column: str | None = None,
                 split: str | None = None, separator: str | None = None, glob: str = "**/*",
                 schema_overrides: dict[str, str] | None = None):
        self.path = path
        self.format = format
        self.text_column = text_column
        self.id_column = id_column
        self.split = split
        self.separator = separator
        self.glob = glob
        self.schema_overrides = schema_overrides

    def _saved_dataset(self) -> tuple[str, str | None] | None:
        folder, split = split_path(self.path, self.split)
        return (folder, split) if is_saved_hf_dataset(folder) else None

    def _files(self) -> list[Path]:
        if self.split is not None:
            raise ParamError("split", "only a folder saved by datasets has splits", file=describe_path(self.path))
        return find_files(self.path, (self.glob,), param="path")

    def validate(self) -> None:
        check_format(self.format)
        if self.separator is not None and len(self.separator) != 1:
            raise ParamError("separator", f"must be one character, got {self.separator!r}")
        csv_types(self.schema_overrides)
        refuse_run_folder(self.path, param="path")  # its steps and side outputs read as one corpus
        if self._saved_dataset() is None:
            self._files()
        elif self.schema_overrides:
            raise ParamError("schema_overrides", "is for CSV files; a saved dataset keeps its own types",
                             file=describe_path(self.path))

    def fingerprint_extra(self) -> Any:
        saved = self._saved_dataset()
        if saved is not None:
            folder, split = saved
            return [split, _file_stats(sorted(p for p in Path(folder).rglob("*") if p.is_file()))]
        return _file_stats(self._files())

    def _format_of(self, path: Path) -> FileFormat:
        if self.format != "auto":  # the format given is taken as is: only the compression is told from the bytes
            return FileFormat(self.format, compression_of(path))
        return detect(path)

    def _formats(self, files: list[Path]) -> list[FileFormat]:
        """Each file's format. Plain text found among tables is refused: in a downloaded dataset's folder
        (data/*.parquet beside README.md) the README was read as one more document, without a word."""
        formats = [self._format_of(f) for f in files]
        texts = [f.name for f, fmt in zip(files, formats) if fmt.format == "text"]
        if texts and len(texts) < len(files):
            tables = sorted({fmt.format for fmt in formats if fmt.format != "text"})
            raise ParamError("path", f"holds {' and '.join(tables)} files and plain text ({', '.join(texts[:3])}"
                             f"{', ...' if len(texts) > 3 else ''}), which would be read as documents among the "
                             f"rows; name the data files with glob (e.g. glob: '**/*.{tables[0]}'), or set format",
                             file=describe_path(self.path))
        return formats

    def run(self, ctx: Context) -> pl.DataFrame | Iterator[pl.DataFrame]:
        saved = self._saved_dataset()
        if saved is not None:
            ctx.record("formats", {"saved_dataset": 1})
            return read_saved_dataset(*saved, text_column=self.text_column, id_column=self.id_column,
                                      label=self.path)
        files = self._files()
        formats = self._formats(files)
        ctx.record("formats", dict(Counter("+".join(filter(None, (f.format, f.compression))) for f in formats)))
        # JSON Lines, CSV and Parquet stream in bounded batches (stages/file_stream.py).
        return stream_files(files, formats, text_column=self.text_column, id_column=self.id_column,
                            root=self.path, separator=self.separator, csv_types=csv_types(self.schema_overrides))

    def output_schema(self, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """Declared when cheap to know (Parquet footers, CSV headers, text), so `pipeline validate`
        checks the steps reading this one; JSON Lines and saved datasets are checked when they run."""
        if self._saved_dataset() is not None:
            return None
        files = self._files()
        return declared_schema(files, self._formats(files), self.text_column, self.id_column,
                               self.separator, root=self.path, csv_types=csv_types(self.schema_overrides))

    @classmethod
    def example(cls) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        return {"path": str(_example_dir() / "docs.jsonl"), "format": "auto"}, {}
