"""dedup_semantic: cosine duplicates within k-means clusters, keep nearest the centroid, reference, errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputDataError, ParamError
from pipeline.executors import LocalExecutor
from pipeline.io import Dataset
from pipeline.partitioned import plan_partitions
from pipeline.stage import Context
from stages.dedup import DedupSemantic, semantic
from stages.dedup.semantic import greedy_duplicates, nearest_centroids
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
    nan = frame.with_columns(pl.when(pl.col("id") == frame["id"][0]).then(pl.lit([float("nan")] * 32))
                             .otherwise(pl.col("embedding")).alias("embedding"))
    with pytest.raises(InputDataError, match="NaN or infinite") as err:  # faiss k-means would fail in C++
        DedupSemantic(n_clusters=1).apply(nan)
    assert err.value.param == "embedding_column"


def _dense_greedy(vectors, labels, rank, threshold):
    """SemDeDup's greedy pass over every pair of each cluster, in keep order: what the close pairs must give."""
    found = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[np.argsort(rank[members])]
        kept = []
        for j in members:
            sims = [(float(vectors[i] @ vectors[j]), -int(rank[i]), int(i)) for i in kept]
            best = max(sims, default=None)
            if best is not None and best[0] >= threshold:
                found.append((best[2], int(j)))
            else:
                kept.append(j)
    return sorted(found)


def test_greedy_pass_equals_a_plain_one_row_at_a_time():
    rng = np.random.default_rng(11)
    for trial in range(20):
        n, dim = int(rng.integers(5, 120)), 6
        base = _unit(rng.normal(size=(int(rng.integers(1, 8)), dim)))
        vectors = _unit(base[rng.integers(0, len(base), n)] + rng.uniform(0, 0.3) * rng.normal(size=(n, dim)))
        vectors[rng.random(n) < 0.2] = vectors[0]  # exact copies: ties in cosine
        labels = rng.integers(0, int(rng.integers(1, 4)), n)
        rank = rng.permutation(n)
        threshold = float(rng.uniform(0.6, 0.99))
        pairs, cosine = greedy_duplicates(vectors, labels, rank, threshold)
        assert sorted(map(tuple, pairs.tolist())) == _dense_greedy(vectors, labels, rank, threshold), trial
        assert (cosine >= threshold).all() and len(cosine) == len(pairs)
    # Row 2 is equally close to rows 0 and 1, which are far from each other: it duplicates the one kept first.
    vectors = _unit(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    for rank, kept in (([1, 0, 2], 1), ([0, 1, 2], 0)):
        pairs, _ = greedy_duplicates(vectors, np.zeros(3, np.int64), np.array(rank), 0.7)
        assert [tuple(p) for p in pairs.tolist()] == [(kept, 2)] == _dense_greedy(vectors, np.zeros(3), np.array(rank), 0.7)


def test_vectors_and_keep_keys_go_to_the_reducers_and_the_driver_gets_the_pairs(tmp_path):
    frame = _corpus(n_groups=30)
    ctx = Context(step_id="dedup", seed=0, out_dir=tmp_path)
    data = Dataset.from_any(frame, label="data")
    stage = DedupSemantic(threshold=0.95, n_clusters=8, keep="lowest_id")
    broadcast = stage.broadcast(ctx, {"data": data})
    assert broadcast.trained.centroids.shape == (8, 32) and broadcast.trained.reducers == 4
    state, parts = stage.split(stage.map(plan_partitions(data, 1 << 40)[0], broadcast), broadcast)
    assert state.features == [] and state.ids == [] and state.counts == [90]
    assert sorted(np.concatenate([p[0] for p in parts]).tolist()) == list(range(90))
    assert all(p[2].shape == (len(p[0]), 32) and (p[1] % 4 == r).all() and p[4].len() == len(p[0])
               for r, p in enumerate(parts))
    results = [stage.reduce(r, [p], broadcast) for r, p in enumerate(parts)]
    pairs = np.concatenate([r[0] for r in results])
    ids = frame["id"].to_list()
    # Lowest id first: each group's copy 0 (ids g<group>c0 sort first) keeps, its two copies go.
    assert sorted(ids[b] for b in pairs[:, 1]) == sorted(i for i in ids if not i.endswith("c0"))
    assert all(ids[a][:-2] == ids[b][:-2] and ids[a].endswith("c0") for a, b in pairs)


def test_k_means_on_a_sample_when_rows_outnumber_its_cap(monkeypatch):
    frame = _corpus(n_groups=50)
    monkeypatch.setattr(semantic, "MAX_POINTS_PER_CENTROID", 10)
    result = DedupSemantic(threshold=0.95, n_clusters=4).execute(frame)
    assert result.stats["kmeans_sample_rows"] == 40
    kept_groups = [i.split("c")[0] for i in result.table["id"]]
    assert len(kept_groups) >= 50 and len(set(kept_groups)) == 50  # a group split by k-means may keep two
    again = DedupSemantic(threshold=0.95, n_clusters=4).execute(frame)
    assert again.table.equals(result.table)


def test_exact_copies_keep_the_same_row_for_every_partition_size(tmp_path):
    # Copies tie on their cosine to the centroid, so the keep order falls to the row position, provided that
    # cosine has the same bits whatever rows a map's batch holds (a matrix product's need not).
    rng = np.random.default_rng(0)
    groups = rng.normal(size=(20, 64)).astype(np.float32)
    frame = pl.DataFrame({"id": np.arange(300)}).with_columns(
        vectors_to_series("embedding", groups[rng.integers(0, 20, 300)]))
    pq.write_table(frame.to_arrow(), tmp_path / "part-00000.parquet", row_group_size=7)
    data = Dataset.from_parquet(tmp_path / "part-00000.parquet")
    for k in (1, 4):
        kept = []
        for size in (1, 300, 3000, 1 << 40):
            out = tmp_path / f"{k}-{size}"
            out.mkdir()
            ctx = Context(step_id="dedup", seed=0, out_dir=out)
            LocalExecutor(partition_bytes=size).run_step(DedupSemantic(threshold=0.99, n_clusters=k), ctx,
                                                         {"data": data}, out)
            kept.append(sorted(pl.read_parquet(out / "*.parquet")["id"].to_list()))
        assert all(k == kept[-1] for k in kept[:-1])
        first_copies = frame.group_by(pl.col("embedding").cast(pl.List(pl.Float32)))
        assert kept[-1] == sorted(first_copies.agg(pl.col("id").min())["id"].to_list())


def test_keep_column_without_any_duplicate():
    frame = _corpus(n_groups=5, copies=1).with_columns(score=pl.Series([3, 1, 2, 5, 4]))
    result = DedupSemantic(threshold=0.99, keep="column", keep_column="score").execute(frame)
    assert result.table.height == 5 and result.side_outputs["removed"].height == 0


def test_the_k_means_sample_is_seeded_distinct_and_sorted():
    rows = semantic.sample_rows(1000, 600, seed=3)
    assert rows.size == 600 and np.unique(rows).size == 600 and (np.diff(rows) > 0).all()
    assert rows.min() >= 0 and rows.max() < 1000
    assert np.array_equal(rows, semantic.sample_rows(1000, 600, seed=3))
    assert not np.array_equal(rows, semantic.sample_rows(1000, 600, seed=4))


def test_nearest_centroid_has_the_same_bits_for_any_batch_and_the_lowest_index_on_ties():
    rng = np.random.default_rng(5)
    centroids = _unit(rng.normal(size=(50, 16)))
    centroids[7] = centroids[3]  # an exact tie for the rows nearest them
    vectors = _unit(rng.normal(size=(2000, 16)))
    vectors[0] = centroids[3]
    label, cosine = nearest_centroids(vectors, centroids)
    for step in (1, 7, 333):
        parts = [nearest_centroids(vectors[i:i + step], centroids) for i in range(0, len(vectors), step)]
        assert np.array_equal(np.concatenate([p[0] for p in parts]), label)
        assert np.array_equal(np.concatenate([p[1] for p in parts]), cosine)  # bit for bit
    assert label[0] == 3 and 7 not in label
    exact = vectors.astype(np.float64) @ centroids.astype(np.float64).T
    top2 = np.sort(exact, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-9
    assert clear.sum() > 1500 and np.array_equal(label[clear], exact.argmax(axis=1)[clear])


def test_threshold_one_removes_exact_copies():
    # A float32 unit vector's cosine with its copy rounds to just under 1 for most vectors (3 of these 5 seeds):
    # `threshold: 1` kept every copy.
    for seed in range(5):
        vector = _unit(np.random.default_rng(seed).normal(size=(1, 384)))
        frame = pl.DataFrame({"id": list("abcd")}).with_columns(vectors_to_series("embedding", np.repeat(vector, 4, 0)))
        result = DedupSemantic(threshold=1.0, keep="first").execute(frame)
        assert result.table["id"].to_list() == ["a"], seed
        assert result.side_outputs["removed"]["duplicate_of"].to_list() == ["a", "a", "a"]
