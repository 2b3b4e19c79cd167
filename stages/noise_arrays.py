"""Label noise on arrays, for training loops: `flip_labels(y, ...)` and `dilute(X, y, ...)`.

Both go through the `label_noise` stage itself (`stages.noise.LabelNoise`) on a two-column table
(`id` = the row position, or your `ids`; `label` = y), so counts, seeds and chosen rows are exactly
those of the stage and of a `pipeline run` with the same seed: class i gets floor(rate * N_i + 0.5)
flips, dilution adds floor(alpha * N + 0.5) rows. NumPy arrays and torch tensors come back as new arrays of
the same kind (a tensor keeps its dtype and device; the input is never modified); anything else (a list, a
pandas Series or DataFrame) comes back as a NumPy array. torch is never imported otherwise.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from pipeline.errors import ParamError, PipelineError
from pipeline.params import check_seed
from stages.noise import LabelNoise


def _is_torch(a: Any) -> bool:
    return type(a).__module__.startswith("torch")


def _to_numpy(a: Any) -> np.ndarray:
    if _is_torch(a):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _like(values: np.ndarray, template: Any) -> Any:
    """`values` (copied: writable) in the container `template` came in (torch: same dtype and device)."""
    values = np.array(values)
    if _is_torch(template):
        import torch

        return torch.as_tensor(values, dtype=template.dtype, device=template.device)
    return values.astype(template.dtype, copy=False) if isinstance(template, np.ndarray) else values


# The stage's words for the table this module builds, in the words of the arrays the caller passed.
_ARGUMENT_OF_COLUMN = {"label_column": "y", "feature_column": "X", "id_column": "ids"}
_WORDS = (("input 'data' column 'label' (named by parameter 'label_column')", "y"), ("label column 'label'", "y"),
          ("column 'label'", "y"), ("input 'data' has no rows", "y is empty"),
          ("input 'data' column 'id'", "ids"), ("set id_column: null", "pass ids=None"),
          ("set noise: structured", "pass noise='structured'"), ("column 'features'", "X"))


@contextmanager
def _in_array_words():
    """Errors of the stage run on the table built from the arrays, naming the arguments (`y`, `X`, `ids`) instead
    of the stage's parameters (`label_column`) and the table (`input 'data'`) the caller never passed."""
    try:
        yield
    except PipelineError as exc:
        exc.param = _ARGUMENT_OF_COLUMN.get(exc.param, exc.param)
        for stage_words, array_words in _WORDS:
            exc.message = exc.message.replace(stage_words, array_words)
            exc.hint = exc.hint and exc.hint.replace(stage_words, array_words)
        exc.file = None if exc.file == "input 'data'" else exc.file
        exc.args = (exc.message,)
        raise


def _table(y: np.ndarray, ids: Any | None) -> pl.DataFrame:
    if y.ndim != 1:
        raise ValueError(f"y must be one-dimensional (one label per row), got shape {y.shape}")
    id_values = np.arange(y.size, dtype=np.int64) if ids is None else _to_numpy(ids)
    if len(id_values) != y.size:
        raise ValueError(f"ids has {len(id_values)} values for {y.size} labels")
    return pl.DataFrame({"id": id_values, "label": y})


@dataclass
class NoisyLabels:
    """What `flip_labels(..., details=True)` returns: the noisy labels and what happened to each row."""

    y: Any  # noisy labels: a NumPy array, or a tensor like a tensor y
    is_noisy: np.ndarray  # bool per row
    transitions: pl.DataFrame  # realised clean x noisy counts
    stats: dict  # requested vs realised noise, as in the stage's manifest


def flip_labels(y: Any, *, noise: str = "symmetric", rate: float | dict | None = None, mapping: dict | None = None,
                matrix: list[list[float]] | None = None, classes: list | None = None, seed: int = 0,
                ids: Any | None = None, details: bool = False) -> Any:
    """Relabel rows at an exact rate; returns new noisy labels, `y` is not modified (or `NoisyLabels` with `details`).

    `noise`, `rate`, `mapping`, `matrix` and `classes` mean what they mean for `label_noise` with
    `mode: flip`; `ids` keys the random draws (default: row position), one unique id a row: a repeated id is
    refused (it would draw its twin's flip).
    """
    seed = check_seed(seed)
    labels = _to_numpy(y)
    with _in_array_words():
        stage = LabelNoise(mode="flip", noise=noise, rate=rate, mapping=mapping, matrix=matrix, classes=classes)
        result = stage.execute(_table(labels, ids), seed=seed)
    noisy = result.table["label"].to_numpy()
    if not details:
        return _like(noisy, y)
    return NoisyLabels(_like(noisy, y), result.table["is_noisy"].to_numpy(),
                       result.side_outputs.get("transitions"), result.stats)


@dataclass
class Diluted:
    """What `dilute` returns: every clean row, then the added noisy ones (the stage's order)."""

    X: Any  # inputs of every row (a NumPy array, or a tensor like a tensor X); added rows repeat a data row's input
    y: Any  # labels (noisy for added rows); the added rows are those from position N = len(y) on
    is_noisy: np.ndarray  # bool per row: label differs from the true one (an added row whose draw hit it is False)
    source_index: np.ndarray  # for each row, the position in X it was taken from
    stats: dict


def dilute(X: Any, y: Any, *, alpha: float = 1.0, noise: str = "uniform", exclude_true: bool = False,
           delta: float = 0.5, confusion: str | dict | list = "derangement", classes: list | None = None,
           seed: int = 0) -> Diluted:
    """Rolnick-style dilution: keep every row and add floor(alpha * N + 0.5) rows with noisy labels.

    The parameters mean what they mean for `label_noise` with `mode: dilute`. `confusion:
    centroid` uses the rows of X (flattened) as the feature vectors.
    """
    seed = check_seed(seed)
    features, labels = _to_numpy(X), _to_numpy(y)
    if len(features) != labels.size:
        raise ValueError(f"X has {len(features)} rows for {labels.size} labels")
    table = _table(labels, None)
    feature_column = None
    if confusion == "centroid" and noise == "structured":  # (uniform noise refuses a confusion, below)
        if not (np.issubdtype(features.dtype, np.number) or features.dtype == bool):
            raise ParamError("X", f"confusion='centroid' uses the rows of X as feature vectors, so X must hold "
                                  f"numbers; it holds {features.dtype}")
        feature_column = "features"
        flat = features.reshape(len(features), -1).astype(np.float64)
        table = table.with_columns(pl.Series("features", flat))
    with _in_array_words():
        stage = LabelNoise(mode="dilute", noise=noise, alpha=alpha, exclude_true=exclude_true, delta=delta,
                           confusion=confusion, classes=classes, feature_column=feature_column)
        result = stage.execute(table, seed=seed)
    source = result.table["source_id"].to_numpy().astype(np.int64)
    if _is_torch(X):
        import torch

        rows = X[torch.as_tensor(source, device=X.device)]
    else:
        rows = np.asarray(X)[source]
    return Diluted(rows, _like(result.table["label"].to_numpy(), y), result.table["is_noisy"].to_numpy(),
                   source, result.stats)
