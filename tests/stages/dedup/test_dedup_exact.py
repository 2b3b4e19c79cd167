"""dedup_exact: normalisation modes, keep policies, reference, and the side outputs that keep everything."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from stages.dedup import DedupExact

TEXTS = [
    "The quick brown fox.",        # 0
    "the  quick brown  fox.",      # 1: whitespace and case
    "THE QUICK BROWN FOX!!",       # 2: case and punctuation
    "The quick brown fox.",        # 3: byte-identical to 0
    "An unrelated sentence here.",  # 4
]


def _frame(texts=TEXTS, **extra):
    return pl.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "text": texts, **extra})


@pytest.mark.parametrize(("mode", "kept"), [
    ("none", ["r0", "r1", "r2", "r4"]),
    ("whitespace", ["r0", "r1", "r2", "r4"]),
    ("full", ["r0", "r4"]),
])
def test_normalisation_decides_what_is_equal(mode, kept):
    result = DedupExact(normalization=mode).execute(_frame())
    assert result.table["id"].to_list() == kept
    removed = result.side_outputs["removed"]
    assert sorted(removed["id"].to_list() + kept) == sorted(f"r{i}" for i in range(5))
    assert set(removed["duplicate_of"]) <= set(kept)
    assert (removed["reason"] == "exact duplicate").all() and (removed["similarity"] == 1.0).all()


def test_whitespace_mode_folds_runs_of_spaces():
    texts = ["a  b\tc", "a b c", " a b c ", "A b c"]
    assert DedupExact(normalization="whitespace").apply(_frame(texts))["id"].to_list() == ["r0", "r3"]


def test_keep_policies():
    texts = ["same text", "same text", "same text"]
    frame = pl.DataFrame({"id": [30, 10, 20], "text": texts, "quality": [0.2, 0.9, 0.5]})
    assert DedupExact(keep="first").apply(frame)["id"].to_list() == [30]
    assert DedupExact(keep="lowest_id").apply(frame)["id"].to_list() == [10]
    assert DedupExact(keep="column", keep_column="quality").apply(frame)["id"].to_list() == [10]
    assert DedupExact(keep="column", keep_column="quality", keep_descending=False).apply(frame)["id"].to_list() == [30]
    longest = pl.DataFrame({"id": [1, 2, 3], "text": ["x y", "x  y", "x   y"]})
    assert DedupExact(keep="longest").apply(longest)["id"].to_list() == [3]


def test_keep_column_when_no_row_has_a_copy():
    frame = pl.DataFrame({"id": [1, 2], "text": ["one text", "another text"], "score": [0.5, 0.7]})
    result = DedupExact(keep="column", keep_column="score").execute(frame)
    assert result.table["id"].to_list() == [1, 2] and result.side_outputs["removed"].height == 0


def test_side_outputs_keep_every_column_and_name_the_cluster():
    frame = _frame(extra_col=list(range(5)))
    result = DedupExact(normalization="full").execute(frame)
    removed = result.side_outputs["removed"]
    assert set(frame.columns) <= set(removed.columns)
    assert {"cluster_id", "duplicate_of", "duplicate_of_input", "similarity", "reason"} <= set(removed.columns)
    clusters = result.side_outputs["clusters"]
    assert clusters.filter(pl.col("kept"))["id"].to_list() == ["r0"]
    assert sorted(clusters["id"].to_list()) == ["r0", "r1", "r2", "r3"]
    assert (clusters["size"] == 4).all()
    stats = result.stats
    assert stats["rows_removed"] == 3 and stats["duplicate_rate"] == 0.6
    assert stats["cluster_size_histogram"] == {"3-4": 1}


def test_all_identical_corpus_keeps_one_row():
    frame = _frame(["same"] * 1000)
    result = DedupExact().execute(frame)
    assert result.table["id"].to_list() == ["r0"]
    assert result.side_outputs["removed"].height == 999
    assert result.stats["cluster_size_histogram"] == {"513-1024": 1}


def test_reference_removes_from_data_only():
    data = _frame(["held out question one", "training text", "training text", "other"])
    reference = pl.DataFrame({"id": ["t1"], "text": ["Held out question ONE"]})
    result = DedupExact(normalization="full").execute(data=data, reference=reference)
    assert result.table["id"].to_list() == ["r1", "r3"]
    removed = result.side_outputs["removed"].sort("id")
    assert removed["duplicate_of"].to_list() == ["t1", "r1"]
    assert removed["duplicate_of_input"].to_list() == ["reference", "data"]
    assert removed["reason"].to_list() == ["exact duplicate of a reference row", "exact duplicate"]
    assert result.stats["removed_as_reference_duplicates"] == 1


def test_duplicate_of_and_cluster_ids_keep_the_id_column_type():
    # Before: duplicate_of and clusters.id were strings ("10") while id stayed an integer (10), so they did not
    # join back to the rows they name.
    data = pl.DataFrame({"id": [10, 11, 12, 13], "text": ["same text", "same text", "other", "nothing alike"]})
    result = DedupExact().execute(data=data)
    removed, clusters = result.side_outputs["removed"], result.side_outputs["clusters"]
    assert removed.schema["duplicate_of"] == pl.Int64 and removed["duplicate_of"].to_list() == [10]
    assert clusters.schema["id"] == pl.Int64 and sorted(clusters["id"].to_list()) == [10, 11]
    assert DedupExact().execute(data=data.head(3).tail(2)).side_outputs["removed"].schema["duplicate_of"] == pl.Int64
    # A reference of text ids: duplicate_of may name either input, so it holds their common type, text.
    reference = pl.DataFrame({"id": ["t1"], "text": ["other"]})
    mixed = DedupExact().execute(data=data, reference=reference).side_outputs["removed"].sort("id")
    assert mixed["duplicate_of"].to_list() == ["10", "t1"]


def test_bad_values_are_refused():
    with pytest.raises(ParamError, match="keep_column"):
        DedupExact.from_params({"keep": "column"})
    with pytest.raises(InputDataError, match="null or empty"):
        DedupExact().apply(_frame(["fine", "  "]))
    with pytest.raises(InputDataError, match="already has a column 'reason'"):
        DedupExact().apply(_frame(["a", "b"], reason=["x", "y"]))


def test_nan_in_the_keep_column_is_refused_and_nulls_lose(tmp_path):
    # A NaN score was kept as if the highest (exit 0); a null one is documented to lose.
    from cli_failures import fails_cleanly

    path = tmp_path / "d.parquet"
    _frame(score=[1.0, float("nan"), 2.0, 0.5, 3.0]).write_parquet(path)
    proc = fails_cleanly(tmp_path, f"""
name: bad
steps:
  - id: dd
    stage: dedup_exact
    inputs: {path}
    params: {{keep: column, keep_column: score}}
""", "step 'dd' (stage 'dedup_exact'), parameter 'keep_column'", f"file '{path}'",
                         "input 'data' column 'score' has 1 NaN values; a NaN cannot be ranked")
    assert len(proc.stderr.strip().splitlines()) == 1
    reference = pl.DataFrame({"id": ["t1"], "text": ["The quick brown fox."], "score": [float("nan")]})
    with pytest.raises(InputDataError, match="input 'reference' column 'score' has 1 NaN") as err:
        DedupExact(keep="column", keep_column="score").apply(data=_frame(score=[1.0] * 5), reference=reference)
    assert err.value.param == "keep_column"
    for descending in (True, False):
        kept = DedupExact(keep="column", keep_column="score", keep_descending=descending).apply(
            _frame(["same", "same", "other"], score=[None, 1.0, 2.0]))
        assert kept["id"].to_list() == ["r1", "r2"]


def test_null_ids_and_repeated_ids_in_a_cluster_are_refused():
    with pytest.raises(InputDataError, match="1 null ids") as err:
        DedupExact().apply(_frame().with_columns(id=pl.when(pl.col("id") == "r4").then(None).otherwise("id")))
    assert err.value.param == "id_column"
    with pytest.raises(InputDataError, match="duplicate ids") as err:  # r0 and r3 are copies, both named r0
        DedupExact().apply(_frame().with_columns(id=pl.col("id").replace("r3", "r0")))
    assert err.value.param == "id_column"
    # Ids in no duplicate cluster too (the whole column is checked, 8 bytes an id: `refuse_bad_id_column`).
    with pytest.raises(InputDataError, match="duplicate ids .*e.g. 'r1'"):
        DedupExact().apply(_frame().with_columns(id=pl.col("id").replace("r4", "r1")))


def test_null_ids_are_counted_over_the_whole_input_not_the_first_batch(tmp_path):
    # 20 null ids over 20,000 rows: the message said 9, the first 8,192-row batch's count.
    from cli_failures import fails_cleanly

    n = 20_000
    spread = pl.DataFrame({"id": [None if i % 1_000 == 0 else f"r{i}" for i in range(n)],
                           "text": [f"document number {i}" for i in range(n)]})
    path = tmp_path / "d.parquet"
    spread.write_parquet(path)
    proc = fails_cleanly(tmp_path, f"name: bad\nsteps:\n  - id: dd\n    stage: dedup_exact\n    inputs: {path}\n",
                         "step 'dd' (stage 'dedup_exact'), parameter 'id_column'", f"file '{path}'",
                         "input 'data' column 'id' has 20 null ids")
    assert len(proc.stderr.strip().splitlines()) == 1
    with pytest.raises(InputDataError, match="input 'reference' column 'id' has 20 null ids") as err:
        DedupExact().apply(data=_frame(), reference=spread)
    assert err.value.param == "id_column"


def test_reference_only_mode_keeps_duplicates_within_data():
    data = _frame(["held out question one", "training text", "training text", "other"])
    reference = pl.DataFrame({"id": ["t1"], "text": ["held out question one"]})
    result = DedupExact(within_data=False).execute(data=data, reference=reference)
    assert result.table["id"].to_list() == ["r1", "r2", "r3"]
    assert result.side_outputs["removed"]["id"].to_list() == ["r0"]
    clusters = result.side_outputs["clusters"]
    assert clusters.filter(pl.col("id") == "r2")["kept"].to_list() == [True]


def test_a_clustered_rows_id_repeated_on_an_unclustered_row_is_refused(tmp_path):
    # Rows 1 and 2 are duplicates; row 0 shares row 1's id but is in no cluster. "b duplicate_of a" would not say
    # which 'a', so the id is checked against the whole column (streamed), not only among the clustered rows.
    frame = pl.DataFrame({"id": ["a", "a", "b"], "text": ["x", "y", "y"]})
    with pytest.raises(InputDataError, match="holds duplicate ids .*e.g. 'a'"):
        DedupExact(keep="lowest_id").execute(frame)
    frame.write_parquet(tmp_path / "d.parquet", row_group_size=1)  # the same from a file, one row a group
    with pytest.raises(InputDataError, match="holds duplicate ids"):
        DedupExact(keep="lowest_id").execute(Dataset.from_parquet(tmp_path / "d.parquet"))
    # Repeats among rows no cluster touches are refused too (they were kept, two rows named 'a').
    with pytest.raises(InputDataError, match="holds duplicate ids"):
        DedupExact(keep="lowest_id").execute(pl.DataFrame({"id": ["a", "a", "b", "c"], "text": ["p", "q", "y", "y"]}))


def test_repeated_ids_outside_any_cluster_are_refused_in_either_input(tmp_path):
    # Only the ids of clustered data rows were checked: a repeated id elsewhere in the data was kept twice, and a
    # repeated reference id was named by 'duplicate_of' without saying which row (exit 0 both).
    from cli_failures import fails_cleanly

    data = pl.DataFrame({"id": ["a", "b", "b", "c", "d"], "text": ["x one", "y two", "z three", "x one", "w"]})
    with pytest.raises(InputDataError, match="input 'data' column 'id' holds duplicate ids \\(1 ids repeated, "
                                             "e.g. 'b'\\)") as err:
        DedupExact().apply(data)
    assert err.value.param == "id_column"
    reference = pl.DataFrame({"id": ["r", "r"], "text": ["w", "q"]})
    with pytest.raises(InputDataError, match="input 'reference' column 'id' holds duplicate ids") as err:
        DedupExact(within_data=False).apply(data=data.filter(pl.col("id") != "b"), reference=reference)
    assert err.value.param == "id_column"
    path = tmp_path / "d.parquet"
    pl.DataFrame({"id": [i % 19_999 for i in range(20_000)], "text": [f"document {i}" for i in range(20_000)]}
                 ).write_parquet(path, row_group_size=5_000)  # rows 0 and 19,999 share id 0; no two texts match
    proc = fails_cleanly(tmp_path, f"name: bad\nsteps:\n  - id: dd\n    stage: dedup_exact\n    inputs: {path}\n",
                         "step 'dd' (stage 'dedup_exact'), parameter 'id_column'", f"file '{path}'",
                         "input 'data' column 'id' holds duplicate ids (1 ids repeated, e.g. 0)")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "bad" / "dd").exists()
