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

import importlib.util
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


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

try:
    __version__ = version("corpusforge")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

from pipeline.builder import PipelineBuilder, StepHandle  # noqa: E402
from pipeline.config import PipelineConfig, load_config, parse_config  # noqa: E402
from pipeline.errors import InputDataError, ParamError, PipelineError  # noqa: E402
from pipeline.io import Dataset  # noqa: E402
from pipeline.loading import load, load_dataset  # noqa: E402
from pipeline.registry import STAGES, load_plugins, stage_class  # noqa: E402
from pipeline.results import StageResult  # noqa: E402
from pipeline.runner import RunReport, run_pipeline  # noqa: E402
from pipeline.stage import Context, RowwiseStage, Stage  # noqa: E402

__all__ = [
    "STAGES", "Context", "Dataset", "InputDataError", "ParamError", "PipelineBuilder", "PipelineConfig",
    "PipelineError", "RowwiseStage", "RunReport", "Stage", "StageResult", "StepHandle", "load", "load_config",
    "load_dataset",
    "load_plugins", "parse_config", "run_pipeline", "stage_class",
]
