"""label_noise on the partitioned contract: the same rows, bytes and record as main, for any partitioning.

The fingerprints were taken from main before the label pass became a partitioned map; every case
must keep them in memory, from Parquet, for several partition sizes (one row group per partition
included) and for hash chunks that cut through the data.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from label_noise_cases import CASES, case_inputs, fingerprint, write_parts

import stages.noise.counts as noise_counts
import stages.noise.rows as noise_rows
from pipeline.executors import LocalExecutor
from pipeline.io import Dataset
from pipeline.stage import Context
from stages.noise import LabelNoise

# From main (commit 0e31642) with seed 7: rows in order with dtypes, `transitions`, the label_noise record.
MAIN_FINGERPRINTS = {
    "dilute_uniform_a1.3": "7f458937bb186746",
    "dilute_uniform_a50": "2ba4f5a7d7ddc1f5",
    "dilute_exclude_true_a2.5": "494a76fae7145e9d",
    "dilute_structured_derangement": "ceac1d3a75ce109b",
    "dilute_structured_centroid": "b384d55898856a13",
    "dilute_structured_matrix": "b9583d5c334ac115",
    "dilute_string_ids": "0f0d138928d3070a",
    "dilute_no_id_column": "d10917e6a6b1f47d",
    "dilute_ood_uniform": "3eec81a4a573fe92",
    "dilute_ood_structured": "30a07fc5c07b33ce",
    "flip_symmetric": "4c340ab91c8cc38b",
    "flip_pairflip": "fca65a0f6151b9ea",
    "flip_mapping_strings": "a81af3bee60b4d69",
    "flip_matrix_no_ids": "b2a6335063e6f4f1",
}


def run_files(stage: LabelNoise, inputs: dict[str, Dataset], out, executor) -> tuple[str, dict[str, bytes]]:
    """Run one step with `executor`; return the fingerprint and the bytes of every Parquet part written."""
    out.mkdir(parents=True)
    ctx = Context(step_id="noisy", seed=7, out_dir=out)
    executor.run_step(stage, ctx, inputs, out)
    table = pl.read_parquet(out / "*.parquet")
    transitions = pl.read_parquet(out / "transitions" / "*.parquet")
    parts = {p.name: p.read_bytes() for p in sorted(out.glob("*.parquet"))}
    return fingerprint(table, transitions, json.loads(json.dumps(ctx.stats["label_noise"]))), parts


def parquet_inputs(name: str, folder) -> tuple[LabelNoise, dict[str, Dataset]]:
    params, frames = case_inputs(name)
    return LabelNoise.from_params(params), {k: Dataset.from_parquet(write_parts(v, folder / k)) for k, v in frames.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_in_memory_output_is_main_s_with_hash_chunks_cutting_the_rows(name, monkeypatch):
    params, frames = case_inputs(name)
    result = LabelNoise.from_params(params).execute(**frames, seed=7)
    assert fingerprint(result.table, result.side_outputs["transitions"], result.stats["label_noise"]) == \
        MAIN_FINGERPRINTS[name]
    monkeypatch.setattr(noise_counts, "CHUNK_ROWS", 7)
    result = LabelNoise.from_params(params).execute(**frames, seed=7)
    assert fingerprint(result.table, result.side_outputs["transitions"], result.stats["label_noise"]) == \
        MAIN_FINGERPRINTS[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_parquet_output_is_main_s_for_every_partition_size_byte_for_byte(name, tmp_path):
    stage, inputs = parquet_inputs(name, tmp_path / "in")
    runs = [run_files(stage, inputs, tmp_path / f"out-{size}", LocalExecutor(partition_bytes=size))
            for size in (1, 3_000, 1 << 40)]  # 1: one row group (of 9) per partition
    for fp, parts in runs:
        assert fp == MAIN_FINGERPRINTS[name]
        assert parts == runs[0][1]


def test_the_pool_is_read_once_however_many_cycles(tmp_path, monkeypatch):
    stage, inputs = parquet_inputs("dilute_uniform_a50", tmp_path / "in")
    whole_reads = []
    original = Dataset.iter_batches

    def counting(self, rows=None, columns=None):
        if columns is None:  # a read of whole rows (the label pass reads two columns only)
            whole_reads.append(self.label)
        return original(self, rows, columns) if rows is not None else original(self, columns=columns)

    monkeypatch.setattr(Dataset, "iter_batches", counting)
    fp, _ = run_files(stage, inputs, tmp_path / "out", LocalExecutor(partition_bytes=1))
    assert fp == MAIN_FINGERPRINTS["dilute_uniform_a50"]
    assert len(whole_reads) == 1  # 50 cycles, one read


def test_a_flip_input_with_a_source_is_refused_before_reading(tmp_path):
    from pipeline.errors import InputDataError

    stage, inputs = parquet_inputs("flip_symmetric", tmp_path / "in")
    inputs["source"] = inputs["data"]
    with pytest.raises(InputDataError, match="only used by mode 'dilute'"):
        run_files(stage, inputs, tmp_path / "out", LocalExecutor())


def _labelled(variant: str) -> pl.DataFrame:
    """3,000 rows of 6 classes, with the label and id types and layouts the in-memory shortcuts special-case."""
    rng = np.random.default_rng(4)
    n = 3_000
    df = pl.DataFrame({"id": rng.permutation(n).astype(np.int64) + 10, "label": rng.integers(0, 6, n),
                       "x": rng.random(n)})
    return {
        "labels_0_to_5": df,
        "labels_from_7": df.with_columns(pl.col("label") + 7),
        "negative_labels": df.with_columns(pl.col("label") - 3),
        "int32_labels_uint64_ids": df.with_columns(pl.col("label").cast(pl.Int32), pl.col("id").cast(pl.UInt64)),
        "sorted_labels": df.sort("label"),
        # Class 6 only on row 1, which the strided probe (every 18th row below) does not look at.
        "rare_class_outside_the_probe": df.with_columns(
            pl.when(pl.int_range(n) == 1).then(6).otherwise(pl.col("label")).alias("label")),
    }[variant]


@pytest.mark.parametrize("variant", ["labels_0_to_5", "labels_from_7", "negative_labels", "int32_labels_uint64_ids",
                                     "sorted_labels", "rare_class_outside_the_probe"])
@pytest.mark.parametrize("params", [{"mode": "dilute", "alpha": 1.0}, {"mode": "dilute", "alpha": 2.5},
                                    {"mode": "dilute", "alpha": 0.6, "exclude_true": True},
                                    {"mode": "flip", "rate": 0.3}], ids=["a1", "a2.5", "a0.6-exclude", "flip"])
def test_in_memory_shortcuts_give_the_rows_of_the_parquet_pass(variant, params, tmp_path, monkeypatch):
    """In memory, labels 0..K-1 and Int64 ids are read as views, the class set may come from a probe
    and the class sizes from the first cycle; from Parquet every one of those is a full pass."""
    monkeypatch.setattr(noise_rows, "PROBE_ROWS", 160)  # every 18th row
    df = _labelled(variant)
    probed = noise_rows._consecutive_labels(Dataset.from_any(df), "label", df.schema["label"])
    assert (probed is None) == (variant == "rare_class_outside_the_probe")
    stage = LabelNoise.from_params(params)
    result = stage.execute(df, seed=7)  # run_files' seed
    in_memory = fingerprint(result.table, result.side_outputs["transitions"], result.stats["label_noise"])
    data = Dataset.from_parquet(write_parts(df, tmp_path / "in", row_group_size=400))
    streamed, _ = run_files(stage, {"data": data}, tmp_path / "out", LocalExecutor(partition_bytes=20_000))
    assert streamed == in_memory
