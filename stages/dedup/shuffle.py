"""The LSH shuffle: every row's band keys grouped by band, buckets of equal keys become candidate pairs.

Band b of every row goes to one reducer (`lsh.bucket_stars`), which sorts that band's keys and pairs
each bucket's members with its first row; the reducers' pairs are then made distinct. The map side
(band keys per partition) runs in the partitioned stage's `map`; this module is the reduce side.

On the Ray executor each band is one Ray task (its key column travels through the object store, the
pairs come back as objects), so the bands' sorts run on every worker of the cluster; locally the
same function runs band after band. Either way the pairs are the same, in the same order.
"""

from __future__ import annotations

import numpy as np

from stages.dedup.lsh import bucket_stars, unique_pairs


def band_candidates(keys: np.ndarray, executor: str = "local") -> np.ndarray:
    """(m, 2) distinct candidate pairs (low, high) from an (n, bands) matrix of band keys."""
    n, bands = keys.shape
    if n < 2:
        return np.empty((0, 2), np.int64)
    if executor == "ray" and _ray_connected():
        import ray

        reducer = ray.remote(num_cpus=1)(bucket_stars)
        found = ray.get([reducer.remote(np.ascontiguousarray(keys[:, b])) for b in range(bands)])
    else:
        found = [bucket_stars(keys[:, b]) for b in range(bands)]
    return unique_pairs(found, n)


def _ray_connected() -> bool:
    try:
        import ray
    except ImportError:  # pragma: no cover - the Ray executor needs ray installed anyway
        return False
    return ray.is_initialized()
