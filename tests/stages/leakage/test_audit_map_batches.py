"""The audit's map bounds its working memory by batch bytes: maps in flight on threads, and batches a map tokenises
on threads of its own, share one bound; the findings do not depend on either."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.io import BATCH_BYTES, Dataset
from pipeline.partitioned import Partition, plan_partitions
from pipeline.stage import Context
from stages.leakage.audit import MAP_BATCH_BYTES

READ_BATCHES = Partition.iter_batches


def _read_batches(tmp_path: Path, monkeypatch, share: int, cores: int = 1) -> tuple[list[int], dict]:
    """Text bytes of each training batch one map reads when `share` maps are in flight on `cores` cores,
    and the map's state."""
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
    real = READ_BATCHES

    def recording(self, rows=20_000, columns=None):
        for batch in real(self, rows, columns):
            sizes.append(int(batch.get_column("text").str.len_bytes().sum()))
            yield batch

    monkeypatch.setattr(Partition, "iter_batches", recording)
    monkeypatch.setenv("OMP_NUM_THREADS", str(cores))
    state = stage.map(dataclasses.replace(part, batch_bytes=BATCH_BYTES // share), broadcast)
    assert state["rows"] == len(docs)
    return sizes, state


def test_maps_in_flight_share_one_batch_bound(tmp_path, monkeypatch):
    alone, _ = _read_batches(tmp_path, monkeypatch, 1)
    two, _ = _read_batches(tmp_path, monkeypatch, 2)
    assert max(alone) > MAP_BATCH_BYTES / 2 * 1.1  # the corpus (~6 MB) fills a whole map batch
    assert max(alone) <= MAP_BATCH_BYTES * 1.1
    # Two maps in flight: each reads batches of about half the bound, so together they hold one.
    assert max(two) <= MAP_BATCH_BYTES / 2 * 1.1


def _state_rows(state: dict) -> list:
    return [state["rows"], state["train_bytes"], state["docs"].rows(), pickle.dumps(state["evidence"])]


def test_a_map_alone_on_two_cores_tokenises_two_half_batches_with_the_same_state(tmp_path, monkeypatch):
    if pl.thread_pool_size() < 2:
        pytest.skip("polars runs one thread here: a map has one core")
    serial, serial_state = _read_batches(tmp_path, monkeypatch, 1, cores=1)
    threaded, threaded_state = _read_batches(tmp_path, monkeypatch, 1, cores=2)
    assert max(threaded) <= MAP_BATCH_BYTES / 2 * 1.1 < max(serial)  # two batches in flight hold one bound
    assert len(threaded) > len(serial)
    assert _state_rows(threaded_state) == _state_rows(serial_state)
    # Two maps on two cores: each has one core, so it tokenises one batch at a time.
    shared, _ = _read_batches(tmp_path, monkeypatch, 2, cores=2)
    assert max(shared) > MAP_BATCH_BYTES / 4 * 1.1
