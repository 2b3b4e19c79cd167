"""label_noise_curve: the Rolnick-style study on a tiny grid, through the library and through a config."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.runner import run_pipeline
from stages.labelled_corpora import SklearnDigits
from stages.studies import PLOT_NAME, LabelNoiseCurve, digits_example


@pytest.fixture(scope="module")
def few_digits() -> pl.DataFrame:
    """Four digit classes, 400 images: enough to learn, small enough for a fast grid."""
    return SklearnDigits().apply().filter(pl.col("label") < 4).head(400)


def test_curve_table_and_plot(few_digits, tmp_path):
    stage = LabelNoiseCurve(alphas=[0, 10], noises=["uniform", "structured"], delta=1.0, title="four digits")
    result = stage.execute(few_digits, seed=1, workdir=tmp_path)
    table = result.table
    assert table.height == 4
    assert set(table["noise"]) == {"uniform", "structured"}
    clean = table.filter(pl.col("alpha") == 0)["accuracy"]
    assert (clean > 0.9).all()  # four well-separated digits
    # delta = 1: every noisy label of a class is its one confusing class, ten per clean label.
    collapsed = table.filter((pl.col("noise") == "structured") & (pl.col("alpha") == 10))["accuracy"][0]
    assert collapsed < table["chance_majority"][0]
    noisy_rows = table.filter(pl.col("alpha") == 10)["train_rows"]
    assert (noisy_rows == 11 * table["train_clean_rows"][0]).all()
    assert table["chance_uniform"][0] == pytest.approx(0.25)
    plot = tmp_path / PLOT_NAME
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.stats["plot"] == PLOT_NAME
    assert set(result.stats["accuracy"]) == {"uniform@0", "uniform@10", "structured@0", "structured@10"}


def test_the_default_title_names_the_input_not_its_path(few_digits, tmp_path, monkeypatch):
    # The whole path ran off both ends of the plot's title (and the plot's bytes depended on the workdir).
    path = tmp_path / "a_long_folder_of_experiments" / "another_level" / "digits.parquet"
    path.parent.mkdir(parents=True)
    few_digits.write_parquet(path)
    titles = []
    monkeypatch.setattr(LabelNoiseCurve, "_plot", lambda self, result, where, title: titles.append(title))
    LabelNoiseCurve(alphas=[0], noises=["uniform"]).execute(Dataset.from_parquet(path), seed=1)
    assert titles == ["digits.parquet: 4 classes, 320 clean training rows"]


def test_text_features_use_tfidf(tmp_path):
    pytest.importorskip("sklearn")
    from stages.labelled_corpora import Fortunes, fortunes_installed

    if not fortunes_installed():
        pytest.skip("needs the Debian fortunes: apt-get install fortunes fortunes-min")
    corpus = Fortunes(categories=["computers", "food", "sports"], max_per_category=60).apply()
    table = LabelNoiseCurve(alphas=[0, 1], noises=["uniform"]).apply(corpus, seed=0)
    assert table["features"].unique().to_list() == ["tfidf"]
    assert (table["accuracy"] > table["chance_majority"]).all()


def test_bad_params_name_the_parameter():
    for params, param in [({"alphas": [0, -1]}, "alphas"), ({"alphas": [1e9]}, "alphas"),
                          ({"test_fraction": 1.0}, "test_fraction"),
                          ({"repeats": 0}, "repeats"), ({"noises": []}, "noises")]:
        with pytest.raises(ParamError) as err:
            LabelNoiseCurve.from_params(params)
        assert err.value.param == param


def test_study_config_runs_end_to_end(tmp_path):
    config = {
        "name": "tiny_noise_study",
        "seed": 3,
        "steps": [
            {"id": "digits", "stage": "sklearn_digits", "params": {"limit": 300}},
            {"id": "curve", "stage": "label_noise_curve", "inputs": "digits",
             "params": {"alphas": [0, 2], "noises": ["uniform"]}},
            {"id": "flip", "stage": "label_noise", "inputs": {"data": "digits"},
             "params": {"mode": "flip", "noise": "pairflip", "rate": 0.2}},
            {"id": "dilute", "stage": "label_noise", "inputs": {"data": "digits", "source": "digits"},
             "params": {"mode": "dilute", "alpha": 0.5}},
        ],
    }
    report = run_pipeline(config, workdir=tmp_path)
    run_dir = tmp_path / "tiny_noise_study"
    assert (run_dir / "curve" / PLOT_NAME).exists()
    manifest = json.loads((run_dir / "flip" / "_manifest.json").read_text())
    record = manifest["stats"]["label_noise"]
    assert record["requested_noise_rate"] == pytest.approx(0.2, abs=0.01)
    assert record["realised_noise_rate"] == pytest.approx(0.2, abs=0.01)
    transitions = pl.read_parquet(run_dir / "flip@transitions" / "part-*.parquet")
    assert transitions["count"].sum() == 300
    flipped = pl.read_parquet(run_dir / "flip" / "part-*.parquet")
    assert np.array_equal(np.sort(flipped["id"].to_numpy()), np.arange(300))
    diluted = pl.read_parquet(run_dir / "dilute" / "part-*.parquet")
    assert diluted.height == 450
    # Streamed from Parquet, the dilute step writes its transition counts once the last batch is out.
    dilute_manifest = json.loads((run_dir / "dilute" / "_manifest.json").read_text())
    assert dilute_manifest["stats"]["label_noise"]["added_rows_realised"] == 150
    counts = pl.read_parquet(run_dir / "dilute@transitions" / "part-*.parquet")
    assert counts["count"].sum() == 450
    # Same seed, same params: the second run is served from the cache.
    again = run_pipeline(config, workdir=tmp_path)
    assert set(again.cached) == {"digits", "curve", "flip", "dilute"}
    assert report.ran


def test_nan_or_inf_features_are_refused_in_one_line(tmp_path):
    # A NaN reached scikit-learn, which failed with a paragraph and exit 1 (as if a bug).
    from cli_failures import digits_with_nonfinite_pixels, fails_cleanly

    path = digits_with_nonfinite_pixels(tmp_path / "bad.parquet", (5, 3, float("nan")), (77, 0, float("inf")))
    proc = fails_cleanly(tmp_path, f"""
name: bad
steps:
  - id: c
    stage: label_noise_curve
    inputs: {path}
    params: {{alphas: [0, 1], noises: [uniform]}}
""", "step 'c' (stage 'label_noise_curve'), parameter 'features'", f"file '{path}'",
                         "column 'pixels' has NaN or infinite values in 2 vector(s)")
    assert len(proc.stderr.strip().splitlines()) == 1


def _label_at_five(value, dtype):
    """The label of the row with id 5 replaced by `value`, the column cast to `dtype`."""
    return lambda t: t.with_columns(pl.when(pl.col("id") == 5).then(value).otherwise(pl.col("label"))
                                    .cast(dtype).alias("label"))


def _one_nine(t: pl.DataFrame) -> pl.DataFrame:
    return pl.concat([t, t.head(1).with_columns(pl.lit(9, t["label"].dtype).alias("label"),
                                                pl.lit(999, t["id"].dtype).alias("id"))])


def _two_of_each(t: pl.DataFrame) -> pl.DataFrame:
    return t.group_by("label", maintain_order=True).head(2)


@pytest.mark.parametrize(("bad", "param", "expected"), [
    (_label_at_five(None, pl.Int64), "label_column", "column 'label' has 1 null labels; every row needs a label"),
    (_label_at_five(float("nan"), pl.Float64), "label_column",
     "column 'label' (named by parameter 'label_column') is Float64, not integer or string class labels"),
    (lambda t: t.with_columns(pl.col("label").cast(pl.String).cast(pl.Categorical)), "label_column",
     "column 'label' (named by parameter 'label_column') is Categorical, not integer or string class labels"),
    (_one_nine, "label_column", "column 'label' has 1 class(es) with a single row (e.g. 9); a stratified split"),
    (lambda t: t.filter(pl.col("label") == 0), "label_column", "column 'label' has a single class [0]"),
    (_two_of_each, "test_fraction", "test_fraction 0.2 of 6 rows holds out 2 and keeps 4; a stratified split "
                                    "needs a row of each of the 3 classes"),
    (lambda t: t.with_columns(pl.when(pl.col("id") == 5).then(4).otherwise(pl.col("id")).alias("id")), "id_column",
     "duplicate"),
    (lambda t: t.with_columns(pl.lit(False).alias("is_noisy")), None, "input already has column 'is_noisy'"),
], ids=["null", "nan", "categorical", "single-row class", "single class", "too few rows", "repeated id",
        "noise column"])
def test_bad_inputs_are_refused_before_the_split_naming_parameter_and_file(tmp_path, bad, param, expected):
    # Each reached scikit-learn's train_test_split (a traceback), or label_noise after the split, naming its own
    # in-memory table as the file (and, for repeated ids, advising id_column: null, which this stage does not take).
    path = tmp_path / "bad.parquet"
    bad(digits_example(90)).write_parquet(path)
    with pytest.raises(InputDataError) as err:
        LabelNoiseCurve(alphas=[0], noises=["uniform"]).execute(Dataset.from_parquet(path))
    assert (err.value.param, err.value.file) == (param, str(path))
    assert expected in err.value.message and "id_column: null" not in str(err.value)


def _text_column(values):
    """digits_example(90) with its pixels replaced by a `text` column of `values` (what features: auto picks)."""
    return lambda t: t.drop("pixels").with_columns(values.alias("text"))


@pytest.mark.parametrize(("bad", "expected"), [
    (_text_column(pl.col("id")), "column 'text' (picked by features: auto as the text column) is Int64, not text"),
    (_text_column(pl.col("id").cast(pl.String).str.split("")),
     "column 'text' (picked by features: auto as the first vector column) is List(String), not text"),
    (_text_column(pl.lit(None)), "column 'text' (picked by features: auto as the text column) holds only nulls"),
    (_text_column(pl.lit(None, pl.String)), "column 'text' has 90 null texts; a study cannot train on a missing"),
    (_text_column(pl.lit(" ")), "column 'text' holds no words (all 90 rows blank)"),
    # No word of 2+ characters in 2 training texts: scikit-learn's "After pruning, no terms remain" (exit 1).
    (_text_column(pl.format("{} z", pl.col("id"))), "column 'text' gives TF-IDF no term: a term is a word of 2 or"),
], ids=["int", "list of strings", "null type", "null strings", "blank strings", "no shared word"])
def test_a_feature_column_of_neither_text_nor_vectors_is_refused_naming_column_and_file(tmp_path, bad, expected):
    # An integer text column trained as a 1-wide vector (exit 0); a list of words failed converting 'alpha' to a
    # float; null texts failed inside TF-IDF ('NoneType' object has no attribute 'lower'), blank ones with "empty
    # vocabulary".
    path = tmp_path / "bad.parquet"
    bad(digits_example(90)).write_parquet(path)
    with pytest.raises(InputDataError) as err:
        LabelNoiseCurve(alphas=[0], noises=["uniform"]).execute(Dataset.from_parquet(path))
    assert (err.value.param, err.value.file) == ("features", str(path))
    assert expected in err.value.message, err.value.message


@pytest.mark.parametrize("stage", ["curve", "nets"])
def test_centroid_confusion_on_text_is_refused_naming_confusion_and_the_file(tmp_path, stage):
    # The inner label_noise step refused it mid-run as its own parameter 'feature_column' of input 'data', names
    # the user never wrote (label_noise_study.yaml with --set fortunes_curve.confusion=centroid).
    from stages.label_noise_nets import LabelNoiseNets

    path = tmp_path / "text.parquet"
    _text_column(pl.format("document {} of words", pl.col("id")))(digits_example(90)).write_parquet(path)
    common = {"alphas": [0], "noises": ["structured"], "confusion": "centroid"}
    made = LabelNoiseCurve(**common) if stage == "curve" else LabelNoiseNets(
        models=["bag_of_embeddings"], seeds=1, examples=200, batch_sizes=[32], batch_alphas=[0], clean_fractions=[1.0],
        **common)
    with pytest.raises(InputDataError, match="confusion 'centroid' takes class centroids of numeric vectors, but "
                                             "the feature column 'text' holds text; set confusion: derangement") as err:
        made.execute(Dataset.from_parquet(path))
    assert (err.value.param, err.value.file) == ("confusion", str(path))


def test_a_feature_column_of_the_wrong_kind_is_refused_by_validate(tmp_path):
    from cli_failures import refused_by_validate

    path = tmp_path / "ints.parquet"
    _text_column(pl.col("id"))(digits_example(90)).write_parquet(path)
    message = refused_by_validate(tmp_path / "c.yaml", f"""
name: kinds
steps:
  - id: curve
    stage: label_noise_curve
    inputs: {path}
    params: {{features: text}}
""")
    assert "parameter 'features'" in message and "input 'data' column 'text' (named by parameter 'features') is " \
           "Int64, not text (a String, Categorical or Enum column) or numeric vectors" in message, message


def test_features_auto_at_validate_stops_at_a_column_of_undeclared_type():
    # An undeclared column (type None) before any vector column may be the first vector column when the step
    # runs: validate went past it and refused the List(String) after it.
    from stages.studies import feature_column

    schema = {"id": pl.Int64, "label": pl.Int64, "vec": None, "text": pl.List(pl.String)}
    assert feature_column(schema, "auto", ("label", "id"), None, required=False) is None
    with pytest.raises(InputDataError, match="picked by features: auto as the first vector column"):
        feature_column(schema | {"vec": pl.List(pl.String)}, "auto", ("label", "id"), None, required=False)


@pytest.mark.parametrize("stage", ["label_noise_curve", "label_noise_nets"])
@pytest.mark.parametrize("column", ["label_column", "id_column"])
def test_features_naming_the_label_or_id_column_is_refused_by_validate(tmp_path, stage, column):
    # features: label trained label_noise_curve on its labels (accuracy 1, exit 0); label_noise_nets failed in
    # polars with DuplicateError.
    from cli_failures import refused_by_validate

    name = {"label_column": "label", "id_column": "id"}[column]
    message = refused_by_validate(tmp_path / "c.yaml", f"""
name: leak
steps:
  - id: digits
    stage: sklearn_digits
  - id: study
    stage: {stage}
    inputs: digits
    params: {{features: {name}}}
""")
    assert f"step 'study' (stage '{stage}'), parameter 'features'" in message
    assert f"names the {column} '{name}'; a study trains on an input column beside its labels" in message, message


def _topic_texts(rows: int = 90) -> pl.DataFrame:
    """Three topics of documents, each with its own words: text a study learns from in a tiny grid."""
    words = {0: "apple pear plum fig", 1: "goal ball pitch team", 2: "disk byte code loop"}
    label = np.arange(rows) % 3
    return pl.DataFrame({"id": np.arange(rows), "label": label,
                         "text": [f"{words[c]} {words[c].split()[i % 4]} doc" for i, c in enumerate(label)]})


@pytest.mark.parametrize("dtype", [pl.Categorical, "enum"])
def test_a_categorical_text_column_is_studied_as_the_strings_it_holds(tmp_path, dtype):
    # Every other text stage reads Categorical (and Enum) text as strings; the studies refused it ("is Categorical,
    # not text") at validate time and when run.
    from stages.label_noise_nets import LabelNoiseNets
    from stages.studies import feature_column

    strings = _topic_texts()
    dtype = pl.Enum(strings["text"].unique().sort()) if dtype == "enum" else dtype
    path = tmp_path / "categorical.parquet"
    strings.with_columns(pl.col("text").cast(dtype)).write_parquet(path)
    data = Dataset.from_parquet(path)
    assert feature_column(data.lazy().collect_schema(), "auto", ("label", "id"), None, required=False) == "text"
    curve = LabelNoiseCurve(alphas=[0, 1], noises=["uniform", "structured"])
    assert curve.execute(data, seed=2).table.equals(curve.apply(strings, seed=2))
    nets = LabelNoiseNets(models=["bag_of_embeddings"], alphas=[0], noises=["uniform"], batch_sizes=[32],
                          batch_alphas=[0], clean_fractions=[1.0], examples=500, seeds=1)
    assert nets.execute(data, seed=2, workdir=tmp_path / "n").table.equals(
        nets.execute(strings, seed=2, workdir=tmp_path / "s").table)


@pytest.mark.parametrize("dtype", [pl.Categorical, "enum"])
@pytest.mark.parametrize("stage", ["label_noise", "label_noise_curve", "label_noise_nets"])
def test_a_categorical_label_column_is_refused_alike_when_no_schema_was_checked(tmp_path, stage, dtype):
    # Where no schema is known before the run (an upstream step that does not declare the column), the studies split
    # first and failed inside their label_noise call, naming stage label_noise and its in-memory table, not the
    # file; label_noise itself said it in other words than the schema check all three stages share.
    from pipeline.stage import Context
    from stages.label_noise_nets import LabelNoiseNets
    from stages.noise import LabelNoise

    table = digits_example(90).with_columns(pl.col("label").cast(pl.String))
    dtype = pl.Enum(["2", "0", "1"]) if dtype == "enum" else dtype
    path = tmp_path / "labels.parquet"
    table.with_columns(pl.col("label").cast(dtype)).write_parquet(path)
    built = {"label_noise": LabelNoise(mode="flip", rate=0.2),
             "label_noise_curve": LabelNoiseCurve(alphas=[0], noises=["uniform"]),
             "label_noise_nets": LabelNoiseNets(models=["logistic"], alphas=[0], noises=["uniform"], batch_sizes=[],
                                                batch_alphas=[], clean_fractions=[], examples=100, seeds=1)}[stage]
    data = Dataset.from_parquet(path)
    with pytest.raises(InputDataError) as err:  # the engine's run-time order, without its schema check
        built.check_input_data({"data": data})
        built.run(Context(step_id="s", seed=0, out_dir=tmp_path), data)
    assert (err.value.param, err.value.file, err.value.stage) == ("label_column", str(path), None)
    assert err.value.message == (f"input 'data' column 'label' (named by parameter 'label_column') is {dtype}, not "
                                 "integer or string class labels; cast it to integers or strings first")
