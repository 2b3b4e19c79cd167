"""A row group larger than the partition size is cut into row ranges: the same rows, dtypes and outputs."""

from __future__ import annotations

from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from partition_stages import FirstRows, SplitRows, VocabularyCounts

from pipeline.executors import LocalExecutor
from pipeline.io import Dataset
from pipeline.partitioned import plan_partitions
from pipeline.stage import Context


def one_group_file(path: Path, rows: int = 400) -> Dataset:
    """pydoc paragraphs with an int, a nullable float and an embedding column, all in ONE row group."""
    texts = [p for t in sorted(topics) for p in topics[t].split("\n\n") if len(p.split()) > 10][:rows]
    vectors = np.random.default_rng(0).standard_normal((len(texts), 8)).astype(np.float32)
    frame = pl.DataFrame({"id": [f"d{i}" for i in range(len(texts))], "text": texts,
                          "n": np.arange(len(texts), dtype=np.int64),
                          "score": [None if i % 7 == 0 else i / 3 for i in range(len(texts))],
                          "embedding": vectors}, schema_overrides={"embedding": pl.Array(pl.Float32, 8)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(frame.to_arrow(), path, row_group_size=len(texts))
    return Dataset.from_parquet(path)


def group_bytes(data: Dataset) -> int:
    return pq.read_metadata(data.files[0]).row_group(0).total_byte_size


def test_a_large_row_group_is_cut_into_row_ranges_with_the_files_rows_and_dtypes(tmp_path, monkeypatch):
    data = one_group_file(tmp_path / "one.parquet")
    monkeypatch.setattr("pipeline.partitioned.MIN_SPLIT_BYTES", 1000)
    parts = plan_partitions(data, group_bytes(data) // 4)
    assert len(parts) == 4 and all(p.group_rows is not None for p in parts)
    assert [p.base for p in parts] == [p.group_rows[0] for p in parts] == [0, 100, 200, 300]
    assert len({p.key() for p in parts}) == 4
    batches = [b for p in parts for b in p.iter_batches(30)]
    assert max(b.height for b in batches) <= 30
    assert pl.concat(batches).equals(data.collect())  # values and dtypes, nulls and the embedding column included
    picked = pl.concat(list(parts[2].iter_batches(1000, columns=["n", "embedding"])))
    assert picked.equals(data.collect().select("n", "embedding").slice(200, 100))
    # Read in several polars slices per range (each up to DEFAULT_PARTITION_BYTES): the same batches.
    monkeypatch.setattr("pipeline.partitioned.DEFAULT_PARTITION_BYTES", group_bytes(data) // 40)
    sliced = [b for p in parts for b in p.iter_batches(30)]
    assert [b.height for b in sliced] == [b.height for b in batches]
    assert pl.concat(sliced).equals(data.collect())


def test_row_groups_below_twice_the_split_floor_stay_whole(tmp_path):
    data = one_group_file(tmp_path / "one.parquet")
    parts = plan_partitions(data, 1)  # "one row group per partition", however small the size
    assert len(parts) == 1 and parts[0].group_rows is None


def test_stages_give_the_same_outputs_on_row_ranges_as_on_the_whole_group(tmp_path, monkeypatch):
    data = one_group_file(tmp_path / "one.parquet")
    vocab = Dataset.from_any(pl.DataFrame({"word": ["the", "a", "class", "function", "zzz"]}))
    monkeypatch.setattr("pipeline.partitioned.MIN_SPLIT_BYTES", 1000)
    for stage in (VocabularyCounts(), FirstRows(), SplitRows()):
        outputs = []
        for size in (1 << 40, group_bytes(data) // 5):
            out = tmp_path / f"{stage.name}-{size}"
            out.mkdir()
            ctx = Context(step_id="step", seed=0, out_dir=out)
            LocalExecutor(partition_bytes=size).run_step(stage, ctx, {"data": data, "vocab": vocab}, out)
            outputs.append((pl.read_parquet(out / "*.parquet"), ctx.stats["partitions"]))
        (whole, one), (ranges, several) = outputs
        assert one == 1 and several == len(plan_partitions(data, group_bytes(data) // 5)) >= 5
        assert ranges.equals(whole), stage.name
