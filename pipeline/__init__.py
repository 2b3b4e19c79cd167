"""corpusforge's engine: stages that read and write Parquet, composed into reproducible pipelines.

Library use inside training code:

    import pipeline
    from stages.noise import LabelNoise
    noisy = LabelNoise(mode="flip", rate=0.2).apply(df, seed=0)    # a polars DataFrame
    report = pipeline.run_pipeline("configs/quickstart.yaml", workdir="data/runs")
    lf = pipeline.load("data/runs/quickstart/docs")                # a polars LazyFrame
    ds = pipeline.load_dataset("data/runs/quickstart/docs")        # a memory-mapped datasets.Dataset
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any


def _check_stage_library_is_importable() -> None:
    """Fail with what to do when a training repository's own `stages.py` (or `stages/`) hides the stage library.

    The engine imports `stages` to find the built-in stages; a module of the same name earlier on
    sys.path would be imported instead, and every built-in stage would be "unknown".
    """
    ours = Path(__file__).resolve().parent.parent / "stages"
    spec = importlib.util.find_spec("stages")
    found = [Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec else []
    if spec is None or ours in found:
        return
    where = spec.origin or (str(found[0]) if found else "an unnamed module")
    raise ImportError(
        f"corpusforge's stage library 'stages' is hidden by your module {where}, which comes first on sys.path. "
        f"Rename it or move it into your own package (mylab/stages.py, imported as mylab.stages); see the "
        f"README, 'Use from a training repository'.",
        name="stages", path=where,
    )


_check_stage_library_is_importable()

# The names below (and __version__) are imported when first used (PEP 562), not with the package: the `pipeline`
# command imports this package before its own code can catch Ctrl-C, and these imports (polars, pyarrow, the
# engine, importlib.metadata) took ~0.3 s of that, so an interrupt then printed a traceback; `pipeline.cli.main`
# imports what it needs inside its handler.
_EXPORTS = {
    "PipelineBuilder": "builder", "StepHandle": "builder",
    "PipelineConfig": "config", "load_config": "config", "parse_config": "config",
    "InputDataError": "errors", "ParamError": "errors", "PipelineError": "errors",
    "Dataset": "io",
    "load": "loading", "load_dataset": "loading",
    "STAGES": "registry", "load_plugins": "registry", "stage_class": "registry",
    "StageResult": "results",
    "RunReport": "runner", "run_pipeline": "runner",
    "Context": "stage", "RowwiseStage": "stage", "Stage": "stage",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """An exported name, or a submodule (`pipeline.runner` after a bare `import pipeline`), imported on first use."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("corpusforge")
        except PackageNotFoundError:  # running from a source tree that was not installed
            found = "0.0.0+source"
        globals()["__version__"] = found
        return found
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    if name.isidentifier() and not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
