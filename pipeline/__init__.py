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

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("corpusforge")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

from pipeline.config import PipelineConfig, load_config, parse_config  # noqa: E402
from pipeline.errors import InputDataError, ParamError, PipelineError  # noqa: E402
from pipeline.io import Dataset  # noqa: E402
from pipeline.loading import load, load_dataset  # noqa: E402
from pipeline.runner import RunReport, run_pipeline  # noqa: E402
from pipeline.stage import STAGES, Context, RowwiseStage, Stage, StageResult, load_plugins, stage_class  # noqa: E402

__all__ = [
    "STAGES", "Context", "Dataset", "InputDataError", "ParamError", "PipelineConfig", "PipelineError",
    "RowwiseStage", "RunReport", "Stage", "StageResult", "load", "load_config", "load_dataset",
    "load_plugins", "parse_config", "run_pipeline", "stage_class",
]
