"""The content-addressed embedding cache (stages/embedding/cache.py): only new texts are computed; keys follow the settings."""

from __future__ import annotations

import numpy as np
from embedding_texts import PARAGRAPHS

from stages.embedding import (
    encode_texts,
    encode_with_stats,
)


def test_cache_computes_only_new_texts(tmp_path):
    first, first_stats = encode_with_stats(PARAGRAPHS[:10], cache_dir=tmp_path)
    assert first_stats["computed"] == 10 and first_stats["cache_hits"] == 0
    # The next generation: 10 old texts, 3 new ones, in another order.
    texts = PARAGRAPHS[10:13] + PARAGRAPHS[:10][::-1]
    again, stats = encode_with_stats(texts, cache_dir=tmp_path)
    assert stats["cache_hits"] == 10 and stats["computed"] == 3
    np.testing.assert_allclose(again[3:], first[::-1], atol=0)
    np.testing.assert_allclose(again[:3], encode_texts(PARAGRAPHS[10:13]), atol=1e-5)
    # The width is remembered, so a fully cached corpus is served without loading the model.
    assert [p.name for p in tmp_path.glob("embeddings/*/meta.json")] == ["meta.json"]


def test_cache_is_keyed_by_settings(tmp_path):
    encode_texts(PARAGRAPHS[:5], cache_dir=tmp_path)
    truncated, stats = encode_with_stats(PARAGRAPHS[:5], max_seq_length=8, cache_dir=tmp_path)
    assert stats["computed"] == 5  # a different max_seq_length must not reuse full-length vectors
    assert not np.allclose(truncated, encode_texts(PARAGRAPHS[:5]), atol=1e-3)
