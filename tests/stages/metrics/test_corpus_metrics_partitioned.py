"""corpus_metrics on the partitioned contract: main's rows, side output and stats for any partitioning.

The fingerprints were taken from main's single-pass stage (commit 0e31642, seed 5) before the stage
became a map over partitions; every partition size, one row group per partition included, must
give them again, byte for byte in the Parquet written. Retaken where corpus_metrics 4 scores reference
documents' perplexity leave-one-out (the cases with a reference model; scored in-sample, the rest is unchanged).
"""

from __future__ import annotations

import polars as pl
import pytest
from corpus_metrics_cases import CASES, case_inputs, fake_encode, fingerprint, write_parts

from pipeline.executors import LocalExecutor
from pipeline.io import Dataset
from pipeline.stage import Context
from stages.metrics import CorpusMetrics

MAIN_FINGERPRINTS = {
    "default_no_embeddings": "f6d8cb375ce669bf",
    "reference_input_lowercase": "0b2181af3c04df4c",
    "embeddings_sampled": "e58ec4b6aa407f5f",
    "one_group": "ad9f94e899f72651",
    "group_by_seed_only": "0ce6f710a7807f50",
}


@pytest.fixture(autouse=True)
def deterministic_embeddings(monkeypatch):
    import stages.embedding

    monkeypatch.setattr(stages.embedding, "encode_texts", fake_encode)


def run_files(stage, inputs: dict[str, Dataset], out, executor) -> tuple[str, dict[str, bytes]]:
    out.mkdir(parents=True)
    ctx = Context(step_id="metrics", seed=5, out_dir=out)
    executor.run_step(stage, ctx, inputs, out)
    sides = {name: pl.read_parquet(out / name / "*.parquet") for name in ctx.side_outputs}
    parts = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}
    return fingerprint(pl.read_parquet(out / "*.parquet"), sides, ctx.stats), parts


def parquet_inputs(name: str, folder) -> tuple[CorpusMetrics, dict[str, Dataset]]:
    params, frames = case_inputs(name)
    return CorpusMetrics.from_params(params), {k: Dataset.from_parquet(write_parts(v, folder / k))
                                               for k, v in frames.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_in_memory_output_is_main_s(name):
    params, frames = case_inputs(name)
    result = CorpusMetrics.from_params(params).execute(**frames, seed=5)
    assert fingerprint(result.table, result.side_outputs, result.stats) == MAIN_FINGERPRINTS[name]


@pytest.mark.parametrize("name", ["default_no_embeddings", "embeddings_sampled"])
def test_near_duplicate_rate_is_stages_dedup_s_rate_of_each_group(name):
    from stages.dedup import near_duplicate_rate

    params, frames = case_inputs(name)
    stage = CorpusMetrics.from_params(params)
    table = stage.apply(**frames, seed=5)
    texts = frames["data"].with_columns(pl.col("text").fill_null(""))
    for row in table.iter_rows(named=True):
        mine = texts.filter((pl.col("schedule") == row["schedule"]) & (pl.col("seed") == row["seed"])
                            & (pl.col("generation") == row["generation"]))["text"]
        assert row["near_duplicate_rate"] == near_duplicate_rate(mine, threshold=stage.near_duplicate_threshold)
    assert table["near_duplicate_rate"].max() > 0  # the planted near copies are found


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_partition_size_gives_main_s_output_byte_for_byte(name, tmp_path):
    stage, inputs = parquet_inputs(name, tmp_path / "in")
    runs = [run_files(stage, inputs, tmp_path / f"out-{size}", LocalExecutor(partition_bytes=size))
            for size in (1, 20_000, 1 << 40)]  # 1: one row group (of 15) per partition
    for fp, parts in runs:
        assert fp == MAIN_FINGERPRINTS[name]
        assert parts == runs[0][1]


def test_declared_columns_are_what_the_stage_writes(tmp_path):
    stage, inputs = parquet_inputs("default_no_embeddings", tmp_path / "in")
    schema = dict(pl.read_parquet_schema(inputs["data"].files[0]))
    out = tmp_path / "out"
    run_files(stage, inputs, out, LocalExecutor())
    assert stage.output_schema({"data": schema}) == dict(pl.read_parquet_schema(out / "part-00000.parquet"))
    side = stage.side_output_schemas({"data": schema})["perplexity"]
    assert side == dict(pl.read_parquet_schema(next((out / "perplexity").glob("*.parquet"))))


def test_validate_checks_the_readers_of_the_metrics_table(tmp_path):
    from conftest import run_cli, write_config

    study = tmp_path / "study.parquet"
    case_inputs("default_no_embeddings")[1]["data"].write_parquet(study)
    step = "{id: metrics, stage: corpus_metrics, inputs: " + str(study) + ", params: {embedding_backend: none}}"
    bad = write_config(tmp_path / "bad.yaml", f"""
name: flow
seed: 1
steps:
  - {step}
  - {{id: long, stage: length_filter, inputs: metrics, params: {{min_words: 2, text_column: text}}}}
""")
    out = run_cli("validate", str(bad))
    assert out.returncode == 2, out.stdout + out.stderr
    message = out.stderr.strip()
    assert "step 'long'" in message and "'text'" in message and "'self_bleu'" in message
    good = write_config(tmp_path / "good.yaml", f"""
name: flow
seed: 1
steps:
  - {step}
  - {{id: keep, stage: select, inputs: metrics, params: {{columns: [generation, self_bleu]}}}}
""")
    assert run_cli("validate", str(good)).returncode == 0
