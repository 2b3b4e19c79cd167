"""Caches you can see and clear (`pipeline cache`).

Stage families own their caches (the embedding cache, distilled static models) and the engine owns
one (Arrow files behind `pipeline.load_dataset`); each registers where its entries live, so the
engine lists and clears them without knowing what they hold. An entry is one file or folder that
can be removed on its own without corrupting the rest (a cache shard, a model folder).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError


@dataclass
class CacheKind:
    name: str
    description: str
    roots: Callable[[Path], list[Path]]  # workdir -> folders holding entries
    entries: Callable[[Path], list[Path]]  # root -> its removable entries


CACHES: dict[str, CacheKind] = {}


def register_cache(name: str, description: str, roots: Callable[[Path], list[Path]],
                   entries: Callable[[Path], list[Path]]) -> None:
    CACHES[name] = CacheKind(name, description, roots, entries)


@dataclass
class Entry:
    cache: str
    path: Path
    bytes: int
    modified: dt.datetime


def _measure(path: Path) -> tuple[int, float]:
    """Bytes on disk and newest modification time of a file or a whole folder."""
    if path.is_file():
        st = path.stat()
        return st.st_size, st.st_mtime
    size, newest = 0, path.stat().st_mtime
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            st = os.stat(os.path.join(dirpath, name))
            size, newest = size + st.st_size, max(newest, st.st_mtime)
    return size, newest


def _unique_roots(kind: CacheKind, workdir: Path) -> list[Path]:
    seen: dict[Path, None] = {}
    for root in kind.roots(workdir):
        seen.setdefault(Path(root).expanduser().resolve(), None)
    return list(seen)


def cache_entries(workdir: Path, kinds: list[str] | None = None) -> dict[str, tuple[list[Path], list[Entry]]]:
    """For each cache: the folders it lives in and its entries (size, last modified)."""
    out = {}
    for name in kinds or sorted(CACHES):
        kind = CACHES[name]
        roots = _unique_roots(kind, workdir)
        entries = []
        for root in roots:
            if root.is_dir():
                for path in kind.entries(root):
                    size, mtime = _measure(path)
                    entries.append(Entry(name, path, size, dt.datetime.fromtimestamp(mtime, dt.UTC)))
        out[name] = (roots, entries)
    return out


def parse_older_than(text: str) -> dt.datetime:
    """`2026-11-01` (a date, UTC), a full ISO time, or an age such as `30d` / `12h`."""
    age = re.fullmatch(r"(\d+)\s*([dh])", text.strip())
    if age:
        amount = int(age.group(1))
        delta = dt.timedelta(days=amount) if age.group(2) == "d" else dt.timedelta(hours=amount)
        return dt.datetime.now(dt.UTC) - delta
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise PipelineError(f"--older-than expects a date (2026-11-01), a time, or an age (30d, 12h); got '{text}'") \
            from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def clear_caches(workdir: Path, kinds: list[str] | None = None,
                 older_than: dt.datetime | None = None) -> list[Entry]:
    """Remove the entries (of `kinds`, last modified before `older_than`); returns what was removed."""
    removed = []
    for _name, (_roots, entries) in cache_entries(workdir, kinds).items():
        for entry in entries:
            if older_than is not None and entry.modified >= older_than:
                continue
            if entry.path.is_dir():
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                entry.path.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def check_kinds(kinds: list[str] | None) -> None:
    unknown = [k for k in kinds or [] if k not in CACHES]
    if unknown:
        raise PipelineError(f"unknown cache {unknown}; caches are: {', '.join(sorted(CACHES))}")


def _arrow_roots(workdir: Path) -> list[Path]:
    from pipeline.stage import default_cache_dir

    return [default_cache_dir() / "arrow"]


register_cache("arrow", "memory-mappable Arrow copies behind pipeline.load_dataset", _arrow_roots,
               lambda root: sorted(root.glob("*.arrow")))
