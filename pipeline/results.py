"""What one library call of a stage gives back (`Stage.execute`): its tables, stats, and the folder of its artefacts."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.errors import ParamError


@dataclass
class StageResult:
    """Everything one library call of a stage produced.

    Artefacts (a report, an index) are files in `artefact_dir`: the caller's `workdir` when one was
    given, else a temporary folder that lives exactly as long as this result (removed when the
    result is garbage-collected, at `close()`, at the end of a `with` block, or at interpreter
    exit), so library calls in a training loop leave nothing behind. `keep_artefacts(folder)`
    moves them somewhere the caller owns.
    """

    table: pl.DataFrame
    side_outputs: dict[str, pl.DataFrame]
    artefact_dir: Path
    stats: dict
    artefacts: list[str] = field(default_factory=list)
    _cleanup: Any = field(default=None, repr=False, compare=False)

    def keep_artefacts(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Move the artefacts into `folder` (created if needed) and make it `artefact_dir`.

        A file of the same name already in `folder` is refused (nothing is moved) unless `overwrite`.
        """
        folder = Path(folder).expanduser()
        if folder.resolve() == Path(self.artefact_dir).resolve():  # already there: moving each onto itself deleted it
            if self._cleanup is not None:  # a temporary folder the caller now owns
                self._cleanup.detach()
                self._cleanup = None
            return folder
        if folder.exists() and not folder.is_dir():
            raise ParamError("folder", f"'{folder}' is a file; pass a folder to keep the artefacts in (created if "
                                       "needed)")
        taken = [name for name in self.artefacts if (folder / name).exists() or (folder / name).is_symlink()]
        if taken and not overwrite:
            raise ParamError("folder", f"'{folder}' already holds {', '.join(taken)}; pass overwrite=True to "
                                       "replace it, or another folder")
        folder.mkdir(parents=True, exist_ok=True)
        for name in self.artefacts:
            target = folder / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            shutil.move(str(self.artefact_dir / name), str(target))
        self.close()
        self.artefact_dir = folder
        return folder

    def close(self) -> None:
        """Remove the temporary artefact folder now (nothing happens for a caller's `workdir`)."""
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None

    def __enter__(self) -> StageResult:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
