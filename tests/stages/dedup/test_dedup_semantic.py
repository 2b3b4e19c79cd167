"""dedup_semantic: cosine duplicates within k-means clusters, keep nearest the centroid, reference, errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.errors import InputDataError, ParamError
from stages.dedup import DedupSemantic
from stages.embedding import vectors_to_series


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _corpus(n_groups=40, copies=3, dim=32, noise=0.02, seed=0):
    """n_groups distinct directions, each with `copies` noisy near-copies; ids g<group>c<copy>."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(n_groups, dim)))
    vectors, ids = [], []
    for g in range(n_groups):
        for c in range(copies):
            vectors.append(centres[g] + (0 if c == 0 else noise) * rng.normal(size=dim))
            ids.append(f"g{g}c{c}")
    frame = pl.DataFrame({"id": ids}).with_columns(vectors_to_series("embedding", _unit(np.array(vectors))))
    order = rng.permutation(frame.height)
    return frame[order.tolist()]


def test_near_copies_collapse_to_one_per_group():
    frame = _corpus()
    result = DedupSemantic(threshold=0.95, n_clusters=8).execute(frame)
    kept_groups = [i.split("c")[0] for i in result.table["id"]]
    assert sorted(kept_groups) == sorted(set(kept_groups))  # one per group
    assert len(kept_groups) == 40
    removed = result.side_outputs["removed"]
    assert (removed["similarity"] >= 0.95).all()
    assert all(a.split("c")[0] == b.split("c")[0] for a, b in zip(removed["id"], removed["duplicate_of"]))
    assert result.stats["rows_removed"] == 80 and result.stats["kmeans_clusters"] == 8


def test_keep_nearest_centroid_or_by_column():
    frame = _corpus(n_groups=1, copies=5, noise=0.05)
    nearest = DedupSemantic(threshold=0.8, n_clusters=1).apply(frame)["id"].to_list()
    vectors = np.stack(frame["embedding"].to_numpy())
    centroid = vectors.mean(axis=0)
    assert nearest == [frame["id"][int(np.argmax(vectors @ centroid))]]
    scored = frame.with_columns(score=pl.Series([3, 1, 4, 1, 5]))
    best = DedupSemantic(threshold=0.8, n_clusters=1, keep="column", keep_column="score").apply(scored)
    assert best["score"].to_list() == [5]


def test_reference_and_distinct_rows():
    frame = _corpus(n_groups=20, copies=1)
    reference = frame.head(5)
    result = DedupSemantic(threshold=0.99, n_clusters=4).execute(data=frame, reference=reference)
    assert result.table["id"].to_list() == frame["id"].to_list()[5:]
    assert (result.side_outputs["removed"]["duplicate_of_input"] == "reference").all()


def test_errors_name_the_problem():
    frame = _corpus(n_groups=3, copies=1)
    with pytest.raises(InputDataError, match="no column 'vec'"):
        DedupSemantic(embedding_column="vec").apply(frame)
    with pytest.raises(ParamError, match="cosine"):
        DedupSemantic.from_params({"threshold": 0})
    with pytest.raises(InputDataError, match="widths"):
        other = pl.DataFrame({"id": ["x"]}).with_columns(vectors_to_series("embedding", np.ones((1, 8), np.float32)))
        DedupSemantic(n_clusters=1).apply(frame, reference=other)
    with pytest.raises(InputDataError, match="not an embedding"):
        DedupSemantic().apply(pl.DataFrame({"id": [1, 2], "embedding": ["a", "b"]}))
