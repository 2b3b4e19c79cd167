"""`read_iterable`: a streaming source from your own Python, never holding the whole corpus.

The corpus comes from a callable you name, `module:function` or `path/to/script.py:name`, that
returns rows one at a time: a generator of dicts, a `datasets.IterableDataset` (or a `Dataset`),
or a Hugging Face datasets script's builder class (`GeneratorBasedBuilder`), which is streamed
with `as_streaming_dataset`, never downloaded or cached. Rows are taken `batch_rows` at a time and
written as they come, so memory holds one batch (plus the set of ids seen, to refuse duplicates).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import itertools
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

from pipeline.errors import InputDataError, ParamError
from pipeline.files import describe_path, find_files
from pipeline.stage import Context, Stage
from stages.factory_source import check_factory, factory_sources, split_spec
from stages.sources import _file_stats


def load_factory(spec: str) -> Any:
    """The object `spec` names: `module:attr` (importable) or `script.py:attr` (a file, loaded by path)."""
    target, attr = split_spec(spec)
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ParamError("factory", "no such script", file=describe_path(target))
        name = f"corpusforge_script_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
        module = sys.modules.get(name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module  # datasets' builders look their module up by name
            loader_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ParamError("factory", f"cannot import '{target}' ({exc})") from None
    if not hasattr(module, attr):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ParamError("factory", f"'{target}' has no '{attr}'; it defines: {', '.join(names) or 'nothing callable'}")
    return getattr(module, attr)


def _is_builder(obj: Any) -> bool:
    import datasets

    return inspect.isclass(obj) and issubclass(obj, datasets.DatasetBuilder)


def _batches(rows: Any, batch_rows: int) -> Iterator[dict[str, list] | list[dict]]:
    """Batches from whatever the factory returned, pulling only one batch at a time."""
    if hasattr(rows, "iter") and type(rows).__module__.startswith("datasets"):
        yield from rows.iter(batch_size=batch_rows)  # IterableDataset or Dataset: dict of columns
        return
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Iterable):  # a string iterates its characters
        raise ParamError("factory", f"must return an iterable of rows (dicts), got {type(rows).__name__}")
    iterator = iter(rows)
    while batch := list(itertools.islice(iterator, batch_rows)):
        yield batch


class ReadIterable(Stage):
    """Stream a corpus from your own Python: a generator of dicts, an IterableDataset, or a datasets script.

    Parameters:
        factory: what makes the rows, 'module:function' or 'path/to/script.py:name' (a function or a datasets builder class)
        kwargs: keyword arguments for the function (or the builder's config); paths among them are fingerprinted
        split: the split a datasets builder streams
        text_column: the field holding the text (renamed to `text`)
        id_column: a unique field to use as `id`; by default `id` if present, else the row number
        batch_rows: rows taken (and written) at a time
        limit: stop after this many rows (null reads everything)
    """

    name = "read_iterable"
    version = "2"  # 2: a row that is not a dict, or a text that is not a string, is refused (was read as "5")
    inputs: ClassVar[tuple[str, ...]] = ()
    allow_empty_input = True

    def __init__(self, factory: str, kwargs: dict[str, Any] | None = None, split: str = "train",
                 text_column: str = "text", id_column: str | None = None, batch_rows: int = 10_000,
                 limit: int | None = None):
        self.factory = factory
        self.kwargs = kwargs
        self.split = split
        self.text_column = text_column
        self.id_column = id_column
        self.batch_rows = batch_rows
        self.limit = limit

    def validate(self) -> None:
        if self.batch_rows < 1:
            raise ParamError("batch_rows", f"must be >= 1, got {self.batch_rows}")
        if self.limit is not None and self.limit < 1:
            raise ParamError("limit", f"must be >= 1 or null, got {self.limit}")
        check_factory(self.factory)  # never imports it: validating a config runs no code

    def fingerprint_extra(self) -> Any:
        """The factory's source files (the module or script it names and the file a re-exported name comes
        from: read, not run), and the files any path-valued kwarg names (the data it reads)."""
        sources = factory_sources(self.factory)
        digest = hashlib.sha256(b"".join(hashlib.sha256(p.read_bytes()).digest() for p in sources)).hexdigest() \
            if sources else None
        data = {k: _file_stats(find_files(v)) for k, v in (self.kwargs or {}).items()
                if isinstance(v, str) and Path(v).exists()}
        return [digest, data]

    def _rows(self, workdir: str) -> Any:
        made = load_factory(self.factory)
        if _is_builder(made):
            builder = made(cache_dir=workdir, **(self.kwargs or {}))
            return builder.as_streaming_dataset(split=self.split)
        if not callable(made):
            if isinstance(made, (str, bytes)) or not isinstance(made, Iterable):
                raise ParamError("factory", f"'{self.factory}' is a {type(made).__name__}, not a function, "
                                            "builder class or iterable of rows")
            return made
        try:
            inspect.signature(made).bind(**(self.kwargs or {}))
        except TypeError as exc:
            raise ParamError("kwargs", f"{exc} (for '{self.factory}')") from None
        except ValueError:
            pass  # a callable without a signature (some built-ins): let the call say
        return made(**(self.kwargs or {}))

    def run(self, ctx: Context) -> Iterator[pl.DataFrame]:
        seen: set[str] = set()
        produced = texts = 0
        with tempfile.TemporaryDirectory(prefix="corpusforge-builder-") as workdir:
            for batch in _batches(self._rows(workdir), self.batch_rows):
                if isinstance(batch, list):
                    self._refuse_bad_rows(batch, produced)
                frame = pl.DataFrame(batch, infer_schema_length=None)
                if self.limit is not None:
                    frame = frame.head(self.limit - produced)
                if frame.height == 0:
                    break
                if frame.schema.get(self.text_column) == pl.Null:  # a batch of null texts: later ones may have text
                    frame = frame.with_columns(pl.col(self.text_column).cast(pl.String))
                out = self._normalise(frame, produced, seen)
                texts += out.height - out["text"].null_count()
                yield out
                produced += frame.height
                if self.limit is not None and produced >= self.limit:
                    break
        if produced == 0:
            raise InputDataError("the factory produced no rows", param="factory", file=self.factory)
        if texts == 0:
            from stages.file_stream import no_text

            raise no_text(self.text_column, f"all {produced:,} rows", self.factory)
        ctx.record("rows_streamed", produced)

    def _refuse_bad_rows(self, rows: list, offset: int) -> None:
        """Refuse a row that is not a dict (it failed deep in polars, reported as a bug in corpusforge) and a text
        that is not a string: a number beside string texts became its digits ("5"), a document made up without a
        word, as `read_corpus` refuses for JSON Lines. A null (or missing) text stays a null text."""
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise InputDataError(f"row {offset + i} is a {type(row).__name__}, not a dict of fields; yield one "
                                     "dict per row", param="factory", file=self.factory)
            text = row.get(self.text_column)
            if text is not None and not isinstance(text, str):
                raise InputDataError(f"row {offset + i}: field '{self.text_column}' holds {text!r:.40}, not a string; "
                                     "it would be read as the text of a document. Yield a string (or None), or name "
                                     "the text field with text_column", param="text_column", file=self.factory)

    def _normalise(self, frame: pl.DataFrame, offset: int, seen: set[str]) -> pl.DataFrame:
        from stages.sources import normalise

        ids = pl.Series("id", [str(i) for i in range(offset, offset + frame.height)], dtype=pl.String)
        out = normalise(frame, text_column=self.text_column, id_column=self.id_column, default_ids=ids,
                        label=self.factory)
        batch_ids = out["id"].to_list()
        repeated = seen.intersection(batch_ids)
        if repeated:
            raise InputDataError(f"ids are not unique, e.g. {sorted(repeated)[:3]}", param="id_column",
                                 file=self.factory)
        seen.update(batch_ids)
        return out

    @classmethod
    def example(cls) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        return {"factory": "stages.read_stream:pydoc_topics", "kwargs": {"limit": 12}, "batch_rows": 5}, {}


def pydoc_topics(limit: int | None = None) -> Iterator[dict[str, str]]:
    """The pydoc topics one at a time: the example factory (real text that ships with Python)."""
    from pydoc_data.topics import topics

    for name in sorted(topics)[:limit]:
        yield {"id": name, "text": topics[name]}
