"""Labelled text that ships with every Python: docstrings of standard-library packages, labelled by package.

Text-classification studies (label noise on text) need real labelled documents with no download and no
Debian package. The docstrings of `email`, `asyncio`, `unittest`... are real prose written by many
authors, and the package a docstring belongs to is a real, learnable topic label.
"""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from pipeline.errors import ParamError
from pipeline.params import NonNegativeInt, PositiveInt
from pipeline.stage import Context, Stage

DEFAULT_PACKAGES = ["asyncio", "email", "http", "importlib", "json", "logging", "unittest", "xml"]


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError):
        return []
    nodes = [tree] + [n for n in ast.walk(tree)
                      if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return [d for d in (ast.get_docstring(n) for n in nodes) if d]


class StdlibDocstrings(Stage):
    """Docstrings (module, class, function) of standard-library packages; the label is the package.

    Parameters:
        packages: standard-library packages (folders under the stdlib), one label each
        min_chars: drop docstrings shorter than this (one-line stubs carry little topic)
        max_per_package: cap per label, the first in file order (null keeps all)
    """

    name = "stdlib_docstrings"
    inputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, packages: list[str] = DEFAULT_PACKAGES, min_chars: NonNegativeInt = 80,  # noqa: B006
                 max_per_package: PositiveInt | None = 300):
        self.packages = packages
        self.min_chars = min_chars
        self.max_per_package = max_per_package

    def validate(self) -> None:
        if len(self.packages) < 2:
            raise ParamError("packages", f"needs at least 2 packages (labels), got {self.packages}")
        root = Path(sysconfig.get_paths()["stdlib"])
        missing = [p for p in self.packages if not (root / p).is_dir()]
        if missing:
            raise ParamError("packages", f"{missing} are not standard-library packages (folders) under {root}")

    def fingerprint_extra(self) -> Any:
        import sys

        return sys.version  # the docstrings change with the Python release

    def run(self, ctx: Context) -> pl.DataFrame:
        root = Path(sysconfig.get_paths()["stdlib"])
        texts, labels = [], []
        for package in self.packages:
            found = []
            for path in sorted((root / package).rglob("*.py")):
                if "test" in path.relative_to(root).parts[1:-1]:
                    continue  # test suites repeat the code's docstrings
                found.extend(d for d in _docstrings(path) if len(d) >= self.min_chars)
            found = list(dict.fromkeys(found))[: self.max_per_package]
            texts.extend(found)
            labels.extend([package] * len(found))
        return pl.DataFrame({"id": np.arange(len(texts), dtype=np.int64), "text": texts, "label": labels})

    @classmethod
    def example(cls) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        return {"packages": ["json", "email"], "max_per_package": 20}, {}
