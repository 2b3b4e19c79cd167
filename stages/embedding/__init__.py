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

The package: `models` (resolution, identity, loading, the static table), `cache` (the
content-addressed store), `encode` (`encode_texts` through the cache, vector/column helpers),
`embed` (the stage). Everything is re-exported here, so `from stages.embedding import X` keeps working.
"""

from stages.embedding.cache import EmbeddingCache, text_keys
from stages.embedding.embed import Embed
from stages.embedding.encode import (
    encode_static_word_windows,
    encode_texts,
    encode_with_stats,
    series_to_vectors,
    vectors_to_series,
)
from stages.embedding.models import (
    BACKENDS,
    DEFAULT_MODEL_NAME,
    STATIC_FORMAT_VERSION,
    STATIC_PCA_DIMS,
    STATIC_SIF_COEFFICIENT,
    distill_static,
    embedding_dim,
    load_sentence_transformer,
    load_static_model,
    model_identity,
    packaged_model_path,
    resolve_model_path,
    static_models_dir,
)

__all__ = [
    "BACKENDS", "DEFAULT_MODEL_NAME", "STATIC_FORMAT_VERSION", "STATIC_PCA_DIMS", "STATIC_SIF_COEFFICIENT",
    "Embed", "EmbeddingCache", "distill_static", "embedding_dim", "encode_static_word_windows", "encode_texts",
    "encode_with_stats",
    "load_sentence_transformer", "load_static_model", "model_identity", "packaged_model_path",
    "resolve_model_path", "series_to_vectors", "static_models_dir", "text_keys", "vectors_to_series",
]
