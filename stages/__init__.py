"""The stage library: one module per stage family.

Every module in this package is imported when the engine loads stages (`load_all`, called by
`pipeline.load_plugins`), so a new family is a new module here and nothing else; each stage
registers itself by its `name`. Importing one family (`stages.leakage`) does not import the others:
a Ray worker unpickling one stage pays for that stage's imports only (the whole library costs
about 0.3 CPU-s more per worker process, scipy and the study stages among it).
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


def load_all() -> None:
    """Import every stage family, so every built-in stage is registered."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_check_engine_is_importable()
