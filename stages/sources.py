"""Sources: read a corpus into the `id` + `text` shape every other stage expects.

Each source keeps the other columns it finds, gives every row a stable, unique string `id` (taken
from a column, or made from the file and row number), and fails on empty or undecodable input
instead of passing an empty table downstream.
"""

from __future__ import annotations

import codecs
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import polars as pl

from pipeline.errors import InputDataError, ParamError, PipelineError
from pipeline.files import describe_path, find_files, fingerprint_path
from pipeline.stage import Context, Stage
from stages.file_stream import (  # noqa: F401 - normalise and stream_files are the sources' shared core
    declared_schema,
    file_formats,
    file_names,
    normalise,
    normalised_schema,
    stream_files,
)
from stages.formats import LINE_BREAK, FileFormat, csv_types, decode_text


def _expand(path: str, pattern: str | None = None) -> list[Path]:
    return find_files(path, (pattern or "**/*",), param="path")


def _example_dir() -> Path:
    """A small folder of real text (pydoc topics) for the conformance examples of file sources.

    Removed when the process exits, so examples leave no temporary folders behind.
    """
    import atexit
    import shutil
    import tempfile
    from pydoc_data.topics import topics

    d = Path(tempfile.mkdtemp(prefix="corpusforge-example-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    names = sorted(topics)[:4]
    frame = pl.DataFrame({"id": names, "text": [topics[n] for n in names]})
    frame.write_parquet(d / "docs.parquet")
    frame.write_ndjson(d / "docs.jsonl")
    frame.write_csv(d / "docs.csv")
    for n in names:
        (d / f"{n}.txt").write_text(topics[n])
    return d


def _file_stats(files: list[Path]) -> list[tuple[str, int, int]]:
    return [(fingerprint_path(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


class _FileSource(Stage):
    inputs = ()
    version = "2"  # 2: a glob's files are named in ids by their path from the glob's folder (a/x.txt, not x.txt)
    allow_empty_input = True

    def fingerprint_extra(self):
        return _file_stats(_expand(self.path, getattr(self, "glob", None)))

    def validate(self) -> None:
        if getattr(self, "glob", None) is not None and not self.glob.strip():
            # An empty pattern matched every file in the folder (a text reader then read Parquet as text).
            raise ParamError("glob", "is empty; give a file pattern (e.g. '**/*' for every file), or leave glob out "
                             "for the default")
        _expand(self.path, getattr(self, "glob", None))


class ReadParquet(_FileSource):
    """Read Parquet files (a file, a folder or a glob).

    Parameters:
        path: a Parquet file, a folder of them, or a glob
        text_column: the column holding the text (renamed to `text`)
        id_column: a unique column to use as `id`; by default `id` if present, else file:row
    """

    name = "read_parquet"

    def __init__(self, path: str, text_column: str = "text", id_column: str | None = None):
        self.path = path
        self.text_column = text_column
        self.id_column = id_column

    def _files(self) -> list[Path]:
        from pipeline.io import Dataset

        return Dataset.from_parquet(self.path).files

    def run(self, ctx: Context) -> Iterator[pl.DataFrame]:
        files = self._files()
        return stream_files(files, [FileFormat("parquet", None)] * len(files), text_column=self.text_column,
                            id_column=self.id_column, root=self.path)

    def output_schema(self, inputs):
        return declared_schema(self._files(), "parquet", self.text_column, self.id_column, root=self.path)

    @classmethod
    def example(cls):
        return {"path": str(_example_dir() / "docs.parquet")}, {}


class ReadJsonl(_FileSource):
    """Read JSON Lines files (a file, a folder or a glob), plain, gzip or zstd.

    Parameters:
        path: a .jsonl (.jsonl.gz, .jsonl.zst) file, a folder, or a glob
        text_column: the field holding the text (renamed to `text`)
        id_column: a unique field to use as `id`; by default `id` if present, else file:row
        glob: file pattern used when `path` is a folder
    """

    name = "read_jsonl"

    def __init__(self, path: str, text_column: str = "text", id_column: str | None = None,
                 glob: str = "**/*.jsonl*"):
        self.path = path
        self.text_column = text_column
        self.id_column = id_column
        self.glob = glob

    def run(self, ctx: Context) -> Iterator[pl.DataFrame]:
        files = _expand(self.path, self.glob)
        return stream_files(files, file_formats(files, "jsonl"), text_column=self.text_column,
                            id_column=self.id_column, root=self.path)

    @classmethod
    def example(cls):
        return {"path": str(_example_dir() / "docs.jsonl")}, {}


class ReadCsv(_FileSource):
    """Read CSV files (a file, a folder or a glob), plain, gzip or zstd.

    Parameters:
        path: a .csv (.csv.gz, .csv.zst) file, a folder, or a glob
        text_column: the column holding the text (renamed to `text`)
        id_column: a unique column to use as `id`; by default `id` if present, else file:row
        separator: the field separator
        glob: file pattern used when `path` is a folder
        schema_overrides: a column's type ({column: String, Int64, Float64, Boolean, Date or Datetime}) instead of
            the one inferred from its first 10,000 rows (e.g. zip codes, or numbers that turn to text further down)
    """

    name = "read_csv"

    def __init__(self, path: str, text_column: str = "text", id_column: str | None = None,
                 separator: str = ",", glob: str = "**/*.csv*", schema_overrides: dict[str, str] | None = None):
        self.path = path
        self.text_column = text_column
        self.id_column = id_column
        self.separator = separator
        self.glob = glob
        self.schema_overrides = schema_overrides

    def validate(self) -> None:
        if len(self.separator) != 1:
            raise ParamError("separator", f"must be one character, got {self.separator!r}")
        csv_types(self.schema_overrides)
        super().validate()

    def run(self, ctx: Context) -> Iterator[pl.DataFrame]:
        files = _expand(self.path, self.glob)
        return stream_files(files, file_formats(files, "csv"), text_column=self.text_column,
                            id_column=self.id_column, root=self.path, separator=self.separator,
                            csv_types=csv_types(self.schema_overrides))

    def output_schema(self, inputs):
        return declared_schema(_expand(self.path, self.glob), "csv", self.text_column, self.id_column,
                               self.separator, root=self.path, csv_types=csv_types(self.schema_overrides))

    @classmethod
    def example(cls):
        return {"path": str(_example_dir() / "docs.csv")}, {}


def _decode(data: bytes, path: Path, encoding: str, errors: str) -> str:
    try:
        return decode_text(data, encoding, errors)
    except UnicodeDecodeError as exc:
        raise InputDataError(
            f"not valid {encoding} at byte {exc.start} ({exc.reason})",
            param="encoding", file=str(path),
            hint="convert the file, pass the right `encoding`, or set `errors: replace`",
        ) from None
    except LookupError:
        raise ParamError("encoding", f"unknown encoding '{encoding}'") from None



class ReadText(_FileSource):
    """Read plain-text files: one document per file, or one per non-empty line.

    Parameters:
        path: a text file, a folder, or a glob
        unit: 'file' makes one document per file, 'line' one per non-empty line
        glob: file pattern used when `path` is a folder
        encoding: the files' encoding
        errors: 'strict' fails on undecodable bytes (naming file and byte); 'replace' substitutes U+FFFD
    """

    name = "read_text"
    version = "2"  # 2: a BOM is not text; lines break only at \n, \r\n or \r (not at a form feed)

    def __init__(self, path: str, unit: Literal["file", "line"] = "file", glob: str = "**/*.txt",
                 encoding: str = "utf-8", errors: Literal["strict", "replace"] = "strict"):
        self.path = path
        self.unit = unit
        self.glob = glob
        self.encoding = encoding
        self.errors = errors

    def validate(self) -> None:
        try:  # else an unknown encoding was refused only when the step ran, after any upstream work
            codecs.lookup(self.encoding)
        except LookupError:
            raise ParamError("encoding", f"unknown encoding '{self.encoding}'; use e.g. 'utf-8' or 'latin-1'") from None
        super().validate()

    def run(self, ctx: Context) -> pl.DataFrame:
        files = _expand(self.path, self.glob)
        ids, texts, paths = [], [], []
        for f, name in zip(files, file_names(files, self.path)):
            text = _decode(f.read_bytes(), f, self.encoding, self.errors)
            if self.unit == "file":
                ids.append(name)
                texts.append(text)
                paths.append(str(f))
            else:
                for lineno, line in enumerate(LINE_BREAK.split(text), start=1):
                    if line.strip():
                        ids.append(f"{name}:{lineno}")
                        texts.append(line)
                        paths.append(str(f))
        df = pl.DataFrame({"id": ids, "text": texts, "path": paths}, schema={"id": pl.String, "text": pl.String,
                                                                             "path": pl.String})
        return normalise(df, text_column="text", id_column="id", default_ids=None, label=self.path)

    def output_schema(self, inputs):
        return {"id": pl.String, "text": pl.String, "path": pl.String}

    @classmethod
    def example(cls):
        return {"path": str(_example_dir()), "unit": "line"}, {}


HF_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")


def is_saved_hf_dataset(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and any((p / m).exists() for m in HF_MARKERS)


def split_path(path: str, split: str | None = None) -> tuple[str, str | None]:
    """`folder:split` as (folder, split); a path that exists as written is never split."""
    if not Path(path).exists() and ":" in path:
        base, _, named = path.rpartition(":")
        if base and named and is_saved_hf_dataset(base):
            if split is not None and split != named:
                raise ParamError("split", f"'{split}' contradicts the split in the path ('{path}')")
            return base, named
    return path, split


def open_saved_dataset(path: str, split: str | None):
    """A `datasets.Dataset` saved with `save_to_disk` (memory-mapped, never read whole); a DatasetDict needs a split."""
    import datasets

    try:
        loaded = datasets.load_from_disk(path)
    except (FileNotFoundError, ValueError) as exc:
        raise InputDataError(f"not a saved Hugging Face dataset ({exc})", param="path",
                             file=describe_path(path)) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            raise ParamError("split", f"the folder holds a DatasetDict; choose a split: {', '.join(loaded)} "
                                      f"(or write the path as '{path}:SPLIT')", file=describe_path(path))
        if split not in loaded:
            raise ParamError("split", f"no split '{split}'; available splits: {', '.join(loaded)}",
                             file=describe_path(path))
        return loaded[split]
    if split is not None:
        raise ParamError("split", f"the folder holds one Dataset, not a DatasetDict; leave out the split '{split}'",
                         file=describe_path(path))
    return loaded


def read_saved_dataset(path: str, split: str | None, *, text_column: str, id_column: str | None,
                       label: str) -> pl.DataFrame:
    loaded = open_saved_dataset(path, split)
    df = pl.from_arrow(loaded.data.table)
    ids = pl.Series("id", [str(i) for i in range(df.height)], dtype=pl.String)
    return normalise(df, text_column=text_column, id_column=id_column, default_ids=ids, label=label)


class ReadHfDataset(_FileSource):
    """Read a Hugging Face dataset saved with `save_to_disk` (no hub access).

    Parameters:
        path: the folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`; `folder:split` names a split
        split: which split of a DatasetDict to read
        text_column: the column holding the text (renamed to `text`)
        id_column: a unique column to use as `id`; by default `id` if present, else the row number
    """

    name = "read_hf_dataset"
    requires = ("datasets",)

    def __init__(self, path: str, split: str | None = None, text_column: str = "text", id_column: str | None = None):
        self.path = path
        self.split = split
        self.text_column = text_column
        self.id_column = id_column

    def fingerprint_extra(self):
        folder, split = split_path(self.path, self.split)
        return [split, _file_stats(sorted(p for p in Path(folder).rglob("*") if p.is_file()))]

    def validate(self) -> None:
        folder, _ = split_path(self.path, self.split)
        if not Path(folder).is_dir():
            raise ParamError("path", "is not a folder saved with datasets' save_to_disk", file=describe_path(folder))

    def run(self, ctx: Context) -> pl.DataFrame:
        folder, split = split_path(self.path, self.split)
        return read_saved_dataset(folder, split, text_column=self.text_column, id_column=self.id_column,
                                  label=self.path)

    @classmethod
    def example(cls):
        import datasets

        d = _example_dir()
        datasets.Dataset.from_parquet(str(d / "docs.parquet")).save_to_disk(str(d / "hf"))
        return {"path": str(d / "hf")}, {}


# ------------------------------------------------------------------------- embedded corpora


class PythonDocs(Stage):
    """The Python language reference and library topics shipped in the standard library (pydoc_data).

    Real English technical prose, present on every machine with Python, so pipelines and tests run
    offline. Columns: id, text, topic.

    Parameters:
        granularity: 'topic' gives one document per pydoc topic (79 on 3.11); 'paragraph' splits topics at blank lines
        min_chars: drop documents shorter than this
    """

    name = "python_docs"
    inputs = ()

    def __init__(self, granularity: Literal["topic", "paragraph"] = "topic", min_chars: int = 1):
        self.granularity = granularity
        self.min_chars = min_chars

    def validate(self) -> None:
        if self.min_chars < 0:
            raise ParamError("min_chars", f"must be >= 0, got {self.min_chars}")

    def fingerprint_extra(self):
        import platform

        return platform.python_version()

    def run(self, ctx: Context) -> pl.DataFrame:
        from pydoc_data.topics import topics

        ids, texts, names = [], [], []
        for topic in sorted(topics):
            body = topics[topic]
            pieces = [body] if self.granularity == "topic" else re.split(r"\n\s*\n", body)
            for i, piece in enumerate(pieces):
                piece = piece.strip("\n")
                if len(piece.strip()) < max(self.min_chars, 1):
                    continue
                ids.append(f"pydoc:{topic}" if self.granularity == "topic" else f"pydoc:{topic}:{i}")
                texts.append(piece)
                names.append(topic)
        if not ids:
            raise ParamError("min_chars", f"no document is at least {self.min_chars} characters long")
        return pl.DataFrame({"id": ids, "text": texts, "topic": names})

    def output_schema(self, inputs):
        return {"id": pl.String, "text": pl.String, "topic": pl.String}

    @classmethod
    def example(cls):
        return {"granularity": "paragraph", "min_chars": 400}, {}


def module_name(rel: Path) -> str:
    """The dotted name a source file is imported as: a package's `__init__.py` is the package (`json`), not
    `json.__init__`, so rows group by the module a user knows."""
    parts = rel.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


class PythonStdlib(Stage):
    """The standard library's own Python sources: about 30 MB of real code and docstrings.

    Columns: id (path relative to the stdlib), text, module, bytes.

    Parameters:
        include_tests: also read the test suites (test/, idlelib/idle_test/, ...)
        limit: read at most this many files (in path order), for quick runs
    """

    name = "python_stdlib"
    version = "2"  # 2: a package's __init__.py is its package in `module` (was 'json.__init__')
    inputs = ()

    def __init__(self, include_tests: bool = False, limit: int | None = None):
        self.include_tests = include_tests
        self.limit = limit

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ParamError("limit", f"must be >= 1 or null, got {self.limit}")

    def fingerprint_extra(self):
        import platform

        return [platform.python_version(), sysconfig.get_paths()["stdlib"]]

    def files(self) -> list[Path]:
        root = Path(sysconfig.get_paths()["stdlib"])
        out = []
        for f in sorted(root.rglob("*.py")):
            rel = f.relative_to(root)
            parts = rel.parts
            if parts[0] in ("site-packages", "dist-packages") or "__pycache__" in parts:
                continue
            if not self.include_tests and any(p in ("test", "tests", "idle_test") for p in parts):
                continue
            out.append(f)
        return out[: self.limit] if self.limit else out

    def run(self, ctx: Context) -> pl.DataFrame:
        root = Path(sysconfig.get_paths()["stdlib"])
        ids, texts, modules, sizes = [], [], [], []
        skipped = 0
        for f in self.files():
            data = f.read_bytes()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                skipped += 1  # a handful of test files are deliberately not UTF-8
                continue
            rel = f.relative_to(root)
            ids.append(str(rel))
            texts.append(text)
            modules.append(module_name(rel))
            sizes.append(len(data))
        ctx.record("files_skipped_not_utf8", skipped)
        if not ids:
            raise PipelineError("found no standard-library sources", file=str(root))
        return pl.DataFrame({"id": ids, "text": texts, "module": modules, "bytes": sizes})

    def output_schema(self, inputs):
        return {"id": pl.String, "text": pl.String, "module": pl.String, "bytes": pl.Int64}

    @classmethod
    def example(cls):
        return {"limit": 3}, {}
