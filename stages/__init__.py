"""The stage library: one module per stage family.

Every module in this package is imported when the engine loads stages, so a new family is a new
module here and nothing else; each stage registers itself by its `name`.
"""

import importlib
import pkgutil
import sys
from pathlib import Path


def _check_engine_is_importable() -> None:
    """Fail with what to do when a training repository's own `pipeline.py` hides the engine package.

    Without this, the first stage module fails with Python's "'pipeline' is not a package".
    """
    engine = sys.modules.get("pipeline") or importlib.import_module("pipeline")
    if hasattr(engine, "__path__"):
        return
    where = getattr(engine, "__file__", None) or "an unnamed module"
    raise ImportError(
        f"corpusforge's engine package 'pipeline' is hidden by your module {where}, which comes first on "
        f"sys.path. Rename that file (e.g. train_pipeline.py) or move it into your own package "
        f"(mylab/pipeline.py, imported as mylab.pipeline); see the README, 'Use from a training repository'.",
        name="pipeline", path=str(Path(where)) if where else None,
    )


_check_engine_is_importable()
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
