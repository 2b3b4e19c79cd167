"""Fixed label_noise cases and a stable fingerprint of everything each one outputs.

The fingerprints in test_label_noise_fingerprints.py were taken from main before the pool pass
moved onto the partitioned contract; the same seed must keep giving the same rows, side output and
record, in memory, from Parquet and on Ray.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import xxhash

ROWS = 240


def table(string_ids: bool = False, rows: int = ROWS, seed: int = 11) -> pl.DataFrame:
    """Ids (shuffled), integer labels of 5 classes, a float payload and a 3-value feature vector."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(rows).astype(np.int64) + 1000
    label = rng.integers(0, 5, rows).astype(np.int64)
    feat = (rng.normal(size=(rows, 3)) + label[:, None]).round(6)
    df = pl.DataFrame({
        "id": ids, "label": label, "x": rng.random(rows).round(9),
        "feat": pl.Series(feat.tolist(), dtype=pl.List(pl.Float64)),
    })
    return df.with_columns(pl.format("row-{}", pl.col("id")).alias("id")) if string_ids else df


def ood_source() -> pl.DataFrame:
    """Out-of-distribution inputs: no meaningful label, ids of their own."""
    src = table(seed=5, rows=70).with_columns((pl.col("id") + 50_000).alias("id"))
    return src.drop("label")


CASES: dict[str, dict] = {
    "dilute_uniform_a1.3": {"mode": "dilute", "alpha": 1.3},
    "dilute_uniform_a50": {"mode": "dilute", "alpha": 50},
    "dilute_exclude_true_a2.5": {"mode": "dilute", "alpha": 2.5, "exclude_true": True},
    "dilute_structured_derangement": {"mode": "dilute", "alpha": 3.2, "noise": "structured", "delta": 0.7},
    "dilute_structured_centroid": {"mode": "dilute", "alpha": 1.5, "noise": "structured", "confusion": "centroid",
                                   "feature_column": "feat", "delta": 0.6},
    "dilute_structured_matrix": {"mode": "dilute", "alpha": 0.45, "noise": "structured",
                                 "confusion": [[0.0, 0.5, 0.5, 0.0, 0.0], [0.2, 0.0, 0.8, 0.0, 0.0],
                                               [0.0, 0.0, 0.0, 1.0, 0.0], [0.25, 0.25, 0.25, 0.0, 0.25],
                                               [0.0, 0.0, 0.0, 0.5, 0.5]]},
    "dilute_string_ids": {"mode": "dilute", "alpha": 1.7, "string_ids": True},
    "dilute_no_id_column": {"mode": "dilute", "alpha": 1.1, "id_column": None},
    "dilute_ood_uniform": {"mode": "dilute", "alpha": 2.2, "source": True},
    "dilute_ood_structured": {"mode": "dilute", "alpha": 0.9, "noise": "structured", "feature_column": "feat",
                              "source": True, "exclude_true": True},
    "flip_symmetric": {"mode": "flip", "rate": 0.3},
    "flip_pairflip": {"mode": "flip", "noise": "pairflip", "rate": 0.45},
    "flip_mapping_strings": {"mode": "flip", "noise": "mapping", "rate": {1: 0.5, 2: 0.25},
                             "mapping": {1: 2, 2: 1}, "string_ids": True},
    "flip_matrix_no_ids": {"mode": "flip", "noise": "matrix", "id_column": None,
                           "matrix": [[0.7, 0.3, 0, 0, 0], [0, 1, 0, 0, 0], [0.1, 0.1, 0.6, 0.1, 0.1],
                                      [0, 0, 0, 0.5, 0.5], [0.2, 0, 0, 0, 0.8]]},
}


def case_inputs(name: str) -> tuple[dict, dict[str, pl.DataFrame]]:
    """(stage params, input tables) of one case."""
    params = dict(CASES[name])
    string_ids = params.pop("string_ids", False)
    inputs = {"data": table(string_ids)}
    if params.pop("source", False):
        inputs["source"] = ood_source()
    return params, inputs


def write_parts(df: pl.DataFrame, folder: Path, row_group_size: int = 37, files: int = 3) -> Path:
    """The table as several Parquet files of small row groups (a streamed, multi-partition input)."""
    folder.mkdir(parents=True, exist_ok=True)
    step = -(-df.height // files)
    for i in range(files):
        df.slice(i * step, step).write_parquet(folder / f"part-{i:05d}.parquet", row_group_size=row_group_size)
    return folder


def fingerprint(table: pl.DataFrame, transitions: pl.DataFrame, record: dict) -> str:
    """xxh3 of the rows (in order, with dtypes), the transitions side output and the label_noise record."""
    h = xxhash.xxh3_64()
    for frame in (table, transitions):
        h.update(repr(frame.schema).encode())
        for column in frame.columns:
            h.update(repr(frame[column].to_list()).encode())
    h.update(json.dumps(record, sort_keys=True, default=repr).encode())
    return h.hexdigest()
