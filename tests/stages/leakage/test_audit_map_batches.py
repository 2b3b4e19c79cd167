"""The audit's map bounds its working memory by batch bytes, and maps in flight on threads share one bound."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from pipeline.io import BATCH_BYTES, Dataset
from pipeline.partitioned import Partition, plan_partitions
from pipeline.stage import Context
from stages.leakage.audit import MAP_BATCH_BYTES


def _read_batches(tmp_path: Path, monkeypatch, share: int) -> list[int]:
    """Text bytes of each training batch one map reads when `share` maps are in flight."""
    from stages.leakage import LeakageAudit

    docs = [f"document {i} " + " ".join(f"w{(i * 7 + j) % 997}" for j in range(150)) for i in range(6000)]
    pq.write_table(pl.DataFrame({"id": [f"d{i}" for i in range(len(docs))], "text": docs}).to_arrow(),
                   tmp_path / "train.parquet", row_group_size=6000)
    test = pl.DataFrame({"id": ["t0"], "text": [docs[10]]})
    inputs = {"train": Dataset.from_parquet(tmp_path / "train.parquet"), "test": Dataset.from_any(test)}
    stage = LeakageAudit(chunk_overlap=False, semantic=False)
    broadcast = stage.broadcast(Context(step_id="audit", seed=0, out_dir=tmp_path / "out"), inputs)
    part, = plan_partitions(inputs["train"])
    sizes: list[int] = []
    real = Partition.iter_batches

    def recording(self, rows=20_000, columns=None):
        for batch in real(self, rows, columns):
            sizes.append(int(batch.get_column("text").str.len_bytes().sum()))
            yield batch

    monkeypatch.setattr(Partition, "iter_batches", recording)
    state = stage.map(dataclasses.replace(part, batch_bytes=BATCH_BYTES // share), broadcast)
    assert state["rows"] == len(docs)
    return sizes


def test_maps_in_flight_share_one_batch_bound(tmp_path, monkeypatch):
    alone = _read_batches(tmp_path, monkeypatch, 1)
    two = _read_batches(tmp_path, monkeypatch, 2)
    assert max(alone) > MAP_BATCH_BYTES / 2 * 1.1  # the corpus (~6 MB) fills a whole map batch
    assert max(alone) <= MAP_BATCH_BYTES * 1.1
    # Two maps in flight: each reads batches of about half the bound, so together they hold one.
    assert max(two) <= MAP_BATCH_BYTES / 2 * 1.1
