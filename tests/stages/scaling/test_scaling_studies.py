"""The two study configs, run in their quick variants: structure and sanity, never timings."""

from pathlib import Path

import polars as pl
import pytest
from markupsafe import escape

import pipeline
from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from stages.scaling.scaling_curve import ScalingCurve

REPO = Path(__file__).resolve().parents[3]


def read(run: Path, step: str) -> pl.DataFrame:
    """A step's rows, or a side output's ('step/side'), in either run-folder layout."""
    return pipeline.load(run / step).collect()


@pytest.fixture(scope="module")
def manifold_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("runs")
    pipeline.run_pipeline(REPO / "configs" / "data_manifold_scaling_quick.yaml", workdir=workdir)
    return workdir / "data_manifold_scaling_quick"


def test_manifold_study_curve_is_a_real_learning_curve(manifold_run):
    curve = read(manifold_run, "curve").sort("subset_size")
    subsets = read(manifold_run, "subsets@sizes")
    assert curve["subset_size"].to_list() == subsets["subset_size"].to_list() == curve["rows"].to_list()
    # Ten classes: chance accuracy is about 0.1, and an MLP on 640 digits gets far above it.
    assert curve["test_accuracy"][-1] > 0.85 and curve["test_accuracy"][0] > 0.3
    assert curve["test_loss"][-1] < 0.7 * curve["test_loss"][0]
    assert (curve["best_step"] <= curve["steps"]).all() and curve["stopped_by"].is_in(["patience", "max_steps"]).all()
    representation = read(manifold_run, "curve@representation")
    assert representation["representation"].dtype == pl.Array(pl.Float32, 32)


def test_manifold_study_fit_and_dimension_are_consistent(manifold_run):
    fit = read(manifold_run, "fit").row(0, named=True)
    assert 0 < fit["alpha_low"] < fit["alpha"] < fit["alpha_high"] and fit["r2_log"] > 0.9
    dims = read(manifold_run, "input_dimension")
    assert dims["estimator"].to_list() == ["twonn", "mle", "gride"]
    twonn = dims.row(0, named=True)
    # Digits are 64-d pixels on a much lower-dimensional set; every estimator must agree on "a few to ~15".
    assert (dims["dimension"] > 3).all() and (dims["dimension"] < 20).all()
    assert fit["dimension"] == twonn["dimension"] and fit["alpha_4_over_d"] == pytest.approx(4 / twonn["dimension"])
    learned = read(manifold_run, "learned_dimension")
    assert (learned["ambient_dimension"] == 32).all() and (learned["dimension"] < 32).all()


def test_manifold_study_report_has_findings_figures_and_config(manifold_run):
    html = (manifold_run / "report" / "report.html").read_text()
    findings = read(manifold_run, "report")["finding"].to_list()
    assert any("against 4/d" in f for f in findings) and any(f.startswith("Power law") for f in findings)
    for finding in findings:
        assert str(escape(finding)) in html
    assert html.count("data:image/png;base64,") >= 3  # the fit, and both dimension-vs-scale plots
    assert "name: data_manifold_scaling_quick" in html


def test_manifold_study_text_arm_learns_the_package_and_measures_d(manifold_run):
    curve = read(manifold_run, "doc_curve").sort("subset_size")
    classes = read(manifold_run, "docstrings")["label"].n_unique()
    # 11 packages: chance is about 1/11; the largest subset must be far above it and beat the smallest.
    assert classes == 11 and curve["test_accuracy"][-1] > 3 / classes
    assert curve["test_loss"][-1] < curve["test_loss"][0]
    fit = read(manifold_run, "doc_fit").row(0, named=True)
    assert 0 < fit["alpha_low"] <= fit["alpha"] <= fit["alpha_high"]
    dims = read(manifold_run, "doc_input_dimension")
    assert (dims["ambient_dimension"] == 256).all() and ((dims["dimension"] > 2) & (dims["dimension"] < 64)).all()
    assert fit["alpha_4_over_d"] == pytest.approx(4 / dims.filter(pl.col("estimator") == "twonn")["dimension"][0])
    learned = read(manifold_run, "doc_learned_dimension")
    assert (learned["ambient_dimension"] == 32).all()
    html = (manifold_run / "doc_report" / "report.html").read_text()
    assert "against 4/d" in html and "docstring" in html


def test_scaling_curve_writes_the_representation_when_the_smallest_subsets_were_dropped():
    # Subsets 1.. only (D_0 filtered out upstream): the largest was taken to be index height - 1 = 0, which is
    # absent, so the declared side output `representation` was never written.
    params, inputs = ScalingCurve.example()
    data = inputs["data"].filter(pl.col("subset_index") >= 1)
    result = ScalingCurve(**params).execute(data=data, test=inputs["test"], seed=1)
    assert result.table["subset_size"].to_list() == [100]
    representation = result.side_outputs["representation"]  # the test half of the held-out rows
    assert 0 < representation.height < inputs["test"].height
    assert set(representation["id"].to_list()) <= set(inputs["test"]["id"].to_list())
    assert len(representation["representation"][0]) == params["hidden"][-1]


def test_scaling_curve_refuses_bad_params():
    with pytest.raises(ParamError, match="validation_fraction"):
        ScalingCurve.from_params({"validation_fraction": 1.0})
    with pytest.raises(ParamError, match="hidden"):
        ScalingCurve.from_params({"hidden": []})
    with pytest.raises(ParamError, match="models"):
        ScalingCurve.from_params({"models": [[8], []]})
    with pytest.raises(ParamError, match="weight_decay") as info:  # passed validate, then AdamW's ValueError
        ScalingCurve.from_params({"weight_decay": -1})
    assert info.value.param == "weight_decay"


@pytest.mark.parametrize("bad_input", ["data", "test"])
def test_scaling_curve_names_the_input_whose_vectors_are_not_finite(tmp_path, bad_input):
    # A bad test input was reported under the data input's file, with no count. (In process: the CLI's one
    # line, exit 2, for an InputDataError is the engine's, tested with the label-noise curve's NaN refusal.)
    from stages.studies import digits_example

    digits = digits_example()
    pixels = digits.get_column("pixels").to_list()
    pixels[5][3] = float("nan")
    bad = digits.with_columns(pixels=pl.Series(pixels, dtype=pl.List(pl.Float32)))
    frames = {"data": digits.head(120), "test": digits.tail(30)}
    frames[bad_input] = bad.head(120) if bad_input == "data" else bad.slice(0, 30)
    frames["data"] = frames["data"].with_columns(subset_index=pl.lit(0, pl.Int64), subset_size=pl.lit(120, pl.Int64))
    for name, frame in frames.items():
        frame.write_parquet(tmp_path / f"{name}.parquet")
    stage = ScalingCurve(features="pixels", hidden=[4], max_steps=5, eval_every=5)
    with pytest.raises(InputDataError, match=r"column 'pixels' has NaN or infinite values in 1 vector\(s\)") as info:
        stage.execute(data=Dataset.from_parquet(tmp_path / "data.parquet"),
                      test=Dataset.from_parquet(tmp_path / "test.parquet"))
    assert (info.value.param, info.value.file) == ("features", str(tmp_path / f"{bad_input}.parquet"))


def _curve_inputs(tmp_path, data: pl.DataFrame, test: pl.DataFrame) -> dict[str, Dataset]:
    """`data` as one nested subset and `test`, written to Parquet files named after the inputs."""
    data = data.with_columns(subset_index=pl.lit(0, pl.Int64), subset_size=pl.lit(data.height, pl.Int64))
    for name, frame in (("data", data), ("test", test)):
        frame.write_parquet(tmp_path / f"{name}.parquet")
    return {name: Dataset.from_parquet(tmp_path / f"{name}.parquet") for name in ("data", "test")}


def _rows(n: int, width: int, start: int = 0, vectors=pl.Array) -> pl.DataFrame:
    dtype = pl.Array(pl.Float32, width) if vectors is pl.Array else pl.List(pl.Float32)
    return pl.DataFrame({"id": range(start, start + n), "label": [i % 2 for i in range(n)],
                         "pixels": pl.Series([[float(i + j) for j in range(width)] for i in range(n)], dtype=dtype)})


@pytest.mark.parametrize("vectors", [pl.Array, pl.List])
def test_scaling_curve_refuses_test_vectors_of_another_width(tmp_path, vectors):
    # Failed after training as torch's RuntimeError "mat1 and mat2 shapes cannot be multiplied" (exit 1).
    inputs = _curve_inputs(tmp_path, _rows(20, 4, vectors=vectors), _rows(20, 6, 100, vectors=vectors))
    with pytest.raises(InputDataError, match=r"width 6 but input 'data' \(file '.*data.parquet'\) holds width 4") as info:
        ScalingCurve(hidden=[4], max_steps=5, eval_every=5).execute(**inputs)
    assert (info.value.param, info.value.file) == ("features", str(tmp_path / "test.parquet"))


@pytest.mark.parametrize("bad_input, label, expected", [
    ("test", pl.lit("a"), r"input 'test' column 'label' is String but input 'data' .* has Int64 labels"),
    ("test", pl.lit(None, pl.Int64), "input 'test' column 'label' has 20 null labels"),
    ("data", pl.lit(None), "input 'data' column 'label' has 20 null labels"),
    ("test", pl.when(pl.col("id") == 103).then(float("nan")).otherwise(1.0), "column 'label' has 1 NaN values"),
])
def test_scaling_curve_refuses_labels_it_cannot_sort_into_classes(tmp_path, bad_input, label, expected):
    # Mixed int and str labels, or a null one, failed as a TypeError of `sorted` (exit 1); a NaN made classes
    # that sort nowhere.
    frames = {"data": _rows(20, 4), "test": _rows(20, 4, 100)}
    frames[bad_input] = frames[bad_input].with_columns(label=label)
    inputs = _curve_inputs(tmp_path, frames["data"], frames["test"])
    with pytest.raises(InputDataError, match=expected) as info:
        ScalingCurve(hidden=[4], max_steps=5, eval_every=5).execute(**inputs)
    assert (info.value.param, info.value.file) == ("label_column", str(tmp_path / f"{bad_input}.parquet"))


@pytest.mark.parametrize("label", [pl.col("label") == 1, pl.col("label").cast(pl.Float64),
                                   pl.col("label").cast(pl.String).cast(pl.Categorical)])
def test_scaling_curve_still_checks_in_boolean_float_and_categorical_labels(tmp_path, label):
    # The label checks refuse mixed kinds, not these: scaling_curve sorts whatever classes it is given.
    inputs = _curve_inputs(tmp_path, _rows(20, 4).with_columns(label=label), _rows(20, 4, 100).with_columns(label=label))
    ScalingCurve(hidden=[4]).check_input_data(inputs)


def test_scaling_curve_refuses_repeated_held_out_ids(tmp_path):
    # Equal ids all hash to one side of the validation/test split: reported as "too small to split".
    inputs = _curve_inputs(tmp_path, _rows(20, 4), _rows(20, 4, 100).with_columns(id=pl.lit(7, pl.Int64)))
    with pytest.raises(InputDataError, match="input 'test' column 'id' holds duplicate ids") as info:
        ScalingCurve(hidden=[4], max_steps=5, eval_every=5).execute(**inputs)
    assert (info.value.param, info.value.file) == ("id_column", str(tmp_path / "test.parquet"))


@pytest.mark.parametrize("test_rows, expected", [
    (_rows(20, 6, 100), "column 'pixels' holds vectors of width 6 but input 'data' holds width 4"),
    (_rows(20, 4, 100).with_columns(label=pl.lit("a")), "column 'label' is String but input 'data' has Int64 labels"),
])
def test_pipeline_validate_refuses_what_the_two_schemas_show(tmp_path, test_rows, expected):
    # Found only when the step ran (after the steps before it); the Array widths and label types are in the schemas.
    from cli_failures import refused_by_validate

    _curve_inputs(tmp_path, _rows(20, 4), test_rows)
    message = refused_by_validate(tmp_path / "c.yaml", f"""
name: curve
steps:
  - id: curve
    stage: scaling_curve
    inputs: {{data: {tmp_path / 'data.parquet'}, test: {tmp_path / 'test.parquet'}}}
    params: {{hidden: [4]}}
""")
    assert f"input 'test' {expected}" in message and f"file '{tmp_path / 'test.parquet'}'" in message


def test_pipeline_validate_leaves_an_undeclared_label_type_to_the_run():
    # An upstream step that declares a column without its type (label_noise's clean_label) crashed validate
    # ("'NoneType' object has no attribute 'is_numeric'", exit 1) in the first cut of the check above.
    schema = {"id": pl.Int64, "label": None, "pixels": pl.Array(pl.Float32, 4), "subset_index": pl.Int64,
              "subset_size": pl.Int64}
    assert ScalingCurve(hidden=[4]).output_schema({"data": schema, "test": schema | {"label": pl.String}}) is None
