"""Reading finished steps back: as a polars LazyFrame, or as a memory-mapped Hugging Face dataset."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import polars as pl
import pyarrow as pa

from pipeline.errors import ParamError
from pipeline.files import SIDE_SEPARATOR, is_glob, side_dir
from pipeline.io import Dataset
from pipeline.rundir import refuse_run_folder
from pipeline.stage import default_cache_dir


def resolve(path: str | Path) -> Path | str:
    """Where the table a path names lives: `<run>/<step>` is the step's own table; a side output is
    `<run>/<step>@<side>`, also written `<run>/<step>:<side>` (as in a config) or `<run>/<step>/<side>`
    (where side outputs were before they moved out of the step folder)."""
    text = str(path)
    refuse_run_folder(text)
    if is_glob(text) or Path(text).exists():
        return path
    folder = Path(text)
    step, colon, side = folder.name.rpartition(":")
    if colon and step and SIDE_SEPARATOR not in step:
        return side_dir(folder.with_name(step), side)
    if folder.parent.name and folder.parent.is_dir() and side_dir(folder.parent, folder.name).is_dir():
        return side_dir(folder.parent, folder.name)
    return path


def load(path: str | Path) -> pl.LazyFrame:
    """A step's output as a LazyFrame: `<workdir>/<pipeline>/<step>`, a side output
    (`<step>@<side>`, or `<step>:<side>`), or any Parquet file, folder or glob."""
    return Dataset.from_parquet(resolve(path)).lazy()


def load_dataset(path: str | Path, cache_dir: str | Path | None = None):
    """A step's output as a `datasets.Dataset` backed by a memory-mapped Arrow file.

    Parquet is compressed, so it cannot be memory-mapped as is; the first call converts it once,
    batch by batch, into an Arrow stream file under the cache (keyed by the files' content
    identity), and every later call maps that file without reading it into memory.
    """
    import datasets

    ds = Dataset.from_parquet(resolve(path))
    target = _arrow_cache(cache_dir) / f"{ds.stat_fingerprint()}.arrow"
    if not target.exists():
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, ds.schema) as writer:
            for batch in ds.iter_arrow_batches():
                writer.write_batch(batch)
        os.replace(tmp, target)
    return datasets.Dataset.from_file(str(target), in_memory=False)


def _arrow_cache(cache_dir: str | Path | None) -> Path:
    """The folder of converted Arrow files (created), `~` expanded; one that cannot be made is refused naming it."""
    if cache_dir is not None and not isinstance(cache_dir, (str, Path)):
        raise ParamError("cache_dir", f"expects a folder path (str or Path), got {cache_dir!r} "
                                      f"({type(cache_dir).__name__})")
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "arrow"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParamError("cache_dir", f"cannot make the folder '{folder}' ({exc.strerror}); pass a folder you can "
                                      "write to") from None
    return folder
