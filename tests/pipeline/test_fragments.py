"""Row-wise steps are cut into fragments from the input alone (`pipeline.fragments`), and each fragment is
written the same way wherever it runs: the local executor's files are what a Ray task writes."""

from __future__ import annotations

from pydoc_data.topics import topics

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipeline.io
from pipeline import run_pipeline
from pipeline.errors import PipelineError
from pipeline.fragments import fragment_batches, plan_fragments
from pipeline.io import Dataset, file_batches

TEXTS = list(topics.values())


def _file(path, row_group_size):
    table = pa.table({"id": [f"t{i:04d}" for i in range(len(TEXTS))], "text": TEXTS})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_default_fragments_are_runs_of_whole_row_groups_covering_the_input_in_order(tmp_path, monkeypatch):
    path = _file(tmp_path / "a.parquet", 7)
    meta = pq.read_metadata(path)
    group_ends = {sum(meta.row_group(g).num_rows for g in range(k + 1)) for k in range(meta.num_row_groups)}
    # A small input is one fragment; with a smaller byte target, several, each ending where a row group ends.
    assert plan_fragments(Dataset.from_parquet(path), 1000) == [(str(path), 0, meta.num_rows)]
    monkeypatch.setattr("pipeline.partitioned.default_partition_bytes", lambda total: 20_000)
    fragments = plan_fragments(Dataset.from_parquet(path), 1000)
    assert len(fragments) > 3
    assert [f[1] for f in fragments[1:]] == [f[2] for f in fragments[:-1]] and fragments[-1][2] == meta.num_rows
    assert all(stop in group_ends for _, _, stop in fragments)
    # The cut is the input's: the same again, and the same for a copy of the file elsewhere.
    copy = _file(tmp_path / "b.parquet", 7)
    assert [f[1:] for f in plan_fragments(Dataset.from_parquet(copy), 1000)] == [f[1:] for f in fragments]
    with pytest.raises(PipelineError, match="fragment_rows must be at least 1"):
        plan_fragments(Dataset.from_parquet(path), 1000, fragment_rows=0)


@pytest.mark.parametrize("whole_group_bytes", [1 << 40, 1])  # groups decoded whole, or streamed in batches
def test_a_fragment_reads_exactly_its_rows(tmp_path, monkeypatch, whole_group_bytes):
    monkeypatch.setattr(pipeline.io, "WHOLE_GROUP_BYTES", whole_group_bytes)
    path = _file(tmp_path / "a.parquet", 13)
    ids = pq.read_table(path)["id"].to_pylist()
    for start, stop in ((0, len(ids)), (5, 6), (12, 40), (13, 26), (100, len(ids))):
        got = [i for b in file_batches(path, 4, start, stop) for i in b.column("id").to_pylist()]
        assert got == ids[start:stop], (start, stop)
        pairs = list(fragment_batches((str(path), start, stop), 4))
        assert [i for frame, _ in pairs for i in frame["id"].to_list()] == ids[start:stop]
        assert all(frame.height <= 4 for frame, _ in pairs)


def test_any_fragment_size_gives_the_same_rows_in_parts_named_by_fragment(tmp_path):
    source = _file(tmp_path / "in.parquet", 50)
    config = {"name": "f", "seed": 0, "steps": [
        {"id": "long", "stage": "length_filter", "inputs": str(source), "params": {"min_words": 40}}]}
    whole = run_pipeline(config, workdir=tmp_path / "whole")
    expected = pq.read_table(sorted((tmp_path / "whole" / "f" / "long").glob("part-*.parquet"))).to_pylist()
    assert whole.step("long").rows == len(expected) > 0
    for rows in (1, 37, 1000):
        run_pipeline(config, workdir=tmp_path / str(rows), executor_options={"fragment_rows": rows})
        parts = sorted((tmp_path / str(rows) / "f" / "long").glob("part-*.parquet"))
        assert [p.name for p in parts][:2] == ["part-00000-000.parquet", "part-00001-000.parquet"][:len(parts)]
        assert len(parts) == -(-len(TEXTS) // rows)
        assert pq.read_table(parts).to_pylist() == expected, rows
