"""The embedding family's caches, registered with `pipeline cache` (listed with sizes, cleared by age).

- `embeddings`: content-addressed vectors, one Parquet shard per batch of new texts, under a run
  workdir's `.cache/embeddings/` (pipeline runs) and the library cache (`encode_texts(cache_dir=...)`).
  Shards are independent, so removing old ones only means those texts are embedded again.
- `static-models`: static embedding tables distilled once per machine, one folder per source model.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.caches import register_cache
from pipeline.stage import default_cache_dir
from stages.embedding import static_models_dir


def _embedding_roots(workdir: Path) -> list[Path]:
    return [workdir / ".cache" / "embeddings", default_cache_dir() / "embeddings"]


def _embedding_shards(root: Path) -> list[Path]:
    return sorted(root.glob("*/shard-*.parquet"))


def _static_models(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


register_cache("embeddings", "embedding vectors by text content (shards)", _embedding_roots, _embedding_shards)
register_cache("static-models", "static embedding tables distilled from MiniLM", lambda _w: [static_models_dir()],
               _static_models)
