"""FAISS indexes: the type that fits the collection, training on a sample, recall calibration, `Index`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError, first_line
from pipeline.io import Dataset
from pipeline.params import check_seed
from stages._args import int_arg, refuse_bare_string
from stages._threads import load_faiss
from stages.embedding import (
    encode_texts,
    series_to_vectors,
)
from stages.exact_topk import ExactTopK
from stages.retrieval.canonical import can_rescore, canonical_search
from stages.retrieval.checks import (
    build_mapping,
    build_vectors,
    check_min_score,
    load_settings,
    per_row,
    query_matrix,
    query_vectors,
)
from stages.retrieval.refine import REFINE_K_FACTORS, add_codes, is_refined, refine_for, with_refine

INDEX_FILE = "index.faiss"
INDEX_META_FILE = "index.json"
# The FAISS-row -> id mapping, also the step's main table; kept as an artefact too so that an index
# built by a library call (whose main table is not written beside it) loads the same way.
INDEX_IDS_FILE = "index_ids.parquet"
# Collections up to this size are searched exactly: brute force over them is cheap on a CPU.
EXACT_MAX_VECTORS = 65_536
# Beyond this, raw float32 vectors (1.5 GB per million at 384-d) give way to product quantisation.
IVF_FLAT_MAX_VECTORS = 4_000_000
CALIBRATION_QUERIES = 512


# ---------------------------------------------------------------- the index


def auto_factory(n: int, dim: int) -> str:
    """The FAISS factory string for `n` vectors of width `dim` (see the module docstring)."""
    if n <= EXACT_MAX_VECTORS:
        return "Flat"
    nlist = int(2 ** round(math.log2(4 * math.sqrt(n))))
    if n <= IVF_FLAT_MAX_VECTORS:
        return f"IVF{nlist},Flat"
    m = next(m for m in (dim // 4, dim // 8, dim // 2, dim) if m >= 1 and dim % m == 0)
    return f"IVF{nlist},PQ{m}x8"


def _metric_code(metric: str):
    faiss = load_faiss()
    return faiss.METRIC_INNER_PRODUCT if metric == "inner_product" else faiss.METRIC_L2


def _make_index(factory: str, dim: int, metric: str, refine: str | None = None):
    faiss = load_faiss()
    try:
        index = faiss.index_factory(dim, factory, _metric_code(metric))
        return with_refine(index, refine, factory, dim, _metric_code(metric)) if refine else index
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((ln for ln in first if "Error" in ln or "could not" in ln.lower()), first[-1] if first else "")
        raise ParamError(
            "index_type",
            f"FAISS refuses the factory string {factory!r} for {dim}-d vectors ({detail.strip()}); "
            "use 'auto' or a string such as 'Flat', 'HNSW32', 'IVF1024,Flat', 'IVF1024,PQ48x8'",
        ) from None


def _search_params(index) -> dict[str, int]:
    """The search-time knob a given index has (nprobe for IVF, efSearch for HNSW)."""
    faiss = load_faiss()
    if faiss.try_extract_index_ivf(index) is not None:
        return {"nprobe": 1}
    if "HNSW" in type(index).__name__ or "HNSW" in type(faiss.downcast_index(index)).__name__:
        return {"efSearch": 16}
    return {}


def _set_params(index, params: dict[str, int]) -> None:
    faiss = load_faiss()
    space = faiss.ParameterSpace()
    for key, value in params.items():
        space.set_index_parameter(index, key, value)


def _recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(f[f >= 0], e[e >= 0])) for f, e in zip(found, exact))
    return hits / max(1, int((exact >= 0).sum()))


def calibrate(index, queries: np.ndarray, exact_ids: np.ndarray, k: int, target: float) -> tuple[dict, float]:
    """Smallest nprobe/efSearch reaching `target` recall@k against exact search (doubling search)."""
    params = _search_params(index)
    if not params:
        return {}, 1.0
    (key,) = params
    limit = int(getattr(load_faiss().extract_index_ivf(index), "nlist", 1)) if key == "nprobe" else 4096
    value = 1 if key == "nprobe" else 16
    while True:
        _set_params(index, {key: value})
        _, found = index.search(queries, k)
        recall = _recall_at_k(found, exact_ids)
        if recall >= target or value >= limit:
            return {key: value}, recall
        value = min(limit, value * 2)


def calibrate_refined(index, queries: np.ndarray, exact_ids: np.ndarray, k: int, target: float) -> tuple[dict, float]:
    """nprobe and k_factor of a refined IVF-PQ index: the fewest lists probed with the most candidates
    re-ranked, then the fewest candidates that still reach the target at that nprobe.

    Probing drives the search cost (each list is a scan of its codes); re-ranking k x 64 candidates on
    8-bit copies costs less than one more list at scale. Calibrating nprobe at each k_factor in turn
    instead probed every list whenever a k_factor fell short, an exhaustive scan of all codes each
    time: at 2M x PQ48 that was 300 of the build's 457 CPU-s.
    """
    _set_params(index, {"k_factor_rf": REFINE_K_FACTORS[-1]})
    params, recall = calibrate(index, queries, exact_ids, k, target)
    if recall >= target:
        for k_factor in REFINE_K_FACTORS[:-1]:
            _set_params(index, {**params, "k_factor_rf": k_factor})
            fewer = _recall_at_k(index.search(queries, k)[1], exact_ids)
            if fewer >= target:
                return {**params, "k_factor_rf": k_factor}, fewer
    _set_params(index, {**params, "k_factor_rf": REFINE_K_FACTORS[-1]})
    return {**params, "k_factor_rf": REFINE_K_FACTORS[-1]}, recall


def _iter_vectors(data: Dataset, column: str, rows: int = 65_536):
    for batch in data.iter_batches(rows, columns=[column]):
        yield series_to_vectors(batch[column], "embedding_column", data.label)


def mergeable_factory(factory: str) -> bool:
    """Whether indexes of this type can be filled in parts and merged (exact Flat, or inverted lists)."""
    parts = factory.split(",")
    return factory in ("auto", "Flat") or (
        parts[0].startswith("IVF") and not any(p.startswith(("Refine", "RFlat", "IDMap")) for p in parts))


def sample_rows(n: int, rng: np.random.Generator, needs_training: bool, tunable: bool,
                train_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, calibration query rows), sorted, drawn from the seeded generator."""
    calib_n = min(CALIBRATION_QUERIES, n) if tunable else 0
    calib_rows = np.sort(rng.choice(n, calib_n, replace=False))
    train_rows = np.sort(rng.choice(n, min(n, train_size), replace=False)) if needs_training else np.empty(0, int)
    return train_rows, calib_rows


def prepare_index(batches, n: int, dim: int, factory: str, metric: str, rng: np.random.Generator,
                  train_size: int, refine: str | None = None) -> tuple[Any, np.ndarray, str]:
    """An empty index, trained on a seeded sample, the calibration queries and the metric: one pass over `batches()`.

    With `metric` 'auto', the same pass reads every vector's norm (`UnitCheck`), so the choice is the
    whole collection's, whatever the row order. With `refine` ('sq8' or 'fp16'), an IndexRefine whose
    quantisers (IVF-PQ and scalar) train on the same sample.
    """
    check_metric(metric)
    # Whether the type needs training or a tuned knob does not depend on the metric.
    index = _make_index(factory, dim, "l2" if metric == "auto" else metric, refine)
    needs_training = not index.is_trained
    train_rows, calib_rows = sample_rows(n, rng, needs_training, bool(_search_params(index)), train_size)
    unit = UnitCheck() if metric == "auto" else None
    if not (needs_training or calib_rows.size or unit):
        return index, np.empty((0, dim), np.float32), metric
    wanted = np.union1d(train_rows, calib_rows)
    picked, offset = [], 0
    for vectors in batches():
        local = wanted[(wanted >= offset) & (wanted < offset + len(vectors))] - offset
        picked.append(np.asarray(vectors[local], np.float32))
        offset += len(vectors)
        if unit is not None:
            unit.add(vectors)
    if unit is not None:
        metric = unit.metric()
        if metric != "l2":
            index = _make_index(factory, dim, metric, refine)
    sample = np.concatenate(picked) if picked else np.empty((0, dim), np.float32)
    if needs_training:
        try:
            index.train(np.ascontiguousarray(sample[np.searchsorted(wanted, train_rows)]))
        except RuntimeError as exc:
            raise ParamError(
                "index_type", f"FAISS could not train {factory!r} on {len(train_rows)} vectors: "
                f"{str(exc).strip().splitlines()[-1]}; use a smaller nlist or more vectors",
            ) from None
    return index, np.ascontiguousarray(sample[np.searchsorted(wanted, calib_rows)]), metric


def add_vectors(index, batches, dim: int, first_id: int, exact: ExactTopK | None) -> int:
    """Add every batch under its row number (from `first_id` on); track the calibration queries' exact top k."""
    offset = first_id
    # (an IndexRefine adds in order only; built in one part, from row 0)
    ivf = load_faiss().try_extract_index_ivf(index) is not None and not is_refined(index)
    for vectors in batches:
        vectors = np.ascontiguousarray(vectors, np.float32)
        if vectors.shape[1] != dim:
            raise InputDataError(f"embedding width changes within the input ({vectors.shape[1]} vs {dim})")
        if ivf:
            index.add_with_ids(vectors, np.arange(offset, offset + len(vectors), dtype=np.int64))
        else:  # exact indexes number rows in order of addition; parts are merged in row order
            index.add(vectors)
        if exact is not None:
            exact.add(vectors, offset)
        offset += len(vectors)
    return offset - first_id


def encode_vectors(index, batches, dim: int, first_id: int, exact: ExactTopK | None) -> list[np.ndarray]:
    """Each batch encoded as the trained `index` would store it (`sa_encode`: list number + code per row).

    `index` is only read (faiss encodes without touching the inverted lists), so one trained index
    serves every partition; the exact top k of the calibration queries is tracked as in `add_vectors`.
    """
    codes, offset = [], first_id
    for vectors in batches:
        vectors = np.ascontiguousarray(vectors, np.float32)
        if vectors.shape[1] != dim:
            raise InputDataError(f"embedding width changes within the input ({vectors.shape[1]} vs {dim})")
        codes.append(index.sa_encode(vectors))
        if exact is not None:
            exact.add(vectors, offset)
        offset += len(vectors)
    return codes


def fill_from_codes(trained, state: dict):
    """A copy of the trained index holding `state`'s encoded rows, appended in row order.

    Each array is released once it is in the index, so the codes and the index are not both held whole.
    """
    index = load_faiss().clone_index(trained)
    codes, first = state["codes"], state["first"]
    while codes:
        block = codes.pop(0)
        add_codes(index, block, first)
        first += len(block)
        del block
    return index


def finish_index(index, factory: str, metric: str, dim: int, n: int, exact: ExactTopK,
                 recall_target: float, refine: str | None = None) -> dict:
    """Calibrate the search knob against the exact neighbours; the index's description for index.json."""
    if index.ntotal != n:
        raise InputDataError(f"expected {n} vectors, read {index.ntotal}")
    params, recall = {}, 1.0
    if len(exact.queries):
        search = calibrate_refined if refine else calibrate
        params, recall = search(index, exact.queries, exact.result()[1], exact.k, recall_target)
    elif refine:
        params = {"k_factor_rf": REFINE_K_FACTORS[0]}
    # Measured on indexed vectors used as queries (as RETRO queries its own training chunks).
    return {"factory": factory, "metric": metric, "dim": dim, "vectors": n, "search_params": params,
            "calibrated_recall_at_10": round(float(recall), 4), "calibration_queries": int(len(exact.queries)),
            **({"refine": refine} if refine else {})}


def build_index(
    batches, n: int, dim: int, factory: str, metric: str, rng: np.random.Generator,
    train_size: int, recall_target: float, refine: str | None = None,
) -> tuple[Any, dict]:
    """Train (on a sample), fill and calibrate a FAISS index from an iterable of vector batches.

    `batches()` is called twice when the index needs training or calibration (once to pick the
    sampled rows, once to add), so the collection is streamed and never held whole beyond what the
    index itself stores. Exact neighbours of the calibration queries are accumulated while adding,
    so calibration costs one extra matrix product per batch rather than a second index.
    """
    index, calib, metric = prepare_index(batches, n, dim, factory, metric, rng, train_size, refine)
    exact = ExactTopK(calib, min(10, n), metric)
    add_vectors(index, batches(), dim, 0, exact)
    return index, finish_index(index, factory, metric, dim, n, exact, recall_target, refine)


def write_index_files(folder: Path, index, meta: dict, mapping: pl.DataFrame) -> None:
    """The three files `Index.load` reads: index.faiss, index.json and the FAISS-row -> id mapping."""
    folder.mkdir(parents=True, exist_ok=True)
    load_faiss().write_index(index, str(folder / INDEX_FILE))
    (folder / INDEX_META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    mapping.write_parquet(folder / INDEX_IDS_FILE)


def saved_dim(path: str | Path) -> int | None:
    """The vector width an index saved at `path` (its directory, or a Parquet file in it) records in its
    index.json, read without loading the index; None where there is none to read (`Index.load` says why)."""
    folder = Path(path).expanduser()
    meta = (folder if folder.is_dir() else folder.parent) / INDEX_META_FILE
    try:
        dim = json.loads(meta.read_text()).get("dim")
    except (OSError, ValueError, AttributeError):
        return None
    return dim if isinstance(dim, int) else None


class Index:
    """A FAISS index plus the mapping from FAISS row to chunk id and document id.

    Built by the `index` stage (saved as index.faiss, index.json and the step's Parquet) or by
    `Index.build(vectors, ids)`; `search` accepts texts (embedded with the recorded encoder) or vectors.
    """

    def __init__(self, index, mapping: pl.DataFrame, meta: dict):
        self.index = index
        self.mapping = mapping
        self.meta = meta
        self._ids = mapping["neighbour_id"]
        self._docs = mapping["neighbour_doc_id"] if "neighbour_doc_id" in mapping.columns else None
        self._max_chunks_per_doc = 1
        if self._docs is not None and len(mapping):
            # Documents as dense integer codes, so excluding a query's own document is a NumPy compare.
            self._doc_table = self._docs.unique(maintain_order=True).to_frame("doc").with_row_index("code")
            codes = self._docs.to_frame("doc").join(self._doc_table, on="doc", how="left", maintain_order="left")
            self._doc_codes = codes["code"].cast(pl.Int64).to_numpy()
            self._max_chunks_per_doc = int(np.bincount(self._doc_codes).max())
        _set_params(index, meta.get("search_params", {}))
        self._rescore = can_rescore(index)  # see `stages.retrieval.canonical`

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def build(
        cls, vectors: np.ndarray, ids: Any = None, doc_ids: Any = None, index_type: str = "auto",
        metric: str = "auto", seed: int = 0, train_size: int = 100_000, recall_target: float = 0.95,
        backend: str | None = None, model: str | None = None, refine: str | None = None,
    ) -> Index:
        """An index over `vectors` (n, dim): `ids` and `doc_ids`, one per vector, are what `search` reports.

        `backend` and `model` name the encoder that made the vectors, for text queries; the index records what it
        is given (None: vectors of unknown origin, searched with vectors only), not an encoder it did not see.
        """
        settings = {"index_type": index_type, "metric": metric, "train_size": train_size,
                    "recall_target": recall_target, "refine": refine}
        vectors = build_vectors(vectors, settings if backend is None else {**settings, "backend": backend})
        n, dim = vectors.shape
        mapping = build_mapping(n, ids, doc_ids)
        factory = auto_factory(n, dim) if index_type == "auto" else index_type
        index, info = build_index(lambda: [vectors], n, dim, factory, metric, np.random.default_rng(check_seed(seed)),
                                  train_size, recall_target, refine_for(index_type, factory, refine))
        info.update({"backend": backend, "model": model})
        return cls(index, mapping, info)

    @classmethod
    def load(cls, path: str | Path, mmap: bool | None = None, mmap_threshold_mb: float = 1024) -> Index:
        """Open an index step's directory; memory-map the index when it is larger than `mmap_threshold_mb`."""
        load_settings(mmap, mmap_threshold_mb)
        faiss = load_faiss()
        path = Path(path).expanduser()
        index_file = path / INDEX_FILE
        if not index_file.is_file():
            raise InputDataError(f"no {INDEX_FILE} here; point at the output directory of an 'index' step",
                                 file=str(path))
        meta = json.loads((path / INDEX_META_FILE).read_text())
        if mmap is None:
            mmap = index_file.stat().st_size > mmap_threshold_mb * (1 << 20)
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            index = faiss.read_index(str(index_file), flags)
        except RuntimeError:
            try:
                index = faiss.read_index(str(index_file))  # this index type cannot be mapped; read it
            except RuntimeError as exc:  # truncated, overwritten or not a FAISS file
                raise InputDataError(f"{INDEX_FILE} is truncated or not a FAISS index (FAISS: {first_line(exc).split(': ')[-1]}); "
                                     "rebuild it with its 'index' step", file=str(index_file)) from None
            mmap = False
        meta["memory_mapped"] = bool(mmap)
        mapping = pl.read_parquet(path / INDEX_IDS_FILE)
        if mapping.height != index.ntotal:
            raise InputDataError(f"{INDEX_FILE} holds {index.ntotal:,} vectors but {INDEX_IDS_FILE} names {mapping.height:,}: "
                                 "the files are from different builds; rebuild with the 'index' step", file=str(path))
        mapping = mapping.rename({meta["id_column"]: "neighbour_id"})
        if meta.get("doc_column"):
            mapping = mapping.rename({meta["doc_column"]: "neighbour_doc_id"})
        return cls(index, mapping.sort("faiss_id"), meta)

    def save(self, path: str | Path) -> None:
        meta = dict(self.meta, id_column="neighbour_id",
                    doc_column="neighbour_doc_id" if self._docs is not None else None)
        mapping = self.mapping.with_row_index("faiss_id").with_columns(pl.col("faiss_id").cast(pl.Int64))
        write_index_files(Path(path).expanduser(), self.index, meta, mapping)

    # -- queries ------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def embed(self, texts: list[str], cache_dir: str | Path | None = None) -> np.ndarray:
        refuse_bare_string(texts, "texts")
        backend = self.meta.get("backend")
        if backend is None:  # Index.build of supplied vectors: embedding with some other model would find nonsense
            raise ParamError("backend", "this index records no encoder (built from vectors without backend), so it "
                             "cannot embed text queries; search it with vectors, or build it with the backend (and "
                             "model) that made its vectors (Index.build(..., backend=...), or retrieve's backend)")
        return encode_texts(texts, backend=backend, model=self.meta.get("model"), cache_dir=cache_dir)

    def set_k_factor(self, k_factor: int) -> None:
        """PQ candidates a refined index (`refine` at build time) re-ranks per neighbour asked for."""
        if not is_refined(self.index):
            raise ParamError("k_factor", "applies to an index built with refine ('sq8' or 'fp16'); this one has none")
        self.meta["search_params"] = dict(self.meta.get("search_params", {}), k_factor_rf=int(k_factor))
        _set_params(self.index, {"k_factor_rf": int(k_factor)})

    def search_raw(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the k best rows per query, larger-is-better for L2 indexes too; the same whatever the
        thread count and whichever queries are searched together (`stages.retrieval.canonical`)."""
        return canonical_search(self.index, query_matrix(vectors, self.dim), k, self.meta.get("metric"), self._rescore)

    def search(
        self, queries: Any, k: int = 10, *, exclude_doc_ids: Any = None, min_score: float | None = None,
        query_ids: Any = None,
    ) -> pl.DataFrame:
        """k nearest neighbours per query: query_id, rank, neighbour_id, neighbour_doc_id, score.

        `queries` is a list of texts or an (n, dim) array. `exclude_doc_ids` (one per query) drops
        neighbours from that document, as RETRO does for chunks of the sequence being trained on.
        `min_score` drops neighbours below a similarity floor (inner product, or -squared L2).
        """
        k = int_arg(k, "k", 1)
        check_min_score(min_score)
        vectors = query_vectors(queries, self.embed, self.dim)
        n = len(vectors)
        qids = per_row(query_ids, "query_ids", n, "queries") if query_ids is not None else pl.Series(np.arange(n))
        qids = qids.alias("query_id")
        if exclude_doc_ids is not None:
            if self._docs is None:
                raise ParamError("exclude_doc_ids", "this index was built without doc_ids, so documents are unknown; "
                                 "build it with doc_ids (or the index stage's doc_column) to exclude them")
            exclude_doc_ids = per_row(exclude_doc_ids, "exclude_doc_ids", n, "queries")
        exclude = exclude_doc_ids is not None
        k_search = k + min(self._max_chunks_per_doc, 1024) if exclude else k
        scores, rows = self.search_raw(vectors, k_search)
        width = rows.shape[1]
        # Filter and rank in NumPy: FAISS returns each query's hits sorted, so a hit's rank is its
        # position among the kept hits of its query.
        q = np.repeat(np.arange(n, dtype=np.int64), width)
        r = rows.reshape(-1)
        score = scores.reshape(-1).astype(np.float32)
        keep = r >= 0
        if exclude:
            own = exclude_doc_ids.alias("doc").cast(self._docs.dtype).to_frame()
            own = own.join(self._doc_table, on="doc", how="left", maintain_order="left")["code"]
            own_codes = own.cast(pl.Int64).fill_null(-1).to_numpy()
            keep &= self._doc_codes[np.where(keep, r, 0)] != own_codes[q]
        if min_score is not None:
            keep &= score >= min_score
        q, r, score = q[keep], r[keep], score[keep]
        rank = np.arange(len(q)) - np.searchsorted(q, q, side="left")
        top = rank < k
        q, r, score, rank = q[top], r[top], score[top], rank[top]
        frame = pl.DataFrame({
            "query_id": qids.gather(q),
            "rank": pl.Series(rank, dtype=pl.Int32),
            "neighbour_id": self._ids.gather(r),
        })
        if self._docs is not None:
            frame = frame.with_columns(self._docs.gather(r).alias("neighbour_doc_id"))
        frame = frame.with_columns(pl.Series("score", score))
        columns = ["query_id", "rank", "neighbour_id"] + (["neighbour_doc_id"] if self._docs is not None else []) + ["score"]
        return frame.select(*columns)


METRICS = ("auto", "inner_product", "l2")


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ParamError("metric", f"must be 'auto', 'inner_product' or 'l2', got {metric!r}")


class UnitCheck:
    """Metric 'auto', decided over every vector: inner product when each one is unit length or all zero.

    An all-zero row is what the static backend gives a text with no token it knows ("", an emoji, a
    100-character token); its inner product with anything is 0, as its cosine would be, so it does not
    make the collection non-unit. One row of any other length makes it L2.
    """

    def __init__(self) -> None:
        self.unit = True

    def add(self, vectors: np.ndarray) -> None:
        if self.unit and len(vectors):
            norms = np.linalg.norm(np.asarray(vectors, np.float32), axis=1)
            self.unit = bool(np.all(np.isclose(norms, 1.0, atol=1e-3) | (norms == 0.0)))

    def metric(self) -> str:
        return "inner_product" if self.unit else "l2"
