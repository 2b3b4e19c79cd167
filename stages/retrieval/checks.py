"""The arguments of `Index.build` and `Index.search`, checked before FAISS or polars see them.

The settings `Index.build` shares with the `index` stage are checked by the stage's own declarations
(`pipeline.params.check_params` on `BuildIndex`), so the library call and a config refuse the same values.
Errors name the parameter: a wrong-length `ids` or a NaN vector would otherwise surface as a polars
gather error at search time, or as a row no query can ever find.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError
from pipeline.params import check_params
from stages._args import refuse_bare_string, text_list
from stages._vectors import finite_rows
from stages.embedding import series_to_vectors


def build_vectors(vectors: Any, settings: dict[str, Any]) -> np.ndarray:
    """The (n, dim) float32 matrix to index; `settings` (index_type, metric, train_size, recall_target, backend,
    refine) are checked as the `index` stage checks its params."""
    from stages.retrieval.build import BuildIndex  # build.py imports index.py, which imports this module

    check_params(BuildIndex, (), settings)
    matrix = number_matrix(vectors, "vectors")
    if matrix.ndim != 2 or len(matrix) == 0:
        raise InputDataError(f"need a non-empty (n, dim) matrix of vectors, got shape {matrix.shape}", param="vectors")
    return finite_rows(matrix, "vectors", param="vectors")


def number_matrix(values: Any, param: str) -> np.ndarray:
    """`values` as a C-contiguous float32 array, or InputDataError naming `param`: rows of different lengths (a list
    of lists) or values that are no numbers failed in NumPy with a ValueError naming neither."""
    try:
        return np.ascontiguousarray(values, np.float32)
    except (TypeError, ValueError) as exc:
        raise InputDataError(f"{param} must be numbers, one row of the same length per vector ({exc})",
                             param=param) from None


def load_settings(mmap: Any, mmap_threshold_mb: Any) -> None:
    """`Index.load`'s settings: `mmap_threshold_mb` as the `retrieve` stage checks it, `mmap` a bool or None."""
    from stages.retrieval.retrieve import Retrieve  # retrieve.py imports index.py, which imports this module

    check_params(Retrieve, (), {"mmap_threshold_mb": mmap_threshold_mb})
    if mmap is not None and not isinstance(mmap, bool):
        raise ParamError("mmap", f"expects True, False or None (decide by mmap_threshold_mb), got {mmap!r}")


def build_mapping(n: int, ids: Any, doc_ids: Any) -> pl.DataFrame:
    """FAISS row -> neighbour_id (and neighbour_doc_id): one value per vector."""
    columns = {"neighbour_id": per_row(ids, "ids", n, "vectors") if ids is not None else pl.Series(np.arange(n))}
    if doc_ids is not None:
        columns["neighbour_doc_id"] = per_row(doc_ids, "doc_ids", n, "vectors")
    return pl.DataFrame(columns)


def per_row(values: Any, param: str, n: int, of: str) -> pl.Series:
    """`values` as a Series of exactly `n` (one per vector, or per query)."""
    refuse_bare_string(values, param)
    series = values if isinstance(values, pl.Series) else pl.Series(param, values)
    if len(series) != n:
        raise ParamError(param, f"has {len(series)} values for {n} {of}; give exactly one per row")
    return series


def query_vectors(queries: Any, embed: Callable[[list[str]], np.ndarray], dim: int) -> np.ndarray:
    """Queries (texts, embedded with the index's encoder; or vectors) as a finite (n, dim) float32 matrix."""
    refuse_bare_string(queries, "queries")
    if isinstance(queries, pl.Series):
        vectors = embed(text_list(queries, "queries")) if queries.dtype in (pl.String, pl.Null) \
            else series_to_vectors(queries, "queries")
    elif isinstance(queries, (list, tuple)) and len(queries) == 0:
        vectors = np.empty((0, dim), np.float32)
    elif isinstance(queries, (list, tuple)) and any(isinstance(q, str) for q in queries):
        vectors = embed(text_list(queries, "queries"))
    else:
        vectors = number_matrix(queries, "queries")
        if vectors.ndim == 1:
            vectors = vectors[None, :]
    return finite_rows(query_matrix(vectors, dim), "queries", param="queries")


def query_matrix(vectors: Any, dim: int) -> np.ndarray:
    """`vectors` as a C-contiguous (n, dim) float32 matrix, refused unless it has the index's width."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise InputDataError(
            f"query vectors have dimension {vectors.shape[-1] if vectors.ndim else 0}, the index has {dim}; "
            "embed queries with the same backend and model as the indexed corpus", param="queries")
    return vectors


def check_min_score(min_score: Any) -> None:
    if min_score is None:
        return
    if isinstance(min_score, (bool, np.bool_)) or not isinstance(min_score, (int, float, np.integer, np.floating)):
        raise ParamError("min_score", f"expects a number or None, got {min_score!r} ({type(min_score).__name__})")
    if math.isnan(min_score):
        raise ParamError("min_score", "must not be NaN (no score is at least NaN); use None for no floor")
