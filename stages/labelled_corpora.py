"""Real labelled data that ships with installed packages, so label-noise studies need no download.

- `sklearn_digits`: scikit-learn's 1,797 handwritten digits (8 x 8 images, 10 classes).
- `fortunes`: the Debian `fortunes` files, one category per file (computers, science, politics...),
  each fortune a labelled text. About 40 categories, unbalanced (10 to ~1,250 items each).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from pipeline.errors import ParamError, PipelineError
from pipeline.params import NonNegativeInt
from pipeline.stage import Context, Stage

FORTUNES_DIR = "/usr/share/games/fortunes"
# Points the default fortunes location elsewhere (CI points it at an empty folder to prove the
# suite passes on a machine without the Debian package).
FORTUNES_DIR_ENV = "CORPUSFORGE_FORTUNES_DIR"
FORTUNES_HINT = "apt-get install fortunes fortunes-min"
# Old fortune files bold and underline by overstriking: "x\bx", "_\bx", or "____\b\b\b\bdoes".
_OVERSTRIKE = re.compile("[^\x08]\x08")


class SklearnDigits(Stage):
    """scikit-learn's handwritten digits: 1,797 8x8 grey images (values 0-16), labels 0-9, no download.

    Parameters:
        limit: keep only the first `limit` images (null keeps all 1,797)
    """

    name = "sklearn_digits"
    inputs: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ("sklearn",)

    def __init__(self, limit: int | None = None):
        self.limit = limit

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ParamError("limit", f"must be >= 1 or null, got {self.limit}")

    def run(self, ctx: Context) -> pl.DataFrame:
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels = digits.data.astype(np.float32)[: self.limit]
        labels = digits.target.astype(np.int64)[: self.limit]
        return pl.DataFrame({
            "id": np.arange(labels.size, dtype=np.int64),
            "pixels": pl.Series(pixels.tolist(), dtype=pl.List(pl.Float32)),
            "label": labels,
        })

    @classmethod
    def example(cls) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        return {"limit": 50}, {}


def fortunes_dir(directory: str | Path | None = None) -> Path:
    """Where the fortune files are: `directory`, else $CORPUSFORGE_FORTUNES_DIR, else Debian's location."""
    return Path(directory or os.environ.get(FORTUNES_DIR_ENV) or FORTUNES_DIR)


def fortune_categories(directory: str | Path | None = None) -> list[str]:
    """Category names: the plain fortune files (not the `.dat` indexes or `.u8` links).

    A missing folder and a folder without fortune files are both "not installed": the error names
    the folder and the apt command.
    """
    root = fortunes_dir(directory)
    if not root.is_dir():
        raise PipelineError(f"no fortunes directory at {root}", stage="fortunes", hint=FORTUNES_HINT)
    names = sorted(p.name for p in root.iterdir() if p.is_file() and not p.is_symlink() and "." not in p.name)
    if not names:
        raise PipelineError(f"no fortune files in {root}", stage="fortunes", hint=FORTUNES_HINT)
    return names


def fortunes_installed(directory: str | Path | None = None) -> bool:
    """Whether the fortune files are there (tests and examples skip without them)."""
    try:
        return bool(fortune_categories(directory))
    except PipelineError:
        return False


def read_fortunes(path: Path) -> list[str]:
    """The fortunes of one file: blocks separated by lines holding a single '%'."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    while "\x08" in text:  # each pass strips one level of a run of backspaces
        stripped = _OVERSTRIKE.sub("", text)
        if stripped == text:
            break
        text = stripped
    text = text.replace("\x08", "")
    items = re.split(r"^%\s*$", text, flags=re.MULTILINE)
    return [item.strip("\n") for item in items if item.strip()]


class Fortunes(Stage):
    """Debian fortunes as a labelled text corpus: columns id ('<category>/<n>'), text, label (the category).

    Parameters:
        categories: the categories (file names) to read; null reads all of them
        max_per_category: keep the first n fortunes of each category (balances classes); null keeps all
        min_per_category: skip categories with fewer fortunes (only when categories is null)
        directory: where the fortune files are; null: $CORPUSFORGE_FORTUNES_DIR, else /usr/share/games/fortunes
    """

    name = "fortunes"
    inputs: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        categories: list[str] | None = None,
        max_per_category: int | None = None,
        min_per_category: NonNegativeInt = 1,
        directory: str | None = None,
    ):
        self.categories = categories
        self.max_per_category = max_per_category
        self.min_per_category = min_per_category
        self.directory = directory

    def validate(self) -> None:
        if self.max_per_category is not None and self.max_per_category < 1:
            raise ParamError("max_per_category", f"must be >= 1 or null, got {self.max_per_category}")
        if self.categories is not None and not self.categories:
            raise ParamError("categories", "is empty; list category names or use null for all")

    def _files(self) -> list[Path]:
        available = fortune_categories(self.directory)
        root = fortunes_dir(self.directory)
        if self.categories is None:
            return [root / c for c in available]
        unknown = [c for c in self.categories if c not in available]
        if unknown:
            raise ParamError("categories", f"unknown categor(ies) {unknown}; available: {', '.join(available)}")
        return [root / c for c in self.categories]

    def fingerprint_extra(self) -> Any:
        try:
            files = self._files()
            return [str(fortunes_dir(self.directory)), [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in files]]
        except PipelineError:
            return None

    def run(self, ctx: Context) -> pl.DataFrame:
        ids, texts, labels = [], [], []
        for path in self._files():
            items = read_fortunes(path)
            if self.categories is None and len(items) < self.min_per_category:
                continue
            items = items[: self.max_per_category]
            ids += [f"{path.name}/{i}" for i in range(len(items))]
            texts += items
            labels += [path.name] * len(items)
        ctx.record("categories", {c: labels.count(c) for c in dict.fromkeys(labels)})
        return pl.DataFrame({"id": ids, "text": texts, "label": labels},
                            schema={"id": pl.String, "text": pl.String, "label": pl.String})

    @classmethod
    def example(cls) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        fortune_categories()  # absent data: raises with the apt command, and the contract test skips
        return {"categories": ["science", "food"], "max_per_category": 20}, {}
