"""Deduplication: exact, MinHash-LSH near-duplicates and semantic duplicates, within and across corpora.

Modules, one concern each:
- `lsh`: the bands x rows choice from a Jaccard threshold, the S-curve, candidate pairs from buckets;
- `signatures`: MinHash signatures (rensa) and true Jaccard of candidate pairs;
- `shingles`: normalised-text hashes and shingle sets, from the text core;
- `clusters`: union-find clusters, the row each keeps, the stats;
- `base`: the two passes and the `removed` / `clusters` side outputs the stages share;
- `exact`, `minhash`, `semantic`: the stages `dedup_exact`, `dedup_minhash`, `dedup_semantic`;
- `rate`: a corpus's near-duplicate rate, for corpus metrics.
"""

from stages.dedup.exact import DedupExact
from stages.dedup.minhash import DedupMinhash
from stages.dedup.rate import near_duplicate_clusters, near_duplicate_rate
from stages.dedup.semantic import DedupSemantic

__all__ = ["DedupExact", "DedupMinhash", "DedupSemantic", "near_duplicate_clusters", "near_duplicate_rate"]
