"""label_noise: exact counts in every mode, label distributions, determinism, streaming, bad input."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

import stages.noise.rows as noise_rows
from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.stage import Context
from stages._hashing import id_digest, keyed, stream_key
from stages.noise import LabelNoise, round_half_up


@pytest.fixture(scope="module")
def digits() -> pl.DataFrame:
    from sklearn.datasets import load_digits

    d = load_digits()
    return pl.DataFrame({
        "id": np.arange(d.target.size, dtype=np.int64),
        "pixels": pl.Series(d.data.astype(np.float32).tolist(), dtype=pl.List(pl.Float32)),
        "label": d.target.astype(np.int64),
    })


@pytest.fixture(scope="module")
def digit_words(digits) -> pl.DataFrame:
    """The same images with string labels and string ids."""
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    return digits.with_columns(
        pl.format("img-{}", pl.col("id")).alias("id"),
        pl.col("label").replace_strict(list(range(10)), words).alias("label"),
    )


def build(**params) -> LabelNoise:
    """Through from_params, as a YAML config would, so validation runs."""
    return LabelNoise.from_params(params)


def class_sizes(table: pl.DataFrame) -> dict:
    return dict(table.group_by("label").len().iter_rows())


def realised_cells(out: pl.DataFrame) -> dict:
    return {(a, b): n for a, b, n in out.group_by("clean_label", "label").len().iter_rows()}


# ---------------------------------------------------------------- flip: exact counts


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.33, 0.5, 0.95, 1.0])
def test_symmetric_flips_exactly_round_rate_times_class_size_and_never_the_true_class(digits, rate):
    result = build(mode="flip", noise="symmetric", rate=rate).execute(digits, seed=3)
    out = result.table
    assert out.height == digits.height
    flipped = out.filter(pl.col("is_noisy"))
    assert (flipped["label"] != flipped["clean_label"]).all()
    assert (out.filter(~pl.col("is_noisy"))["label"] == out.filter(~pl.col("is_noisy"))["clean_label"]).all()
    per_class = dict(flipped.group_by("clean_label").len().iter_rows())
    for cls, n in class_sizes(digits).items():
        assert per_class.get(cls, 0) == round_half_up(rate * n)
    # The flips of one class spread over the other K-1 classes within one example of even.
    cells = realised_cells(out)
    for cls, n in class_sizes(digits).items():
        n_flip = round_half_up(rate * n)
        for other in range(10):
            if other != cls:
                assert abs(cells.get((cls, other), 0) - n_flip / 9) < 1
    assert set(out["noise_origin"].unique()) <= {"clean", "flipped"}
    record = result.stats["label_noise"]
    assert record["realised_noise_rate"] == pytest.approx(flipped.height / digits.height)
    assert abs(record["requested_noise_rate"] - record["realised_noise_rate"]) <= 0.5 * 10 / digits.height


def test_pairflip_sends_each_class_to_the_next_one(digits):
    out = build(mode="flip", noise="pairflip", rate=0.3).apply(digits, seed=1)
    flipped = out.filter(pl.col("is_noisy"))
    assert ((flipped["clean_label"] + 1) % 10 == flipped["label"]).all()
    per_class = dict(flipped.group_by("clean_label").len().iter_rows())
    assert per_class == {c: round_half_up(0.3 * n) for c, n in class_sizes(digits).items()}


def test_mapping_swaps_only_the_named_classes_with_class_dependent_rates(digit_words):
    out = build(mode="flip", noise="mapping", mapping={"three": "eight", "eight": "three"},
                rate={"three": 0.4, "eight": 0.1}).apply(digit_words, seed=5)
    flipped = out.filter(pl.col("is_noisy"))
    pairs = set(flipped.select("clean_label", "label").unique().iter_rows())
    assert pairs == {("three", "eight"), ("eight", "three")}
    sizes = class_sizes(digit_words)
    per_class = dict(flipped.group_by("clean_label").len().iter_rows())
    assert per_class == {"three": round_half_up(0.4 * sizes["three"]), "eight": round_half_up(0.1 * sizes["eight"])}


def test_transition_matrix_cells_are_within_one_and_a_half_examples_of_the_request(digits):
    rng = np.random.default_rng(0)
    t = rng.dirichlet(np.ones(10) * 0.5, size=10)
    t = 0.6 * np.eye(10) + 0.4 * t  # mostly clean, with structured off-diagonal mass
    t /= t.sum(axis=1, keepdims=True)
    result = build(mode="flip", noise="matrix", matrix=t.tolist()).execute(digits, seed=2)
    cells = realised_cells(result.table)
    sizes = class_sizes(digits)
    for i in range(10):
        n_flip = sum(cells.get((i, j), 0) for j in range(10) if j != i)
        assert abs(n_flip - sizes[i] * (1 - t[i, i])) <= 0.5
        for j in range(10):
            assert abs(cells.get((i, j), 0) - sizes[i] * t[i, j]) <= 1.5
    # The side output holds the same realised counts, and the requested ones beside them.
    transitions = result.side_outputs["transitions"]
    assert transitions.height == 100
    assert transitions["count"].sum() == digits.height
    for a, b, count, requested in transitions.iter_rows():
        assert cells.get((a, b), 0) == count
        assert requested == pytest.approx(sizes[a] * t[a, b])


def test_class_dependent_symmetric_rates_and_explicit_class_order(digit_words):
    order = ["nine", "eight", "seven", "six", "five", "four", "three", "two", "one", "zero", "ten"]
    result = build(mode="flip", noise="pairflip", rate={"nine": 0.5, "one": 0.2}, classes=order).execute(
        digit_words, seed=0)
    flipped = result.table.filter(pl.col("is_noisy"))
    targets = set(flipped.select("clean_label", "label").unique().iter_rows())
    assert targets == {("nine", "eight"), ("one", "zero")}  # "next" follows the given class order
    record = result.stats["label_noise"]
    assert record["classes"] == order
    ten = next(c for c in record["per_class"] if c["class"] == "ten")
    assert ten["rows"] == 0 and ten["realised_flips"] == 0


# ---------------------------------------------------------------- flip: determinism and streaming


def test_flip_is_deterministic_under_a_seed_and_changes_with_it(digits):
    stage = build(mode="flip", rate=0.2)
    assert stage.apply(digits, seed=7).equals(stage.apply(digits, seed=7))
    assert not stage.apply(digits, seed=7).equals(stage.apply(digits, seed=8))


def test_a_higher_rate_flips_a_superset_of_rows(digits):
    low = build(mode="flip", rate=0.1).apply(digits, seed=4).filter(pl.col("is_noisy"))["id"]
    high = build(mode="flip", rate=0.3).apply(digits, seed=4).filter(pl.col("is_noisy"))["id"]
    assert set(low.to_list()) <= set(high.to_list())


def test_flip_depends_on_ids_not_on_row_order(digits):
    stage = build(mode="flip", rate=0.25)
    forward = stage.apply(digits, seed=9)
    shuffled = stage.apply(digits.sample(fraction=1.0, shuffle=True, seed=1), seed=9)
    assert forward.equals(shuffled.sort("id"))


def test_flip_streams_parquet_parts_in_small_batches_with_the_same_result(digits, tmp_path, monkeypatch):
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, start in enumerate(range(0, digits.height, 400)):
        digits.slice(start, 400).write_parquet(parts / f"part-{i:05d}.parquet")
    stage = build(mode="flip", noise="symmetric", rate=0.3)
    in_memory = stage.apply(digits, seed=12)
    monkeypatch.setattr(noise_rows, "DEFAULT_BATCH_ROWS", 97)
    ctx = Context(step_id="flip", seed=12, out_dir=tmp_path / "out")
    ctx.out_dir.mkdir()
    batches = stage.run(ctx, data=Dataset.from_parquet(parts))
    assert not isinstance(batches, pl.DataFrame)  # on-disk input is streamed batch by batch
    batches = list(batches)
    assert max(b.height for b in batches) == 97
    assert pl.concat(batches).equals(in_memory)


def test_id_column_null_keys_by_row_position(digits):
    table = digits.drop("id")
    out = build(mode="flip", rate=0.2, id_column=None).apply(table, seed=1)
    assert out["source_id"].to_list() == list(range(table.height))
    assert out.filter(pl.col("is_noisy")).height == sum(round_half_up(0.2 * n) for n in class_sizes(table).values())


def test_stable_hash_of_ids_is_pinned_and_collision_free_on_real_ids():
    # Pinned values: which rows a seed selects must not change with polars, NumPy or this library.
    assert id_digest(pl.Series(["img-0", "img-1", ""])).tolist() == [
        7054630927813712670, 6919873926087386933, 11151680985442257827]
    assert keyed(id_digest(pl.Series([0, 1])), stream_key(42, "label_noise", "flip")).tolist() == [
        8887504475073312299, 9281679818904935414]
    digest = id_digest(pl.Series(["img-0", "img-1", "", "a much longer identifier " * 4]))
    assert len(set(digest.tolist())) == 4
    assert id_digest(pl.Series(["img-0"]))[0] == digest[0]
    import keyword

    words = pl.Series(keyword.kwlist + dir(math) + dir(str))
    assert np.unique(id_digest(words.unique())).size == words.n_unique()


# ---------------------------------------------------------------- dilute


@pytest.mark.parametrize("alpha", [0, 0.37, 1, 2.5, 7])
def test_dilute_adds_exactly_round_alpha_n_rows_and_keeps_every_clean_row(digits, alpha):
    result = build(mode="dilute", alpha=alpha).execute(digits, seed=1)
    out = result.table
    added = out.filter(pl.col("noise_origin") == "added")
    assert added.height == round_half_up(alpha * digits.height)
    clean = out.filter(pl.col("noise_origin") == "clean")
    assert clean.select(digits.columns).equals(digits)
    assert out["id"].n_unique() == out.height  # added rows get fresh ids
    uses = added.group_by("source_id").len()["len"]
    full = math.floor(round_half_up(alpha * digits.height) / digits.height)
    if added.height:
        assert set(uses.unique().to_list()) <= {full, full + 1}
    # An added row keeps its source's input and true label.
    joined = added.join(digits, left_on="source_id", right_on="id", suffix="_src")
    assert joined.height == added.height
    assert (joined["pixels"] == joined["pixels_src"]).all()
    assert (joined["clean_label"] == joined["label_src"]).all()
    record = result.stats["label_noise"]
    assert record["added_rows_realised"] == added.height
    assert record["added_rows_requested"] == pytest.approx(alpha * digits.height)


def test_dilute_refuses_integer_ids_that_would_pass_their_type_in_one_line():
    # Added ids continue after the largest: 124..127 fit Int8, 128 was a polars cast error, and ids near the top
    # of Int64 or UInt64 a Python OverflowError (exit 1, a traceback).
    table = pl.DataFrame({"id": pl.Series([123, 1, 2, 3], dtype=pl.Int8), "label": [0, 1, 0, 1]})
    out = LabelNoise(mode="dilute", alpha=1.0).apply(table)
    assert out["id"].tail(4).to_list() == [124, 125, 126, 127]
    for ids, dtype in (([124, 1, 2, 3], pl.Int8), ([2**63 - 1, 1, 2, 3], pl.Int64), ([2**64 - 2, 1, 2, 3], pl.UInt64)):
        with pytest.raises(InputDataError, match="to a wider integer or to strings") as err:
            LabelNoise(mode="dilute", alpha=1.0).apply(table.with_columns(id=pl.Series(ids, dtype=dtype)))
        assert err.value.param == "id_column"


def test_dilute_uniform_labels_pass_a_chi_square_test(digits):
    added = build(mode="dilute", alpha=20).apply(digits, seed=2).filter(pl.col("noise_origin") == "added")
    counts = added.group_by("label").len().sort("label")["len"].to_numpy()
    assert counts.size == 10
    assert stats.chisquare(counts).pvalue > 0.001
    # exclude_true is off by default (as in the paper): about 1/K of the added labels are the true one.
    same = (added["label"] == added["clean_label"]).mean()
    assert abs(same - 0.1) < 0.01


def test_exclude_true_draws_uniformly_among_the_other_classes(digit_words):
    added = build(mode="dilute", alpha=20, exclude_true=True).apply(digit_words, seed=2).filter(
        pl.col("noise_origin") == "added")
    assert (added["label"] != added["clean_label"]).all()
    assert added["is_noisy"].all()
    # Uniform over the other K-1: the offset (noisy - true) mod K is uniform on 1..K-1 in every class.
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    index = {w: i for i, w in enumerate(words)}
    offset = (added["label"].replace_strict(index) - added["clean_label"].replace_strict(index)) % 10
    counts = offset.value_counts().sort(offset.name)["count"].to_numpy()
    assert counts.size == 9
    assert stats.chisquare(counts).pvalue > 0.001
    per_class = added.group_by("clean_label").agg(pl.col("label").n_unique())["label"]
    assert (per_class == 9).all()


def test_structured_noise_favours_the_confusing_class_at_rate_delta(digits):
    delta = 0.4
    result = build(mode="dilute", alpha=10, noise="structured", delta=delta, confusion="centroid",
                   feature_column="pixels").execute(digits, seed=3)
    added = result.table.filter(pl.col("noise_origin") == "added")
    confusion = np.asarray(result.stats["label_noise"]["confusion_matrix"])
    assert (confusion.sum(axis=1) == 1).all() and (np.diag(confusion) == 0).all()
    confusing = confusion.argmax(axis=1)
    hits = (added["label"].to_numpy() == confusing[added["clean_label"].to_numpy()]).mean()
    expected = delta + (1 - delta) / 10
    assert abs(hits - expected) < 4 * math.sqrt(expected * (1 - expected) / added.height)
    # Nearest centroids of real digits: the pairs are visually close, never a class with itself.
    assert confusing[0] != 0 and len(set(confusing.tolist())) > 1


def test_centroid_confusion_refuses_nan_features(digits):
    nan = digits.with_columns(pl.when(pl.col("id") == 5).then(pl.lit([float("nan")] * 64, pl.List(pl.Float32)))
                              .otherwise(pl.col("pixels")).alias("pixels"))
    with pytest.raises(InputDataError, match="NaN or infinite values in 1 vector") as err:  # else argmin picks class 0
        build(mode="dilute", alpha=2, noise="structured", confusion="centroid", feature_column="pixels").apply(nan)
    assert err.value.param == "feature_column"


def test_structured_derangement_and_user_mapping(digit_words):
    result = build(mode="dilute", alpha=5, noise="structured", delta=1.0).execute(digit_words, seed=1)
    added = result.table.filter(pl.col("noise_origin") == "added")
    confusion = np.asarray(result.stats["label_noise"]["confusion_matrix"])
    assert sorted(confusion.argmax(axis=1).tolist()) == list(range(10)) and not np.diag(confusion).any()
    assert added.group_by("clean_label").agg(pl.col("label").n_unique())["label"].max() == 1
    mapped = build(mode="dilute", alpha=3, noise="structured", delta=1.0,
                   confusion={"three": "eight", "eight": "three"}).apply(digit_words, seed=1)
    threes = mapped.filter((pl.col("noise_origin") == "added") & (pl.col("clean_label") == "three"))
    assert (threes["label"] == "eight").all()


def test_dilute_from_an_out_of_distribution_source(digits):
    data = digits.filter(pl.col("label") < 5)
    source = digits.filter(pl.col("label") >= 5).drop("label")
    result = build(mode="dilute", alpha=1.5, noise="structured", delta=0.5,
                   feature_column="pixels").execute(data, source=source, seed=4)
    added = result.table.filter(pl.col("noise_origin") == "added")
    assert added.height == round_half_up(1.5 * data.height)
    assert added["clean_label"].null_count() == added.height
    assert added["is_noisy"].all()
    assert set(added["label"].unique().to_list()) <= set(range(5))
    assert set(added["source_id"].to_list()) <= set(source["id"].to_list())
    transitions = result.side_outputs["transitions"]
    assert transitions.filter(pl.col("clean_label").is_null())["count"].sum() == added.height


def test_dilute_streams_from_parquet_with_the_same_rows(digits, tmp_path, monkeypatch):
    path = tmp_path / "digits.parquet"
    digits.write_parquet(path, row_group_size=300)
    stage = build(mode="dilute", alpha=1.3, noise="uniform")
    in_memory = stage.apply(digits, seed=6)
    monkeypatch.setattr(noise_rows, "DEFAULT_BATCH_ROWS", 211)
    streamed = stage.execute(path, seed=6, workdir=tmp_path / "out")
    assert streamed.table.sort("id").equals(in_memory.sort("id"))
    assert streamed.side_outputs["transitions"].equals(
        stage.execute(digits, seed=6).side_outputs["transitions"])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("params, param", [
    ({"mode": "dilute", "alpha": -1}, "alpha"),
    ({"mode": "dilute", "alpha": float("inf")}, "alpha"),
    ({"mode": "dilute", "alpha": 1e12}, "alpha"),  # a typo's worth of rows: refused, not written until the disk fills
    ({"mode": "flip", "rate": 1.5}, "rate"),
    ({"mode": "flip", "rate": -0.1}, "rate"),
    ({"mode": "flip", "rate": {3: 2.0}}, "rate"),
    ({"mode": "flip"}, "rate"),
    ({"mode": "flip", "noise": "uniform", "rate": 0.2}, "noise"),
    ({"mode": "dilute", "noise": "pairflip"}, "noise"),
    ({"mode": "flip", "noise": "matrix", "matrix": [[0.9, 0.2], [0.5, 0.5]]}, "matrix"),
    ({"mode": "flip", "noise": "matrix", "matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]}, "matrix"),
    ({"mode": "flip", "noise": "matrix", "matrix": [[1.5, -0.5], [0.0, 1.0]]}, "matrix"),
    ({"mode": "flip", "noise": "matrix", "matrix": [[1.0, 0.0], [0.0, 1.0]], "rate": 0.1}, "rate"),
    ({"mode": "flip", "noise": "mapping", "rate": 0.2}, "mapping"),
    ({"mode": "flip", "noise": "mapping", "rate": 0.2, "mapping": {1: 1}}, "mapping"),
    ({"mode": "dilute", "noise": "structured", "confusion": "nearest"}, "confusion"),
    ({"mode": "dilute", "noise": "structured", "confusion": "centroid"}, "feature_column"),
    ({"mode": "dilute", "delta": 1.2}, "delta"),
    ({"mode": "dilute", "rate": 0.2}, "rate"),
    ({"mode": "dilute", "matrix": [[1.0, 0.0], [0.0, 1.0]]}, "matrix"),
    ({"mode": "flip", "rate": 0.2, "alpha": 3}, "alpha"),  # were ignored without a word by flip
    ({"mode": "flip", "rate": 0.2, "exclude_true": True}, "exclude_true"),
    ({"mode": "flip", "rate": 0.2, "confusion": "centroid", "feature_column": "pixels"}, "confusion"),
    ({"mode": "flip", "rate": 0.2, "classes": [1]}, "classes"),
    ({"mode": "flip", "rate": 0.2, "classes": [1, 2], "mapping": None, "noise": "mapping"}, "mapping"),
    ({"mode": "flip", "rate": "a lot"}, "rate"),
    ({"mode": "sideways"}, "mode"),
])
def test_bad_params_name_the_parameter(params, param):
    with pytest.raises(ParamError) as err:
        LabelNoise.from_params(params)
    assert err.value.param == param
    assert param in str(err.value)


def test_wrong_matrix_size_and_unknown_classes_are_caught_against_the_data(digits):
    with pytest.raises(ParamError, match="10 x 10") as err:
        build(mode="flip", noise="matrix", matrix=np.eye(3).tolist()).apply(digits)
    assert err.value.param == "matrix"
    with pytest.raises(ParamError, match="unknown class") as err:
        build(mode="flip", noise="mapping", rate=0.3, mapping={3: 11}).apply(digits)
    assert err.value.param == "mapping"
    with pytest.raises(ParamError, match="unknown class") as err:
        build(mode="flip", rate={12: 0.3}).apply(digits)
    assert err.value.param == "rate"
    with pytest.raises(ParamError, match="unknown class") as err:
        build(mode="dilute", noise="structured", confusion={3: 42}).apply(digits)
    assert err.value.param == "confusion"
    with pytest.raises(InputDataError, match="not in classes") as err:
        build(mode="flip", rate=0.3, classes=[0, 1, 2]).apply(digits)
    assert err.value.param == "classes"


def test_bad_tables_are_refused_with_the_column_named(digits):
    with pytest.raises(InputDataError, match="no column 'label'"):
        build(mode="flip", rate=0.1).apply(digits.rename({"label": "digit"}))
    with pytest.raises(InputDataError, match="single class") as err:
        build(mode="flip", rate=0.1).apply(digits.filter(pl.col("label") == 4))
    assert err.value.param == "label_column"
    with pytest.raises(InputDataError, match="null"):
        build(mode="dilute", alpha=1).apply(digits.with_columns(
            pl.when(pl.col("id") == 5).then(None).otherwise(pl.col("label")).alias("label")))
    # Every image twice under the same id: 4 rows per class, one flip each, and the twins tie at the cut.
    twins = pl.concat([digits.head(20), digits.head(20)])
    with pytest.raises(InputDataError, match="duplicate") as err:
        build(mode="flip", rate=0.25).apply(twins)
    assert err.value.param == "id_column"
    with pytest.raises(InputDataError, match="duplicate"):
        build(mode="dilute", alpha=0.275).apply(twins)  # 11 picks: an odd cut splits a pair
    with pytest.raises(InputDataError, match="label types|integers or strings"):
        build(mode="flip", rate=0.1).apply(digits.with_columns(pl.col("label").cast(pl.Float64)))
    noisy = build(mode="flip", rate=0.1).apply(digits)
    with pytest.raises(InputDataError, match="clean_label"):
        build(mode="flip", rate=0.1).apply(noisy)
    with pytest.raises(InputDataError, match="only used by mode 'dilute'"):
        build(mode="flip", rate=0.1).apply(digits, source=digits)


def _colliding_digest(monkeypatch, collide):
    """Make `id_digest` give `collide(ids)`'s digests: two distinct ids then share one, as a 64-bit collision would."""
    monkeypatch.setattr(noise_rows, "id_digest", lambda ids: id_digest(collide(ids)))


def test_a_hash_collision_at_a_flip_cut_names_the_two_rows_not_repeated_ids(monkeypatch, tmp_path):
    # Distinct ids pass `check_input_data`; 'c' then hashes as 'a' (class x, rows 0 and 2) and one of them must flip.
    table = pl.DataFrame({"id": ["a", "b", "c", "d"], "label": ["x", "y", "x", "y"]})
    table.write_parquet(tmp_path / "t.parquet")
    _colliding_digest(monkeypatch, lambda ids: ids.replace("c", "a"))
    ctx = Context(step_id="flip", seed=0, out_dir=tmp_path / "out")
    ctx.out_dir.mkdir()
    with pytest.raises(InputDataError) as err:
        list(build(mode="flip", rate=0.5).run(ctx, data=Dataset.from_parquet(tmp_path / "t.parquet")))
    assert err.value.param == "id_column" and err.value.file == str(tmp_path / "t.parquet")
    assert "duplicate" not in str(err.value)
    assert err.value.message.startswith("input 'data' column 'id' holds two distinct ids whose 64-bit digests "
                                        "collide (rows 0 and 2, counting from 0")
    assert err.value.hint == "change one of those two ids, or set id_column: null to key by row position"


@pytest.mark.parametrize("pool", ["data", "source"])
def test_a_hash_collision_at_the_partial_dilute_cycle_names_the_pool_and_its_rows(monkeypatch, pool):
    # Every id hashes alike, so the one pick of the partial cycle (alpha 0.25 of 4 rows) ties across the whole pool.
    data = pl.DataFrame({"id": ["a", "b", "c", "d"], "label": ["x", "y", "x", "y"]})
    inputs = {"source": pl.DataFrame({"id": ["p", "q", "r"]})} if pool == "source" else {}
    _colliding_digest(monkeypatch, lambda ids: pl.Series(["same"] * ids.len()))
    with pytest.raises(InputDataError) as err:
        build(mode="dilute", alpha=0.25).apply(data, **inputs)
    assert err.value.param == "id_column" and "duplicate" not in str(err.value)
    assert err.value.message.startswith(f"input '{pool}' column 'id' holds two distinct ids whose 64-bit digests "
                                        "collide (rows 0 and 1,")


def test_library_calls_are_validated_too(digits):
    with pytest.raises(ParamError) as err:
        LabelNoise(mode="flip", rate=1.5).apply(digits)
    assert err.value.param == "rate"


def test_repeated_ids_are_refused_in_every_input_before_any_draw(digits, tmp_path):
    # Refused whatever the rate, seed or mode (before, only twins either side of a cut were), with the count and an
    # example; a Parquet input is checked streamed, in one line from the CLI.
    from cli_failures import fails_cleanly

    twins = pl.concat([digits.head(20), digits.head(20)])
    for params in ({"mode": "flip", "rate": 0.5}, {"mode": "flip", "rate": 0.1}, {"mode": "dilute", "alpha": 1}):
        with pytest.raises(InputDataError, match="input 'data' column 'id' holds duplicate ids "
                                                 "\\(20 ids repeated, e.g. 0\\)") as err:
            build(**params).apply(twins)
        assert err.value.param == "id_column" and "id_column: null" in err.value.hint
    assert build(mode="flip", rate=0.5, id_column=None).apply(twins).height == 40  # keyed by row position
    ood = digits.head(6).with_columns(pl.lit(7).alias("id"))
    with pytest.raises(InputDataError, match="input 'source' column 'id' holds duplicate ids"):
        build(mode="dilute", alpha=1).apply(digits, source=ood)
    twins.write_parquet(tmp_path / "twins.parquet")
    proc = fails_cleanly(tmp_path, f"""
name: bad
steps:
  - id: noisy
    stage: label_noise
    inputs: {tmp_path / 'twins.parquet'}
    params: {{mode: flip, rate: 0.5}}
""", "step 'noisy' (stage 'label_noise'), parameter 'id_column'", f"file '{tmp_path / 'twins.parquet'}'",
                         "holds duplicate ids (20 ids repeated, e.g. 0)")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "bad" / "noisy").exists()


def test_binary_ids_that_are_not_utf8_are_keyed_by_their_bytes(tmp_path):
    # A Binary id column failed inside polars ("invalid utf8") where the ids were cast to text to digest them.
    ids = pl.Series("id", [bytes([200, i]) for i in range(90)], dtype=pl.Binary)
    path = tmp_path / "binary.parquet"
    pl.DataFrame({"id": ids, "label": [i % 3 for i in range(90)]}).write_parquet(path)
    flipped = LabelNoise(mode="flip", noise="symmetric", rate=0.2, id_column="id").execute(Dataset.from_parquet(path))
    assert flipped.table["id"].equals(ids) and int(flipped.table["is_noisy"].sum()) == 18
    diluted = LabelNoise(mode="dilute", alpha=1.0, id_column="id").execute(Dataset.from_parquet(path)).table
    added = diluted.filter(pl.col("noise_origin") == "added")
    assert added.height == 90 and diluted["id"].n_unique() == 180 and diluted["id"].dtype == pl.Binary
    assert added["id"].to_list() == [s + b"~n0" for s in added["source_id"].to_list()]
    # A binary id that is valid UTF-8 digests as that text does: keyed draws do not depend on the column type.
    text = pl.Series(["a", "bé", "", "日本"])
    np.testing.assert_array_equal(id_digest(text.cast(pl.Binary)), id_digest(text))


def test_the_other_modes_params_are_refused_by_validate_naming_them_all(tmp_path):
    from cli_failures import refused_by_validate

    pl.DataFrame({"id": range(30), "label": ["cat", "dog", "fox"] * 10}).write_parquet(tmp_path / "d.parquet")

    def config(params: str) -> str:
        return f"""
name: bad
steps:
  - id: noisy
    stage: label_noise
    inputs: {tmp_path / 'd.parquet'}
    params: {params}
"""
    message = refused_by_validate(tmp_path / "c.yaml", config("{mode: flip, rate: 0.2, alpha: 3, delta: 0.9}"))
    assert "parameter 'alpha'" in message and "alpha, delta are dilute-mode parameters, unused by mode 'flip'" in message
    message = refused_by_validate(tmp_path / "c.yaml", config("{mode: dilute, rate: 0.2, mapping: {cat: dog}}"))
    assert "rate, mapping are flip-mode parameters, unused by mode 'dilute'" in message
    # Uniform dilution draws every added label uniformly: delta, confusion and feature_column were dropped silently.
    message = refused_by_validate(tmp_path / "c.yaml", config("{mode: dilute, alpha: 2, delta: 0.9, confusion: centroid}"))
    assert "parameter 'delta'" in message and "delta, confusion are structured-noise parameters, unused by noise " \
        "'uniform'" in message and "set noise: structured" in message


def test_the_studies_sweep_uniform_and_structured_noise_with_one_delta():
    # The studies give their delta (0.2 by default) to every dilute run: only structured runs may take it.
    from stages.noise.params import structured_params

    assert structured_params("uniform", delta=0.2, confusion="derangement") == {}
    assert structured_params("structured", delta=0.2) == {"delta": 0.2}
    with pytest.raises(ParamError, match="confusion is a structured-noise parameter, unused by noise 'uniform'"):
        build(mode="dilute", alpha=1, noise="uniform", confusion=np.eye(3).tolist())


def test_a_source_column_of_another_kind_is_refused_not_cast(tmp_path):
    # An Int64 `text` in source was cast to the data's String without a word: numbers written as texts.
    from cli_failures import refused_by_validate

    data = pl.DataFrame({"id": range(30), "label": ["cat", "dog", "fox"] * 10, "text": [f"t{i}" for i in range(30)]})
    source = pl.DataFrame({"id": range(100, 110), "text": range(10)})
    with pytest.raises(InputDataError, match=r"input 'source' column 'text' is Int64 \(integers\), but the data's is "
                                             r"String \(text\); .* cast it to String first") as err:
        build(mode="dilute", alpha=1).apply(data, source=source)
    assert err.value.file == "input 'source'"
    assert build(mode="dilute", alpha=1).apply(data, source=source.cast({"text": pl.String})).height == 60
    data.write_parquet(tmp_path / "d.parquet")
    source.write_parquet(tmp_path / "s.parquet")
    message = refused_by_validate(tmp_path / "c.yaml", f"""
name: bad
steps:
  - id: noisy
    stage: label_noise
    inputs: {{data: {tmp_path / 'd.parquet'}, source: {tmp_path / 's.parquet'}}}
    params: {{mode: dilute, alpha: 1}}
""")
    assert "step 'noisy' (stage 'label_noise')" in message and "input 'source' column 'text' is Int64" in message


def test_a_source_column_that_casts_without_loss_is_taken_and_vectors_compare_their_items():
    # Integers into floats lose nothing (refused by the first cut of the check above); List(String) into
    # List(Float64) passed it as "vectors" both and failed inside polars (exit 1).
    data = pl.DataFrame({"id": range(30), "label": ["cat", "dog", "fox"] * 10, "w": [0.5] * 30, "v": [[1.0, 2.0]] * 30})
    source = pl.DataFrame({"id": range(100, 110), "w": range(10), "v": [[1, 2]] * 10})
    added = build(mode="dilute", alpha=1).apply(data, source=source).filter(pl.col("is_noisy"))
    assert added.schema["w"] == pl.Float64 and sorted(added["w"].unique().to_list()) == [float(i) for i in range(10)]
    with pytest.raises(InputDataError, match=r"column 'v' is List\(String\) \(vectors of text\), but the data's is "
                                             r"List\(Float64\) \(vectors of floats\)"):
        build(mode="dilute", alpha=1).apply(data, source=source.with_columns(v=pl.lit(["a", "b"])))


@pytest.mark.parametrize(("params", "param", "message"), [
    ({"mode": "flip", "rate": {"cat": 0.2, "cow": 0.1}}, "rate", "names unknown class 'cow'"),
    ({"mode": "flip", "noise": "mapping", "rate": 0.2, "mapping": {"cat": "cow"}}, "mapping", "unknown class 'cow'"),
    ({"mode": "dilute", "noise": "structured", "confusion": {"cow": "cat"}}, "confusion", "unknown class 'cow'"),
    ({"mode": "flip", "noise": "matrix", "matrix": [[1.0, 0.0], [0.0, 1.0]]}, "matrix", "is 2 x 2 but there are 3"),
    ({"mode": "dilute", "noise": "structured", "confusion": [[0.0, 1.0], [1.0, 0.0]]}, "confusion", "is 2 x 2"),
])
def test_params_that_do_not_fit_the_datas_classes_name_its_file(tmp_path, params, param, message):
    # The classes come from the data's labels here (no `classes`): the refusal named the parameter, not the file.
    from cli_failures import fails_cleanly

    pl.DataFrame({"id": range(30), "label": ["cat", "dog", "fox"] * 10}).write_parquet(tmp_path / "d.parquet")
    with pytest.raises(ParamError, match=message) as err:
        build(**params).apply(pl.read_parquet(tmp_path / "d.parquet"))
    assert err.value.param == param and err.value.file == "input 'data'"
    if param == "rate":
        fails_cleanly(tmp_path, f"""
name: bad
steps:
  - id: noisy
    stage: label_noise
    inputs: {tmp_path / 'd.parquet'}
    params: {{mode: flip, rate: {{cat: 0.2, cow: 0.1}}}}
""", f"parameter 'rate', file '{tmp_path / 'd.parquet'}': names unknown class 'cow'", "list the classes")


def test_source_refusals_name_the_source():
    data = pl.DataFrame({"id": range(30), "label": ["cat", "dog", "fox"] * 10, "feat": [[0.0, 1.0, 2.0]] * 30})
    short = pl.DataFrame({"id": range(100, 110), "feat": [[0.0, 1.0]] * 10})
    with pytest.raises(InputDataError, match="'feat' vectors in 'source' have 2 values") as err:
        build(mode="dilute", noise="structured", feature_column="feat").apply(data, source=short)
    assert err.value.file == "input 'source'"
    text_ids = pl.DataFrame({"id": [f"s{i}" for i in range(10)], "feat": [[0.0, 1.0, 2.0]] * 10})
    with pytest.raises(InputDataError, match="ids of input 'source' \\(String\\) do not convert") as err:
        build(mode="dilute").apply(data, source=text_ids)
    assert err.value.file == "input 'source'"
