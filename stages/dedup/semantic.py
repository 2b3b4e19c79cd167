"""`dedup_semantic`: SemDeDup-style semantic duplicates from an `embed` step's vectors.

As in Abbas et al. (SemDeDup, 2023): spherical k-means (FAISS) splits the corpus into clusters,
so only pairs inside a cluster are compared; within each cluster, a row whose cosine similarity to
a row kept before it is at or above `threshold` (1 - epsilon in the paper) is a duplicate of the
most similar such row. Rows are visited in keep order: nearest the k-means centroid first (the
paper keeps the farthest; nearest is the more typical member) or as a keep policy says.

Unlike the text stages, duplicates are not joined transitively: embeddings of one domain form
chains (a ~ b ~ c ~ ... at cosine 0.97 each) that union-find would merge into one giant cluster of
unrelated texts (measured on planted docstrings: precision fell to 0.88); a row is removed only
for a kept row it is itself close to. Pairs split across k-means clusters are missed, the price of
not comparing all n**2.

Partitioned like the text stages, so the vectors never meet on the driver: k-means trains on a
seeded sample (at most 256 rows a centroid, FAISS's own cap, and 2^20 in all) before the maps; each map assigns its
rows to their nearest centroid and sends them, with what the keep policy compares, to a reducer by
cluster (the shuffle); each reducer makes the greedy pass over its clusters (a cluster's keep order
needs only its own rows' keys) and returns the (kept row, duplicate) pairs. The driver holds the
pairs' rows only, as the text stages do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from pipeline.arrays import unique_sorted
from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.partitioned import Partition, plan_partitions
from pipeline.row_pass import local_gather
from pipeline.stage import Context
from stages._vectors import unit_rows
from stages.dedup.base import (
    SCAN_BATCH_ROWS,
    Broadcast,
    DedupStage,
    RowFacts,
    Scan,
    concat_relaxed,
    selected_rows,
)
from stages.dedup.clusters import keep_rank
from stages.embedding import series_to_vectors

_BLOCK_ROWS = 2048
# k-means trains on at most this many rows a centroid (FAISS's own cap, which it met by sampling inside).
MAX_POINTS_PER_CENTROID = 256
# ... and at most this many rows in all (1.5 GB at 384-d): a driver's k-means, not the corpus, sets the bound.
MAX_SAMPLE_ROWS = 1 << 20
# A reducer's share of the vectors: at least 4 reducers, more as the corpus grows (never more than clusters).
REDUCER_BYTES = 256 << 20
MIN_REDUCERS = 4
# Centroids within this cosine of a row's best are decided row by row in float64 (see nearest_centroids).
_NEAR_TIE = 1e-4
# A float32 unit vector's cosine with its own copy is 1 only up to rounding (up to ~1e-6 below it at 16-4096
# dimensions): a threshold closer to 1 than this is taken as 1 - _COPY_SLACK, so `threshold: 1` removes exact copies.
_COPY_SLACK = 1e-5


@dataclass
class Clustering:
    """What the maps need: the k-means centroids (unit rows) and how many reducers the clusters go to."""

    centroids: np.ndarray  # (k, d) float32
    reducers: int


@dataclass
class SemanticState:
    """Rows (sorted) with their cosine to their k-means centroid: a reducer's rows, or on the driver the rows
    in some pair; and each removed row's cosine to the row it duplicates."""

    rows: np.ndarray
    centroid_similarity: np.ndarray
    duplicates: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # sorted
    duplicate_similarity: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))

    def centroid_similarity_of(self, rows: np.ndarray) -> np.ndarray:
        return self.centroid_similarity[np.searchsorted(self.rows, rows)]


class DedupSemantic(DedupStage):
    """Remove semantic duplicates (cosine of embeddings within k-means clusters), within data or against `reference`.

    Reads an embedding column (an `embed` step's output). Side outputs `removed` and `clusters` as in
    `dedup_exact`; `similarity` there is the cosine to the kept row.

    Parameters:
        embedding_column: column holding the vectors (fixed-size list of floats)
        id_column: column identifying rows (named in the side outputs; used by keep='lowest_id')
        threshold: cosine similarity at or above which two rows are duplicates (1 - epsilon), in (0, 1]
        n_clusters: k-means clusters (unset: about sqrt(rows)); more = faster, fewer pairs compared
        niter: k-means iterations
        keep: which row of a cluster stays: 'nearest_centroid', 'first' (input order), 'lowest_id' or 'column'
        keep_column: with keep='column', the number, boolean, date, time or Enum whose best value wins (e.g. a quality score; nulls lose, NaN is refused)
        keep_descending: with keep='column', True keeps the highest value, False the lowest
        within_data: with a reference, also remove duplicates within data (False: only rows duplicating the reference)
    """

    name = "dedup_semantic"
    reason = "semantic duplicate"
    requires = ("faiss",)
    keep_policies = ("nearest_centroid", "first", "lowest_id", "column")
    # The reducers rank their clusters' rows by the keep policy: the maps send them each row's keep keys.
    facts_to_reducers = True
    # 3: a partition's state is its row count; its rows, vectors and keep keys go to the reducers
    # (checkpoints of version 2, which held every row's vector, are mapped again). 4: threshold 1 removes exact
    # copies (a cached threshold-1 result kept them). 5: removed.duplicate_of and clusters.id keep the id column's
    # type (were strings).
    version = "5"

    def __init__(
        self,
        embedding_column: str = "embedding",
        id_column: str = "id",
        threshold: float = 0.95,
        n_clusters: int | None = None,
        niter: int = 20,
        keep: Literal["nearest_centroid", "first", "lowest_id", "column"] = "nearest_centroid",
        keep_column: str | None = None,
        keep_descending: bool = True,
        within_data: bool = True,
    ):
        self.embedding_column = embedding_column
        self.id_column = id_column
        self.threshold = threshold
        self.n_clusters = n_clusters
        self.niter = niter
        self.keep = keep
        self.keep_column = keep_column
        self.keep_descending = keep_descending
        self.within_data = within_data

    def validate(self) -> None:
        self.validate_keep()
        if not 0.0 < self.threshold <= 1.0:
            raise ParamError("threshold", f"is a cosine similarity in (0, 1], got {self.threshold}")
        if self.n_clusters is not None and self.n_clusters < 1:
            raise ParamError("n_clusters", f"must be >= 1 (or unset for about sqrt(rows)), got {self.n_clusters}")
        if self.niter < 1:
            raise ParamError("niter", f"must be >= 1, got {self.niter}")

    def feature_columns(self) -> dict[str, str | None]:
        return {self.embedding_column: "embedding_column"}

    def scan_columns(self) -> list[str]:
        return [self.id_column, self.embedding_column] + ([self.keep_column] if self.keep == "column" else [])

    def batch_features(self, batch: pl.DataFrame, label: str) -> np.ndarray:
        try:
            return unit_rows(series_to_vectors(batch.get_column(self.embedding_column), "embedding_column"))
        except InputDataError as exc:
            raise exc.add_context(stage=self.name, file=label) from None

    # -- the partitioned passes: k-means on a sample, rows to reducers by cluster, pairs back ------------

    def train(self, ctx: Context, broadcast: Broadcast, inputs: dict[str, Dataset]) -> Clustering:
        """k-means on a seeded sample of reference + data rows (all of them when few); the data's rows are read
        where its partitions are and only the sample reaches the driver."""
        reference, data = broadcast.reference, inputs["data"]
        n = reference.n + data.num_rows
        k = min(self.n_clusters or max(1, round(math.sqrt(n))), max(n, 1))
        size = min(n, MAX_POINTS_PER_CENTROID * k, MAX_SAMPLE_ROWS)
        rows = np.arange(n, dtype=np.int64) if size == n else sample_rows(n, size, ctx.seed)
        pieces = [f for f in reference.features if len(f)]
        if pieces:
            pieces = [np.concatenate(pieces)[rows[rows < reference.n]]]
        wanted = rows[rows >= reference.n] - reference.n
        if wanted.size:  # read where the data's partitions are (on Ray, tasks on the workers)
            gather = ctx.gather_rows or local_gather(plan_partitions(data, None))
            pieces += gather(partition_vectors, wanted, (self, data.label))
        sample = self._same_width(pieces)
        centroids = train_centroids(sample, k, self.niter, ctx.seed)
        ctx.record("kmeans_clusters", k)
        ctx.record("kmeans_sample_rows", int(size))
        reducers = min(k, max(MIN_REDUCERS, math.ceil(n * sample.shape[1] * 4 / REDUCER_BYTES)))
        return Clustering(centroids, reducers)

    def shuffle_buckets(self, broadcast: Broadcast) -> int:
        return broadcast.trained.reducers

    def split(self, scan: Scan, broadcast: Broadcast) -> tuple[Scan, list[tuple]]:
        """(the scan with only its row counts left, per reducer: (rows, clusters, vectors, cosine to the
        centroid, ids, keep values) of this scan's rows in it, in row order)."""
        centroids, reducers = broadcast.trained.centroids, broadcast.trained.reducers
        features, scan.features = scan.features, []
        vectors = self._same_width([centroids[:0], *features])
        label, similarity = nearest_centroids(vectors, centroids)
        rows = scan.first_row + np.arange(len(vectors), dtype=np.int64)
        # None where a scan has no batch (an empty reference): its type must not join the others' (as in row_facts).
        ids = concat_relaxed(scan.ids) if scan.ids else None
        values = concat_relaxed(scan.keep_values) if scan.keep_values else None
        if not scan.n_reference:  # a map's scan; the reference's keeps its ids, which the driver reads
            scan.ids, scan.keep_values = [], []
        parts = []
        for r in range(reducers):
            mine = label % reducers == r
            keep = pl.Series(mine)
            parts.append((rows[mine], label[mine], vectors[mine], similarity[mine],
                          ids.filter(keep) if ids is not None else None, values.filter(keep) if values is not None else None))
        return scan, parts

    def reduce(self, bucket: int, parts: list[tuple], broadcast: Broadcast) -> tuple:
        """The greedy pass over this reducer's clusters: ((kept row, duplicate) pairs, their cosines, and the
        rows in some pair with their cosine to their centroid)."""
        parts = [broadcast.shuffle_parts[bucket], *parts]
        rows = np.concatenate([p[0] for p in parts])  # ascending: the reference's, then each partition's
        state = SemanticState(rows, np.concatenate([p[3] for p in parts]))
        ids, values = [p[4] for p in parts if p[4] is not None], [p[5] for p in parts if p[5] is not None]
        facts = RowFacts(rows, concat_relaxed(ids) if ids else pl.Series([], dtype=pl.String), None,
                         concat_relaxed(values) if self.keep == "column" and values else None)
        rank = keep_rank(broadcast.reference.n_reference, rows, self.priority(facts, state))
        at, cosine = greedy_duplicates(np.concatenate([p[2] for p in parts]), np.concatenate([p[1] for p in parts]),
                                       rank, self.threshold)
        members = unique_sorted(at)
        return rows[at], cosine, rows[members], state.centroid_similarity[members]

    def duplicate_pairs(self, ctx: Context, scan: Scan) -> tuple[np.ndarray, SemanticState]:
        found = [r for r in scan.shuffled or [] if len(r[0])]
        if not found:
            return np.empty((0, 2), np.int64), SemanticState(np.empty(0, np.int64), np.empty(0, np.float64))
        pairs = np.concatenate([r[0] for r in found])
        cosine = np.concatenate([r[1] for r in found]).astype(np.float64)
        rows = np.concatenate([r[2] for r in found])
        order = np.argsort(rows)  # reducers hold disjoint clusters, so each row comes from one
        by_duplicate = np.argsort(pairs[:, 1])
        state = SemanticState(rows[order], np.concatenate([r[3] for r in found])[order],
                              pairs[by_duplicate, 1], cosine[by_duplicate])
        ctx.record("duplicate_pairs", int(len(pairs)))
        return pairs, state

    def similarity(self, scan: Scan, state: SemanticState, rows: np.ndarray, kept: np.ndarray) -> np.ndarray:
        """Cosine to the kept row: a removed row's to the row it duplicates (a row is paired only with a kept
        row, the first of its star in keep order, which the cluster keeps); 1 for a kept row."""
        out = np.ones(rows.size, np.float64)
        removed = rows != kept
        out[removed] = state.duplicate_similarity[np.searchsorted(state.duplicates, rows[removed])]
        return out

    def extra_priority(self, rows: np.ndarray, state: SemanticState) -> list[np.ndarray] | None:
        if self.keep == "nearest_centroid":
            return [-state.centroid_similarity_of(rows)]
        return None

    def _same_width(self, pieces: list[np.ndarray]) -> np.ndarray:
        widths = sorted({p.shape[1] for p in pieces})
        if len(widths) > 1:
            raise InputDataError(f"embedding column '{self.embedding_column}' has vectors of widths "
                                 f"{widths} across inputs; embed both with the same model",
                                 stage=self.name, param="embedding_column")
        return np.concatenate(pieces) if pieces else np.empty((0, 0), np.float32)

    @classmethod
    def example(cls):
        rng = np.random.default_rng(3)
        base = rng.normal(size=(6, 16)).astype(np.float32)
        vectors = np.concatenate([base, base[:2] + 0.01 * rng.normal(size=(2, 16)).astype(np.float32)])
        from stages.embedding import vectors_to_series

        frame = pl.DataFrame({"id": range(len(vectors))}).with_columns(vectors_to_series("embedding", vectors))
        return {"threshold": 0.98, "n_clusters": 2}, {"data": frame}



def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """`size` distinct sorted row numbers below `n`, seeded, in memory of the sample's size (`Generator.choice`
    without replacement makes an array of all `n` when the sample is more than a fiftieth of it)."""
    rng = np.random.default_rng(seed)
    rows = np.empty(0, np.int64)
    while rows.size < size:
        rows = unique_sorted(np.concatenate([rows, rng.integers(0, n, size=size + size // 4 + 64)]))
    return np.sort(rows[rng.choice(rows.size, size, replace=False)])


def partition_vectors(partition: Partition, rows: np.ndarray, extra: tuple) -> np.ndarray:
    """`Context.gather_rows` function: the unit vectors of some sorted rows of one partition."""
    stage, label = extra
    batches = partition.iter_batches(SCAN_BATCH_ROWS, columns=[stage.embedding_column])
    pieces = [stage.batch_features(batch[inside], label) for batch, inside in selected_rows(batches, rows)]
    return stage._same_width(pieces)


def train_centroids(sample: np.ndarray, k: int, niter: int, seed: int) -> np.ndarray:
    """Spherical k-means centroids (FAISS) of `sample`'s unit rows: (k, d) float32 unit rows."""
    if len(sample) == 0:
        return np.zeros((1, sample.shape[1]), np.float32)
    if k <= 1:
        centroid = sample.mean(axis=0, keepdims=True)
        return (centroid / max(float(np.linalg.norm(centroid)), 1e-12)).astype(np.float32)
    import faiss

    kmeans = faiss.Kmeans(sample.shape[1], k, niter=niter, seed=int(seed) & 0x7FFFFFFF, spherical=True,
                          min_points_per_centroid=1, max_points_per_centroid=MAX_POINTS_PER_CENTROID, verbose=False)
    kmeans.train(np.ascontiguousarray(sample, np.float32))
    return np.ascontiguousarray(kmeans.centroids, np.float32)


def nearest_centroids(vectors: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest centroid (the lowest on exact ties) and its cosine to it, the same bits whatever rows
    are computed with it.

    A matrix product's last bits depend on how many rows it multiplies (BLAS blocks them), and a map's
    batches end where its partition does. So a float32 product only nominates: every centroid within
    `_NEAR_TIE` of a row's best (far above float32's error on a cosine) is a candidate, and the row's
    cosine to each candidate is then a row-by-row float64 sum, which picks the centroid and gives the
    cosine the keep order compares (exact copies tie on it).
    """
    if len(vectors) == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    label = np.empty(len(vectors), np.int64)
    centres32, centres64 = np.ascontiguousarray(centroids, np.float32), centroids.astype(np.float64)
    for lo in range(0, len(vectors), _BLOCK_ROWS):
        block = vectors[lo:lo + _BLOCK_ROWS]
        cosine = block @ centres32.T
        label[lo:lo + _BLOCK_ROWS] = best = cosine.argmax(axis=1)
        near = cosine >= cosine[np.arange(len(block)), best][:, None] - _NEAR_TIE
        for i in np.flatnonzero(near.sum(axis=1) > 1):  # a near tie: decide in float64, row by row
            candidates = np.flatnonzero(near[i])
            exact = np.einsum("ij,j->i", centres64[candidates], block[i].astype(np.float64))
            label[lo + i] = candidates[int(np.argmax(exact))]
    return label, np.einsum("ij,ij->i", vectors.astype(np.float64), centres64[label])


def greedy_duplicates(vectors: np.ndarray, labels: np.ndarray, rank: np.ndarray,
                      threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """((m, 2) positions (kept row, duplicate row), their cosines): within each k-means cluster, in keep order,
    a row is a duplicate of its most similar earlier kept row (the earliest on ties) when that cosine is >=
    threshold, else it is kept. Exact copies are duplicates at any threshold, 1 included (`_COPY_SLACK`).

    Vectorised per block of rows; only rows with some earlier row above the threshold (the possible
    duplicates) go through the sequential check, because whether they are kept depends on each other.
    """
    threshold = min(threshold, 1.0 - _COPY_SLACK)
    order = np.lexsort((rank, labels))
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    found, cosine = [], []
    for members in np.split(order, bounds):  # each in keep order
        if members.size < 2:
            continue
        block = vectors[members]
        kept = np.ones(members.size, bool)
        for lo in range(0, members.size, _BLOCK_ROWS):
            sims = block[lo : lo + _BLOCK_ROWS] @ block.T
            for i in np.flatnonzero((np.tril(sims[:, : lo + sims.shape[0]], k=lo - 1) >= threshold).any(axis=1)):
                j = lo + int(i)
                earlier = np.where(kept[:j], sims[i, :j], -np.inf)
                best = int(np.argmax(earlier))
                if earlier[best] >= threshold:
                    kept[j] = False
                    found.append((members[best], members[j]))
                    cosine.append(earlier[best])
    return np.array(found, np.int64).reshape(-1, 2), np.array(cosine, np.float64)
