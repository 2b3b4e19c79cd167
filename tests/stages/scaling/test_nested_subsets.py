import numpy as np
import polars as pl
import pytest
from conftest import check_side_outputs_declared

from pipeline.errors import InputDataError, ParamError
from stages.scaling.nested_subsets import NestedSubsets, geometric_sizes


def corpus(n: int = 1000) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame({
        "id": [f"row-{i}" for i in range(n)],
        "label": rng.choice(["a", "b", "c"], size=n, p=[0.6, 0.3, 0.1]),
        "text": [" ".join(["w"] * int(k)) for k in rng.integers(1, 40, size=n)],
    })


def members(out: pl.DataFrame, j: int) -> set[str]:
    return set(out.filter(pl.col("subset_index") <= j)["id"].to_list())


def test_exact_sizes_and_exact_supersets():
    sizes = [10, 25, 60, 150, 400, 1000]
    result = NestedSubsets(sizes=sizes, side_outputs=True).execute(corpus(), seed=7)
    out = result.table
    previous: set[str] = set()
    for j, n in enumerate(sizes):
        current = members(out, j)
        assert len(current) == n
        assert previous < current  # a proper superset of the previous subset
        assert set(result.side_outputs[f"size_{n}"]["id"].to_list()) == current
        previous = current
    assert result.side_outputs["sizes"]["rows"].to_list() == sizes
    assert (out.group_by("subset_index").agg(pl.col("subset_size").n_unique())["subset_size"] == 1).all()


@pytest.mark.parametrize("params", [
    {"sizes": [10, 25], "side_outputs": False},  # `sizes` alone
    {"min_size": 10, "max_size": 500, "num_sizes": 3, "side_outputs": True},  # size_<n> for the params' sizes
    {"min_size": 10, "num_sizes": 3, "side_outputs": True},  # up to the input's rows: `size_*`
])
def test_declared_side_outputs_follow_the_params(params):
    stage = NestedSubsets(**params)
    check_side_outputs_declared(stage, stage.execute(corpus(), seed=0))


def test_same_rows_whatever_the_input_order_and_seed_changes_them():
    data = corpus()
    first = NestedSubsets(sizes=[50, 200]).apply(data, seed=3)
    shuffled = NestedSubsets(sizes=[50, 200]).apply(data.sample(fraction=1.0, shuffle=True, seed=1), seed=3)
    assert members(first, 0) == members(shuffled, 0) and members(first, 1) == members(shuffled, 1)
    other = NestedSubsets(sizes=[50, 200]).apply(data, seed=4)
    assert members(first, 0) != members(other, 0)


def test_strata_keep_their_proportions_in_every_subset():
    data = corpus()
    share = data["label"].value_counts().with_columns(pl.col("count") / data.height)
    out = NestedSubsets(sizes=[20, 50, 100, 300], strata="label").apply(data, seed=0)
    for j, n in enumerate([20, 50, 100, 300]):
        counts = out.filter(pl.col("subset_index") <= j)["label"].value_counts()
        for row in counts.join(share, on="label", suffix="_all").iter_rows(named=True):
            assert abs(row["count"] - row["count_all"] * n) <= 1.0, (n, row)


def test_token_sizes_are_the_shortest_prefix_reaching_each_target():
    data = corpus()
    tokens = data["text"].str.count_matches(r"\S+")
    result = NestedSubsets(min_size=500, max_size=int(tokens.sum()) // 2, num_sizes=4, unit="tokens").execute(data)
    out, sizes = result.table, result.side_outputs["sizes"]
    ranked = out.with_columns(tokens=pl.col("text").str.count_matches(r"\S+")).sort("subset_rank")
    cumulative = ranked["tokens"].cum_sum().to_numpy()
    for row in sizes.iter_rows(named=True):
        assert cumulative[row["rows"] - 1] >= row["subset_size"] > cumulative[row["rows"] - 2]
        assert row["tokens"] == cumulative[row["rows"] - 1]
    assert sizes["subset_size"].to_list() == geometric_sizes(500, int(tokens.sum()) // 2, 4)


def test_sizes_not_increasing_or_too_large_are_refused():
    with pytest.raises(ParamError, match="strictly increasing") as err:
        NestedSubsets.from_params({"sizes": [10, 50, 50]})
    assert err.value.param == "sizes"
    with pytest.raises(InputDataError, match="asks for 5000 rows but the input holds 1000") as err:
        NestedSubsets(sizes=[100, 5000]).apply(corpus())
    assert err.value.param == "sizes"
    with pytest.raises(InputDataError, match="duplicate ids"):
        NestedSubsets(sizes=[2]).apply(pl.DataFrame({"id": [1, 1, 2]}))


def test_token_sizes_that_give_the_same_rows_are_refused():
    # One 50-word row reaches both 10 and 20 tokens: D_1 and D_2 were the same rows under two sizes, so a
    # scaling curve got two points of one training set at different x.
    table = pl.DataFrame({"id": [f"r{i}" for i in range(10)], "text": ["a " * 50] + ["b"] * 9})
    with pytest.raises(InputDataError, match="subsets of 10 and 20 tokens are the same 10 rows") as err:
        NestedSubsets(sizes=[5, 10, 20], unit="tokens").execute(table, seed=1)
    assert err.value.param == "sizes"


def test_nan_token_counts_and_null_ids_are_refused():
    table = pl.DataFrame({"id": [1, 2, 3], "n": [1.0, float("nan"), 2.0]})
    with pytest.raises(InputDataError, match="1 null ids") as err:  # one null id passed the uniqueness test
        NestedSubsets(sizes=[2]).apply(table.with_columns(id=pl.Series([1, None, 3])))
    assert err.value.param == "id_column"
    with pytest.raises(InputDataError, match="token counts >= 0") as err:
        NestedSubsets(sizes=[2], unit="tokens", token_column="n").apply(table)
    assert err.value.param == "token_column"
    with pytest.raises(InputDataError, match="whole token counts") as err:  # 2.7 was cut to 2 tokens
        NestedSubsets(sizes=[2], unit="tokens", token_column="n").apply(table.with_columns(n=pl.Series([1.0, 2.7, 2.0])))
    assert err.value.param == "token_column"


def test_nan_strata_are_refused_in_one_line(tmp_path):
    # NaN equals nothing, not even itself: its rows were nested as a stratum of their own (the values cast to the
    # string 'NaN'), a meaning no other key of the project gives NaN. A null stays a stratum of its own.
    from cli_failures import fails_cleanly

    data = corpus(60).with_columns(score=pl.Series([[0.5, float("nan"), 1.5][i % 3] for i in range(60)]))
    with pytest.raises(InputDataError, match="column 'score' has 20 NaN values") as err:
        NestedSubsets(sizes=[6, 30], strata="score").apply(data)
    assert err.value.param == "strata"
    out = NestedSubsets(sizes=[6, 30], strata="score").apply(data.with_columns(pl.col("score").fill_nan(None)))
    assert out.filter(pl.col("subset_index") == 0)["score"].null_count() == 2  # nulls: a third of every subset
    data.write_parquet(tmp_path / "d.parquet")
    proc = fails_cleanly(tmp_path, f"""
name: bad
steps:
  - id: nest
    stage: nested_subsets
    inputs: {tmp_path / 'd.parquet'}
    params: {{sizes: [6, 30], strata: score}}
""", "step 'nest' (stage 'nested_subsets'), parameter 'strata'", f"file '{tmp_path / 'd.parquet'}'",
                         "column 'score' has 20 NaN values", "fill_nan(None)")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "bad" / "nest").exists()


def test_strata_are_the_values_as_polars_compares_them():
    # Strata were the values cast to strings: -0.0 and 0.0 made two strata, and the string '<null>' joined the nulls.
    from stages.scaling.nested_subsets import nesting_order

    ids = pl.Series([f"r{i}" for i in range(40)])
    zeros = pl.Series([[0.0, -0.0, 1.0, 1.0][i % 4] for i in range(40)])
    assert (nesting_order(ids, zeros, 3) == nesting_order(ids, zeros.abs(), 3)).all()
    named = pl.Series([["<null>", None][i % 2] for i in range(40)])
    two = pl.Series([["a", "b"][i % 2] for i in range(40)])
    assert (nesting_order(ids, named, 3) == nesting_order(ids, two, 3)).all()


def test_geometric_sizes_that_round_alike_are_merged_with_a_warning():
    """10..20 rows in 20 geometric sizes are 11 distinct ones once rounded: the curve gets fewer points than asked
    for, which only `geometric_sizes`' docstring said."""
    result = NestedSubsets(min_size=10, max_size=20, num_sizes=20).execute(corpus(), seed=0)
    assert result.stats["sizes"] == list(range(10, 21))
    assert next(iter(result.stats)) == "warning"  # first, where the run's summary shows it
    assert "num_sizes 20 gave 11 distinct sizes from 10 to 20 rows" in result.stats["warning"]
    assert "warning" not in NestedSubsets(min_size=10, max_size=500, num_sizes=5).execute(corpus(), seed=0).stats
