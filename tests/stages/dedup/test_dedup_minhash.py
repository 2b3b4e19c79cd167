"""dedup_minhash on planted near-duplicates of real prose: recall, precision, reference, verification modes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.errors import ParamError
from pipeline.summary import headline
from stages.dedup import DedupMinhash
from stages.dedup.planted import planted_corpus
from stages.dedup.signatures import jaccard_pairs
from stages.text import word_shingles


@pytest.fixture(scope="module")
def planted():
    return planted_corpus(n_sources=60, n_controls=60, seed=1, levels=(0.01, 0.05, 0.3))


def _pairs_with_truth(frame: pl.DataFrame):
    """(original row, copy row, true 5-word-shingle Jaccard) for every planted copy."""
    indexed = frame.with_row_index("pos")
    originals = indexed.filter(pl.col("kind") == "original").select("source", pl.col("pos").alias("orig"))
    copies = indexed.filter(~pl.col("kind").is_in(["original", "control"])).join(originals, on="source")
    pairs = np.stack([copies["orig"].to_numpy(), copies["pos"].to_numpy()], axis=1).astype(np.int64)
    return pairs, jaccard_pairs(*word_shingles(frame["text"], 5), pairs)


def _cluster_of(frame: pl.DataFrame, result) -> np.ndarray:
    """Each row's cluster in the result: its own id when kept alone, else the kept row's id."""
    kept_of = dict(zip(result.side_outputs["removed"]["id"], result.side_outputs["removed"]["duplicate_of"]))
    return np.array([kept_of.get(i, i) for i in frame["id"]])


def test_finds_near_duplicates_and_leaves_distinct_texts(planted):
    result = DedupMinhash(threshold=0.8).execute(planted)
    cluster = _cluster_of(planted, result)
    pairs, truth = _pairs_with_truth(planted)
    joined = cluster[pairs[:, 0]] == cluster[pairs[:, 1]]
    assert (truth >= 0.85).sum() >= 20
    assert joined[truth >= 0.85].mean() >= 0.95
    assert joined[truth < 0.6].mean() <= 0.01
    # Controls and sources are distinct documents: no two sources end in one cluster.
    sources = planted["source"].to_numpy()
    by_cluster = pl.DataFrame({"cluster": cluster, "source": sources}).group_by("cluster").agg(pl.col("source").n_unique())
    assert (by_cluster["source"] == 1).all()
    removed = result.side_outputs["removed"]
    assert ((removed["similarity"] > 0.5) & (removed["similarity"] <= 1.0)).all()
    assert result.stats["banding"]["bands"] == 16 and result.stats["verify"] == "jaccard"
    # The run's summary shows a step's first figures: what it found, not its banding and shuffle.
    assert [f.split()[0] for f in headline(result.stats)] == ["rows_in", "rows_kept", "rows_removed", "duplicate_rate"]


def test_verification_modes_trade_checks_for_false_positives(planted):
    loose = DedupMinhash(threshold=0.8, verify="none").execute(planted).stats
    signature = DedupMinhash(threshold=0.8, verify="signature").execute(planted).stats
    exact = DedupMinhash(threshold=0.8).execute(planted).stats
    # Unverified uses the balanced layout (8 x 16); verified ones the sensitive one (16 x 8).
    assert loose["banding"]["bands"] == 8 and signature["banding"]["bands"] == 16
    assert exact["verified_pairs"] <= exact["candidate_pairs"]
    assert signature["verified_pairs"] <= signature["candidate_pairs"]


def test_explicit_bands_and_char_shingles(planted):
    stats = DedupMinhash(threshold=0.8, bands=32, rows=4, unit="char", ngram=8).execute(planted).stats
    assert stats["banding"]["bands"] == 32 and stats["rows_removed"] > 0


def test_reference_removes_near_copies_of_test_items(planted):
    originals = planted.filter(pl.col("kind") == "original").head(20)
    result = DedupMinhash().execute(data=planted, reference=originals.select("id", "text"))
    removed = result.side_outputs["removed"]
    from_reference = removed.filter(pl.col("duplicate_of_input") == "reference")
    # Every original given as reference is itself removed from data (identical) ...
    assert set(originals["id"]) <= set(from_reference["id"])
    # ... and reference rows are never in the kept table's removed list under their own name.
    assert set(from_reference["duplicate_of"]) <= set(originals["id"])
    assert result.table.height + removed.height == planted.height


def test_deterministic_and_independent_of_batching(planted, tmp_path):
    path = tmp_path / "planted.parquet"
    planted.write_parquet(path, row_group_size=37)
    from_file = DedupMinhash().execute(str(path))
    in_memory = DedupMinhash().execute(planted)
    assert from_file.table.equals(in_memory.table)
    assert from_file.side_outputs["removed"].equals(in_memory.side_outputs["removed"])


@pytest.mark.parametrize(("params", "param"), [
    ({"threshold": 0.0}, "threshold"),
    ({"threshold": 1.5}, "threshold"),
    ({"bands": 10, "rows": 10}, "bands"),
    ({"bands": 16}, "rows"),
    ({"ngram": 0}, "ngram"),
])
def test_bad_params(params, param):
    with pytest.raises(ParamError) as err:
        DedupMinhash.from_params(params)
    assert err.value.param == param
