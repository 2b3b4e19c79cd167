"""Second passes over a partitioned stage's partitions, run where the partitions are: its outputs
(`RowPass`) and, while `broadcast` or `finish` runs, reads of chosen rows (`Context.gather_rows`).

Some stages' outputs are their partitioned input itself, row by row, with the merged state deciding
what becomes of each row: dedup keeps or removes every row of the corpus. Streamed from `finish`,
that makes one process read the whole corpus again after the cluster has done the maps (1 TB at the
scale dedup is for). So `finish` may return a `RowPass` instead of tables:

    class MyRows(RowPass):
        outputs = ("", "removed")                         # "" is the step's table, others side outputs
        def payload(self, partition) -> P                 # on the driver: this partition's slice of the state
        def rows(self, partition, payload, output)        # anywhere: that output's frames from this partition
        def empty(self, output) -> pl.DataFrame           # the schema when no partition gives a row
        def done(self, ctx)                               # on the driver, after every partition

Each partition's rows of each output are written as `part-<partition>-<k>.parquet` (`write_partition_rows`):
the local executor writes the partitions one after another, the Ray executor one task each, so the parts
list in input order and are the same files on both. A library call (`stage.apply`) streams the outputs
over the partitions in order instead (`local_row_pass`): the same rows.
A payload carries only its partition's share (for dedup: a slice of the keep/remove decision, and
the ids its removed rows point to), so a task's memory follows its partition, not the corpus.

`finish` may also need a few rows of the corpus again (dedup verifies its candidate pairs on their
texts). `ctx.gather_rows(fn, rows, extra)` splits the sorted corpus-wide row numbers `rows` by
partition and returns `fn(partition, local_rows, extra)` of each partition holding some, in input
order; on Ray each is a task, so the driver gets what `fn` makes of the rows (shingle sets), not
the corpus.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.arrays import unique_sorted
from pipeline.fragments import remove_leftovers, unify_part_schemas, write_numbered_parts
from pipeline.io import BATCH_BYTES
from pipeline.stage import Context
from pipeline.writing import write_table


class RowPass:
    """What `PartitionedStage.finish` returns when its outputs are a second pass over the partitions."""

    outputs: tuple[str, ...] = ("",)

    def payload(self, partition: Any) -> Any:
        """This partition's share of the state (built on the driver, sent with the partition's task)."""
        return None

    def rows(self, partition: Any, payload: Any, output: str) -> Iterator[pl.DataFrame]:
        """This partition's rows of `output` ("" = the step's table), in order; runs where the task runs."""
        raise NotImplementedError

    def empty(self, output: str) -> pl.DataFrame:
        """`output` with no rows, for when no partition gives one (a table always has its columns)."""
        raise NotImplementedError

    def done(self, ctx: Context) -> None:
        """The driver's part once every partition is written: small side outputs, stats."""


def local_row_pass(rows: RowPass, ctx: Context, partitions: list) -> Iterator[pl.DataFrame]:
    """The step's table as a stream over the partitions in order; side outputs and `done` after it (one process)."""
    yield from _non_empty(rows, "", partitions)
    for output in rows.outputs:
        if output:
            ctx.write_side_output(output, _non_empty(rows, output, partitions))
    rows.done(ctx)


def _non_empty(rows: RowPass, output: str, partitions: list) -> Iterator[pl.DataFrame]:
    stream = (frame for p in partitions for frame in rows.rows(p, rows.payload(p), output))
    first = next(stream, None)
    if first is None:  # no partition gave a row: the output still has its columns
        yield rows.empty(output)
        return
    yield from itertools.chain([first], stream)


def partition_bounds(partitions: list) -> np.ndarray:
    """Each partition's first corpus-wide row, then the row after the last partition (0 with none)."""
    return np.array([p.base for p in partitions] + [partitions[-1].base + partitions[-1].num_rows if partitions else 0],
                    np.int64)


def split_rows(partitions: list, rows: np.ndarray) -> list[tuple[Any, np.ndarray]]:
    """(partition, its rows relative to its first) for each partition holding some of the sorted `rows`."""
    rows = np.asarray(rows, np.int64)
    bases = partition_bounds(partitions)
    if rows.size and (rows[0] < 0 or rows[-1] >= bases[-1] or np.any(np.diff(rows) < 0)):
        raise ValueError("gather_rows needs sorted row numbers inside the partitioned input")
    cuts = np.searchsorted(rows, bases)
    return [(p, rows[cuts[i]:cuts[i + 1]] - p.base) for i, p in enumerate(partitions) if cuts[i + 1] > cuts[i]]


def local_gather(partitions: list):
    """`Context.gather_rows` of the local executor: `fn` on each partition holding some of the rows, in turn."""
    def gather_rows(fn: Callable, rows: np.ndarray, extra: Any = None) -> list:
        return [fn(p, local, extra) for p, local in split_rows(partitions, rows)]
    return gather_rows


def write_partition_rows(rows: RowPass, partition: Any, payload: Any, folders: dict[str, str]) -> dict[str, int]:
    """One partition's rows of every output, as `part-<partition>-<k>.parquet` in each output's folder.

    Written under a temporary folder and renamed, so a retried task overwrites cleanly. Returns the
    rows written per output.
    """
    written: dict[str, int] = {}
    for output, folder in folders.items():
        stream = (frame for frame in rows.rows(partition, payload, output) if len(frame))
        first = next(stream, None)
        written[output] = 0
        if first is None:  # no row from this partition (say, none removed here): no part at all
            continue
        written[output] = write_numbered_parts(itertools.chain([first], stream), Path(folder), partition.index,
                                               "partition")
    return written


def output_folders(rows: RowPass, ctx: Context, out_dir: Path) -> dict[str, str]:
    """Each output's folder: the step's own for the table, `<side root>/<name>` for a side output (made here)."""
    folders = {}
    for output in rows.outputs:
        folder = out_dir if not output else (ctx.side_root or ctx.out_dir) / output
        folder.mkdir(parents=True, exist_ok=True)
        folders[output] = str(folder)
    return folders


def fill_empty_outputs(rows: RowPass, folders: dict[str, str]) -> None:
    """An output no partition gave a row to gets one empty part with its columns (a table always has a schema)."""
    for output, folder in folders.items():
        if not any(Path(folder).glob("part-*.parquet")):
            write_table(rows.empty(output), Path(folder))


def end_row_pass(rows: RowPass, ctx: Context, folders: dict[str, str]) -> None:
    """After every partition's rows are written (on any executor): empty outputs get their columns, parts one
    schema, side outputs their names in `ctx`; then the stage's `done`."""
    fill_empty_outputs(rows, folders)
    for output, folder in folders.items():
        unify_part_schemas(Path(folder))
        if output:
            ctx.side_outputs.append(output)
    rows.done(ctx)


def write_row_pass_locally(rows: RowPass, ctx: Context, partitions: list, out_dir: Path) -> None:
    """The local executor's row pass: each partition's rows written as a Ray task writes them, so the same files.

    The partitions are read with the default batch bound (the local fold may have lowered it for maps on
    threads): the frames, hence the row groups, are then those of a Ray task.
    """
    folders = output_folders(rows, ctx, out_dir)
    try:
        for p in partitions:
            write_partition_rows(rows, dataclasses.replace(p, batch_bytes=BATCH_BYTES), rows.payload(p), folders)
    finally:
        for folder in folders.values():
            remove_leftovers(Path(folder))
    end_row_pass(rows, ctx, folders)


# -- joins of row pairs: each pair's two rows' values meet on a worker (`Context.join_rows`) -----------------

@dataclass
class JoinSource:
    """One partition's share of a join: its rows named by some pair, and which of them each group needs."""

    partition: Any
    rows: np.ndarray                      # sorted, relative to the partition's first row
    dests: list[tuple[int, np.ndarray]]   # (group, positions in `rows`) for each group needing some


@dataclass
class JoinPlan:
    """Who sends what where when `pair_fn` needs both rows' values of every pair.

    Pairs go to a group by their lower row's residue (so groups get about equal shares wherever the rows
    are); each partition holding a named row makes the values of its named rows once and sends each group
    the rows that group needs. A group sees only its pairs' rows, so its memory follows its pairs, never
    the corpus.
    """

    order: np.ndarray           # input positions of the pairs, group by group
    bounds: np.ndarray          # group g's pairs are order[bounds[g]:bounds[g + 1]]
    sources: list[JoinSource]   # in partition order
    feeds: list[list[int]]      # per group, its sources' indices (in partition order)


def plan_join(partitions: list, pairs: np.ndarray, groups: int) -> JoinPlan:
    """`JoinPlan` of corpus-wide row `pairs` (any order) over at most `groups` groups."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    bases = partition_bounds(partitions)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= bases[-1]):
        raise ValueError("join_rows needs row numbers inside the partitioned input")
    groups = max(1, min(groups, len(pairs)))
    group = pairs.min(axis=1) % groups
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(groups + 1))
    # Each (row, group) once, sorted by row and then group: rows come out partition by partition.
    needed = unique_sorted(pairs.reshape(-1) * groups + np.repeat(group, 2))
    rows, row_group = needed // groups, needed % groups
    sources, feeds = [], [[] for _ in range(groups)]
    cuts = np.searchsorted(rows, bases)
    for i, partition in enumerate(partitions):
        mine, mine_group = rows[cuts[i]:cuts[i + 1]], row_group[cuts[i]:cuts[i + 1]]
        if not mine.size:
            continue
        local = unique_sorted(mine)
        dests = []
        for g in np.unique(mine_group):
            dests.append((int(g), np.searchsorted(local, mine[mine_group == g])))
            feeds[int(g)].append(len(sources))
        sources.append(JoinSource(partition, local - partition.base, dests))
    return JoinPlan(order, bounds, sources, feeds)


def concat_ragged(pieces: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One (flat values, offsets) of rows from pieces of them, in order."""
    if not pieces:
        return np.empty(0, np.uint64), np.zeros(1, np.int64)
    sizes = np.concatenate([np.diff(np.asarray(offsets, np.int64)) for _, offsets in pieces])
    offsets = np.zeros(sizes.size + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return np.concatenate([flat for flat, _ in pieces]), offsets


def take_ragged(flat: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, offsets) of the chosen `rows` of a ragged array, in that order."""
    starts, lengths = offsets[rows], offsets[np.asarray(rows) + 1] - offsets[rows]
    out_offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out_offsets[1:])
    gather = np.arange(out_offsets[-1], dtype=np.int64) - np.repeat(out_offsets[:-1] - starts, lengths)
    return flat[gather], out_offsets


def join_group(pair_fn: Callable, pairs: np.ndarray, parts: list[tuple], extra: Any) -> np.ndarray:
    """`pair_fn(flat, offsets, index_pairs, extra)` of one group's corpus-wide `pairs`, from its sources' parts
    (rows, flat, offsets), each part's rows sorted and the parts in partition order."""
    rows = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
    flat, offsets = concat_ragged([(p[1], p[2]) for p in parts])
    return np.asarray(pair_fn(flat, offsets, np.searchsorted(rows, pairs), extra))


def source_values(rows_fn: Callable, source: JoinSource, extra: Any, cached: tuple | None = None) -> tuple:
    """(rows, flat values, offsets) of the source's rows, sorted, rows relative to the partition: taken from
    `cached` (an earlier join's values of this partition, in the same form) where it holds them, made by
    `rows_fn` for the rest; the result holds both, for the next join."""
    held = cached[0] if cached is not None else np.empty(0, np.int64)
    missing = source.rows[~np.isin(source.rows, held)]
    if not missing.size:
        return cached
    flat, offsets = concat_ragged(rows_fn(source.partition, missing, extra))
    if len(offsets) - 1 != len(missing):
        raise ValueError(f"join_rows: the rows function gave {len(offsets) - 1} rows for {len(missing)}")
    if cached is None:
        return missing, flat, offsets
    rows = np.concatenate([held, missing])
    order = np.argsort(rows, kind="stable")
    return (rows[order], *take_ragged(*concat_ragged([cached[1:], (flat, offsets)]), order))


def source_parts(values: tuple, source: JoinSource) -> list[tuple]:
    """A source's part for each of its groups, from its rows' `source_values`: (corpus-wide rows, flat, offsets)."""
    rows, flat, offsets = values
    at = np.searchsorted(rows, source.rows)
    return [(source.rows[where] + source.partition.base, *take_ragged(flat, offsets, at[where]))
            for _, where in source.dests]
