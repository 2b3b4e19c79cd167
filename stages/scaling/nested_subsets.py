"""The `nested_subsets` stage: D_0 < D_1 < ... < D_m, each a superset of the previous.

A data-scaling curve compares models trained on more and more data; if the larger set is not a
superset of the smaller, part of the curve's wiggle is which rows were drawn, not how many. Every row
gets one rank from the project's stable id hash (seeded), D_j is the first n_j rows in that order, so
the subsets nest exactly and are the same on any executor and in any run. With `strata`, ranks are
interleaved across strata (row r of a stratum of n_s rows sits at position (r + u) / n_s), so every
prefix holds each stratum in proportion, to within one row.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.stage import Context, Stage
from stages._hashing import id_uniform
from stages._ids import refuse_bad_ids, refuse_nans
from stages.text.tokens import count_words


def geometric_sizes(min_size: int, max_size: int, count: int) -> list[int]:
    """`count` sizes spaced geometrically from min_size to max_size inclusive (rounded, distinct)."""
    sizes = np.unique(np.round(np.geomspace(min_size, max_size, count)).astype(np.int64))
    return [int(s) for s in sizes]


def nesting_order(ids: pl.Series, strata: pl.Series | None, seed: int) -> np.ndarray:
    """Row numbers in the order rows join the subsets (stable across executors and runs)."""
    u = id_uniform(ids, seed, "nested_subsets")
    if strata is None:
        return np.lexsort((np.arange(u.size), u))
    # Equal values share a stratum as polars compares them (-0.0 is 0.0), and null is one of its own (NaN is refused
    # before: `check_input_data`); values cast to strings made '-0.0' a stratum apart and nulls one with '<null>'.
    _, stratum = np.unique(strata.rank("dense").fill_null(0).to_numpy(), return_inverse=True)
    by_stratum = np.lexsort((u, stratum))
    counts = np.bincount(stratum)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(u.size, dtype=np.float64)
    rank[by_stratum] = np.arange(u.size) - starts[stratum[by_stratum]]
    # Position within the stratum, spread over [0, 1); the row's own draw breaks ties between strata.
    position = (rank + u) / counts[stratum]
    return np.lexsort((u, position))


class NestedSubsets(Stage):
    """Nested subsets D_0 < ... < D_m of geometric sizes, in rows or tokens, by stable id hash.

    Output: the rows of the largest subset, in input order, with `subset_index` (the smallest j whose
    D_j holds the row), `subset_size` (that D_j's size, in `unit`) and `subset_rank` (position in the
    nesting order), so D_j is `subset_index <= j` (or `subset_size <= n_j`). Side output `sizes`: the
    realised rows and tokens of every D_j; with `side_outputs: true`, also one side output
    `size_<n>` per subset. In tokens, D_j is the shortest prefix reaching n_j tokens
    (sizes so close that one prefix reaches both are refused: the subsets would be the same rows).

    Parameters:
        sizes: the subset sizes, strictly increasing (null: geometric from min_size to max_size)
        min_size: smallest subset when `sizes` is null
        max_size: largest subset when `sizes` is null (null: all rows or all tokens)
        num_sizes: how many geometric sizes when `sizes` is null (rounded to whole rows or tokens: sizes that round
            alike are one, so close min_size and max_size give fewer; the step's stats then say so)
        unit: 'rows' or 'tokens'
        token_column: numeric column of token counts per row (null: whitespace words of text_column)
        text_column: the text counted when unit is 'tokens' and token_column is null
        strata: nest within the values of this column (label, source...): every subset keeps their proportions
            (null is a stratum of its own; NaN is refused)
        side_outputs: also write one side output per subset, `size_<n>`
        id_column: unique row id the hash is keyed on
    """

    name = "nested_subsets"
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        sizes: list[int] | None = None,
        min_size: int = 100,
        max_size: int | None = None,
        num_sizes: int = 6,
        unit: Literal["rows", "tokens"] = "rows",
        token_column: str | None = None,
        text_column: str = "text",
        strata: str | None = None,
        side_outputs: bool = False,
        id_column: str = "id",
    ):
        self.sizes = sizes
        self.min_size = min_size
        self.max_size = max_size
        self.num_sizes = num_sizes
        self.unit = unit
        self.token_column = token_column
        self.text_column = text_column
        self.strata = strata
        self.side_outputs = side_outputs
        self.id_column = id_column

    def validate(self) -> None:
        if self.sizes is not None:
            if not self.sizes or self.sizes[0] < 1:
                raise ParamError("sizes", f"must be a non-empty list of sizes >= 1, got {self.sizes}")
            bad = next((i for i in range(1, len(self.sizes)) if self.sizes[i] <= self.sizes[i - 1]), None)
            if bad is not None:
                raise ParamError(
                    "sizes", f"must be strictly increasing (each subset a proper superset of the previous); "
                    f"{self.sizes[bad]} follows {self.sizes[bad - 1]} in {self.sizes}")
            return
        if self.min_size < 1:
            raise ParamError("min_size", f"must be >= 1, got {self.min_size}")
        if self.max_size is not None and self.max_size <= self.min_size:
            raise ParamError("max_size", f"must exceed min_size ({self.min_size}), got {self.max_size}")
        if self.num_sizes < 2:
            raise ParamError("num_sizes", f"must be >= 2, got {self.num_sizes}")

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        cols: dict[str, str | None] = {self.id_column: "id_column"}
        if self.strata:
            cols[self.strata] = "strata"
        if self.unit == "tokens":
            if self.token_column:
                cols[self.token_column] = "token_column"
            else:
                cols[self.text_column] = "text_column"
        return {"data": cols}

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        if self.strata:
            refuse_nans(inputs["data"], self.strata, "NaN equals no other value, not even another NaN, so its rows "
                        "belong to no defined stratum", param="strata", input_name="data")

    def _tokens(self, table: pl.DataFrame, label: str) -> np.ndarray:
        if self.unit == "rows":
            return np.ones(table.height, dtype=np.int64)
        if self.token_column:
            column = table[self.token_column]
            # NaN < 0 is false; a fraction (2.7) was cut to 2 tokens without a word.
            whole = not column.dtype.is_float() or (column.is_finite() & (column == column.floor())).all()
            if not column.dtype.is_numeric() or column.null_count() or not whole or (column < 0).any():
                raise InputDataError(f"column '{self.token_column}' must hold whole token counts >= 0 (no nulls, "
                                     "NaN, infinities or fractions)", param="token_column", file=label)
            return column.cast(pl.Int64).to_numpy()
        return count_words(table[self.text_column], "whitespace").fill_null(0).cast(pl.Int64).to_numpy()

    def side_output_names(self):
        if not self.side_outputs:
            return ("sizes",)
        planned = self._planned_sizes()
        return ("sizes", *([f"size_{n}" for n in planned] if planned is not None else ["size_*"]))

    def _planned_sizes(self) -> list[int] | None:
        """The subset sizes the params fix; None when the largest is the input's total (the data decides)."""
        if self.sizes is not None:
            return list(self.sizes)
        if self.max_size is not None:
            return geometric_sizes(self.min_size, self.max_size, self.num_sizes)
        return None

    def _targets(self, total: int, label: str) -> list[int]:
        targets = self._planned_sizes()
        if targets is None:
            if total <= self.min_size:
                raise InputDataError(f"the input holds {total} {self.unit}, not more than min_size "
                                     f"({self.min_size})", param="min_size", file=label)
            targets = geometric_sizes(self.min_size, total, self.num_sizes)
        if targets[-1] > total:
            raise InputDataError(
                f"the largest subset asks for {targets[-1]} {self.unit} but the input holds {total}",
                param="sizes" if self.sizes is not None else "max_size", file=label)
        return targets

    def run(self, ctx: Context, data: Dataset) -> pl.DataFrame:
        table = data.collect()
        refuse_bad_ids(table[self.id_column], self.id_column, data.label)  # the hash needs one id per row
        tokens = self._tokens(table, data.label)
        order = nesting_order(table[self.id_column], table[self.strata] if self.strata else None, ctx.seed)
        cumulative = np.cumsum(tokens[order])
        targets = self._targets(int(cumulative[-1]), data.label)
        # Rows in D_j: the shortest prefix of the order whose cumulative size reaches target j.
        ends = np.searchsorted(cumulative, targets, side="left") + 1
        same = np.flatnonzero(np.diff(ends) == 0)
        if same.size:  # in tokens a row is not split: one long row can carry a prefix past the next target too
            j = int(same[0])
            raise InputDataError(
                f"subsets of {targets[j]} and {targets[j + 1]} {self.unit} are the same {int(ends[j])} rows "
                f"({int(cumulative[ends[j] - 1])} {self.unit}), so the larger is no proper superset; space the "
                "sizes further apart", param="sizes" if self.sizes is not None else "num_sizes", file=data.label)
        position = np.empty(table.height, dtype=np.int64)
        position[order] = np.arange(table.height)
        index = np.searchsorted(ends, position, side="right")
        inside = index < len(targets)
        result = table.with_columns(
            pl.Series("subset_index", index, dtype=pl.Int32),
            pl.Series("subset_size", np.asarray(targets + [0], dtype=np.int64)[index]),
            pl.Series("subset_rank", position),
        ).filter(pl.Series(inside))
        sizes = pl.DataFrame({
            "subset_index": np.arange(len(targets), dtype=np.int32), "subset_size": targets,
            "rows": ends.astype(np.int64), "tokens": cumulative[ends - 1].astype(np.int64), "unit": self.unit,
        })
        ctx.write_side_output("sizes", sizes)
        if self.side_outputs:
            for j, target in enumerate(targets):
                ctx.write_side_output(f"size_{target}", result.filter(pl.col("subset_index") <= j))
        ctx.record("sizes", targets)
        ctx.record("rows", [int(e) for e in ends])
        if self.sizes is None and len(targets) < self.num_sizes:  # rounding merged some: the curve has fewer points
            ctx.warn(f"num_sizes {self.num_sizes} gave {len(targets)} distinct sizes from {targets[0]} to {targets[-1]} "
                     f"{self.unit} (geometric sizes that round alike are one); widen min_size..max_size or give `sizes`")
        return result

    @classmethod
    def example(cls) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        table = pl.DataFrame({"id": [f"doc{i}" for i in range(60)], "label": [i % 3 for i in range(60)],
                              "text": ["word " * (1 + i % 7) for i in range(60)]})
        return {"sizes": [6, 12, 30], "strata": "label", "side_outputs": True}, {"data": table}
