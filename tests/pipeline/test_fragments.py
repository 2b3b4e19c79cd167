"""Row-wise steps are cut into fragments from the input alone (`pipeline.fragments`), and each fragment is
written the same way wherever it runs: the local executor's files are what a Ray task writes."""

from __future__ import annotations

from pydoc_data.topics import topics

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipeline.io
from pipeline import run_pipeline
from pipeline.errors import PipelineError
from pipeline.executors import LocalExecutor
from pipeline.fragments import fragment_batches, fragment_size, is_rowwise_step, plan_fragments
from pipeline.io import Dataset, file_batches
from pipeline.partitioned import plan_partitions
from pipeline.stage import Context, RowwiseStage

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
    assert plan_fragments(Dataset.from_parquet(path), 1000) == [((str(path), 0, meta.num_rows),)]
    monkeypatch.setattr("pipeline.partitioned.default_partition_bytes", lambda total: 20_000)
    fragments = plan_fragments(Dataset.from_parquet(path), 1000)
    assert len(fragments) > 3
    assert all(len(f) == 1 for f in fragments)  # one file
    ranges = [f[0][1:] for f in fragments]
    assert [r[0] for r in ranges[1:]] == [r[1] for r in ranges[:-1]] and ranges[0][0] == 0 and ranges[-1][1] == meta.num_rows
    assert all(stop in group_ends for _, stop in ranges)
    # The cut is the input's: the same again, and the same for a copy of the file elsewhere.
    copy = _file(tmp_path / "b.parquet", 7)
    assert [f[0][1:] for f in plan_fragments(Dataset.from_parquet(copy), 1000)] == ranges
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
        pairs = list(fragment_batches(((str(path), start, stop),), 4))
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


class _FirstWordIfLong(RowwiseStage):
    """A column typed by the data: all null (type null) in a batch without a long text, strings otherwise."""

    batch_rows = 10

    def process_batch(self, batch, ctx):
        words = pl.col("text").str.split(" ").list.first()
        long = batch.filter(pl.col("text").str.len_chars() > 3000)
        return batch.select("id", words.alias("first") if long.height else pl.lit(None).alias("first"))


class _RecordsWhenDone(RowwiseStage):
    """A row-wise stage with its own `run`: it must run whole, not fragment by fragment."""


    def process_batch(self, batch, ctx):
        return batch.select("id")

    def run(self, ctx, data):
        yield from super().run(ctx, data)
        ctx.record("finished", True)


def _run_step(stage, data, out, **options):
    out.mkdir()
    ctx = Context(step_id="s", seed=0, out_dir=out)
    LocalExecutor(**options).run_step(stage, ctx, {"data": data}, out)
    return pq.read_table(sorted(out.glob("part-*.parquet"))), ctx.stats


def test_a_column_typed_only_by_a_later_batch_of_a_fragment_is_written(tmp_path):
    # Long texts only at rows 0 and 75: fragment 2 (rows 50-99) starts with batches where the column is null.
    texts = ["short text"] * 100
    texts[0], texts[75] = "a " * 2000, "another " * 500
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [f"r{i:03d}" for i in range(100)], "text": texts}), path, row_group_size=50)
    table, _ = _run_step(_FirstWordIfLong(), Dataset.from_parquet(path), tmp_path / "out", fragment_rows=50)
    assert table.schema.field("first").type in (pa.string(), pa.large_string(), pa.string_view())
    # Batches of 10: the first (row 0) and the eighth (row 75) hold a long text.
    assert table["first"].to_pylist() == [t.split(" ")[0] if i // 10 in (0, 7) else None for i, t in enumerate(texts)]
    assert table["id"].to_pylist() == [f"r{i:03d}" for i in range(100)]


def test_a_stage_with_its_own_run_runs_whole(tmp_path):
    table, stats = _run_step(_RecordsWhenDone(), Dataset.from_any(pl.DataFrame({"id": ["a", "b"]})), tmp_path / "o")
    assert table["id"].to_pylist() == ["a", "b"] and stats == {"finished": True}
    assert not is_rowwise_step(_RecordsWhenDone(), {"data": Dataset.from_any(pl.DataFrame({"id": ["a"]}))})


def test_many_small_files_are_few_fragments(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for f in range(40):
        rows = TEXTS[f % 19 * 4:f % 19 * 4 + 4]
        pq.write_table(pa.table({"id": [f"f{f:02d}-{i}" for i in range(len(rows))], "text": rows}),
                       folder / f"part-{f:05d}.parquet")
    data = Dataset.from_parquet(folder)
    (fragment,) = plan_fragments(data, 1000)
    assert len(fragment) == 40 and fragment_size(fragment) == data.num_rows == 160
    runs = plan_fragments(data, 1000, fragment_rows=6)  # runs of 6 rows across files of 4
    assert [fragment_size(f) for f in runs] == [6] * 26 + [4] and [len(f) for f in runs][:3] == [2, 2, 2]
    table, _ = _run_step(_FirstWordIfLong(), data, tmp_path / "out")
    assert table["id"].to_pylist() == data.collect()["id"].to_list()
    assert len(list((tmp_path / "out").glob("part-*.parquet"))) == 1


def test_more_parts_than_names_keep_in_order_are_refused(tmp_path, monkeypatch):
    data = Dataset.from_parquet(_file(tmp_path / "a.parquet", 7))
    monkeypatch.setattr("pipeline.fragments.MAX_NUMBERED_PARTS", 3)
    monkeypatch.setattr("pipeline.partitioned.MAX_NUMBERED_PARTS", 3)
    with pytest.raises(PipelineError, match="fragments, more than the 3") as refused:
        plan_fragments(data, 1000, fragment_rows=10)
    assert "fragment_rows" in refused.value.hint
    with pytest.raises(PipelineError, match="partitions, more than the 3"):
        plan_partitions(data, partition_bytes=1)
