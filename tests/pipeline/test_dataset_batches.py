"""Dataset.iter_arrow_batches: the same batches whether a row group is decoded whole or streamed."""

from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

import pipeline.io as io
from pipeline.io import Dataset


def _write_groups(path, groups=3, rows=50):
    table = pa.table({
        "id": pa.array([f"d{i}" for i in range(groups * rows)], pa.large_string()),
        "text": pa.array([("word " * (i % 17 + 1)).strip() for i in range(groups * rows)], pa.large_string()),
        "n": pa.array(range(groups * rows), pa.int64()),
    })
    pq.write_table(table, path, row_group_size=rows)
    return table


def _shapes(batches):
    return [(b.num_rows, b.column(0)[0].as_py()) for b in batches]


def test_small_groups_read_whole_give_the_streamed_batches(tmp_path, monkeypatch):
    table = _write_groups(tmp_path / "t.parquet")
    ds = Dataset.from_parquet(tmp_path / "t.parquet")
    for rows in (7, 50, 1000):
        whole = list(ds.iter_arrow_batches(rows))
        monkeypatch.setattr(io, "WHOLE_GROUP_BYTES", 0)  # every group goes to the streaming decoder
        streamed = list(ds.iter_arrow_batches(rows))
        monkeypatch.undo()
        assert _shapes(whole) == _shapes(streamed)
        assert pa.Table.from_batches(whole).equals(table)
        assert pa.Table.from_batches(streamed).equals(table)
        assert all(b.num_rows <= rows for b in whole)


def test_columns_are_selected_on_both_paths(tmp_path, monkeypatch):
    _write_groups(tmp_path / "t.parquet")
    ds = Dataset.from_parquet(tmp_path / "t.parquet")
    whole = pa.Table.from_batches(list(ds.iter_arrow_batches(20, columns=["n"])))
    monkeypatch.setattr(io, "WHOLE_GROUP_BYTES", 0)
    streamed = pa.Table.from_batches(list(ds.iter_arrow_batches(20, columns=["n"])))
    assert whole.column_names == streamed.column_names == ["n"]
    assert whole.equals(streamed)


def _pass_through_bytes(src, work):
    import pipeline

    config = {"name": "copy", "seed": 0, "steps": [{"id": "copy", "stage": "select", "inputs": {"data": str(src)}}]}
    report = pipeline.run_pipeline(config, workdir=work, force=True)
    return [p.read_bytes() for p in sorted(Path(report.step("copy").path).glob("part-*.parquet"))]


def test_unchanged_batches_are_written_as_read_with_the_same_bytes(tmp_path, monkeypatch):
    from pipeline.stage import Context
    from stages.transforms import Select

    _write_groups(tmp_path / "t.parquet", groups=4, rows=40)
    ds = Dataset.from_parquet(tmp_path / "t.parquet")
    ctx = Context(step_id="copy", seed=0, out_dir=tmp_path)
    assert {type(b) for b in Select().run(ctx, ds)} == {pa.RecordBatch}  # no round trip through polars
    assert {type(b) for b in Select(columns=["id"]).run(ctx, ds)} != {pa.RecordBatch}
    as_read = _pass_through_bytes(tmp_path / "t.parquet", tmp_path / "a")

    def without_arrow(self, rows=io.DEFAULT_BATCH_ROWS):
        for frame in self.iter_batches(rows):
            yield frame, None

    monkeypatch.setattr(Dataset, "iter_batches_with_arrow", without_arrow)
    assert {type(b) for b in Select().run(ctx, ds)} == {pl.DataFrame}
    assert _pass_through_bytes(tmp_path / "t.parquet", tmp_path / "b") == as_read


def test_a_null_vector_reads_in_batches_of_any_size(tmp_path):
    """A batch cut from a row group keeps a fixed-size-list column's child values whole: polars refused it when it
    held a null ("validity mask length must be equal ..."), so a null first vector failed every small-batch read
    (exit 1) before a stage could refuse it in one line."""
    from pipeline.partitioned import plan_partitions

    path = tmp_path / "v.parquet"
    vectors = pl.Series("v", [None, [1.0, 2.0], [3.0, 4.0]], dtype=pl.Array(pl.Float32, 2))
    pl.DataFrame({"id": [0, 1, 2], "v": vectors}).write_parquet(path)
    data = Dataset.from_parquet(path)
    for rows in (1, 2, 3):
        batches = list(data.iter_batches(rows))
        assert pl.concat(batches)["v"].to_list() == vectors.to_list()
        assert pl.concat([frame for frame, _ in data.iter_batches_with_arrow(rows)])["v"].null_count() == 1
    partition = plan_partitions(data)[0]
    assert pl.concat(list(partition.iter_batches(1)))["v"].to_list() == vectors.to_list()
