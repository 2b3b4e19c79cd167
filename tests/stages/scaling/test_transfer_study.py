"""The transfer study's quick variant: structure and sanity checks, never timings."""

import math
from pathlib import Path

import polars as pl
import pytest

import pipeline
from pipeline.errors import ParamError
from stages.scaling import language_model as lm
from stages.scaling.transfer_curve import TransferCurve

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("runs")
    pipeline.run_pipeline(REPO / "configs" / "transfer_scaling_quick.yaml", workdir=workdir)
    return workdir / "transfer_scaling_quick"


def test_transfer_curves_have_both_regimes_at_every_size(transfer_run):
    curves = pl.read_parquet(transfer_run / "curves" / "part-*.parquet")
    sizes = pl.read_parquet(transfer_run / "subsets@sizes" / "part-*.parquet")["subset_size"].to_list()
    assert curves["params"].n_unique() == 2
    for _, part in curves.group_by("params"):
        assert part.filter(pl.col("regime") == "pretrained").height == 1
        for regime in ("scratch", "finetuned"):
            mine = part.filter(pl.col("regime") == regime).sort("subset_size")
            assert mine["subset_size"].to_list() == sizes
            assert (mine["tokens"].diff().drop_nulls() > 0).all()
        scratch = part.filter(pl.col("regime") == "scratch").sort("subset_size")["test_loss"]
        tuned = part.filter(pl.col("regime") == "finetuned").sort("subset_size")["test_loss"]
        zero_shot = part.filter(pl.col("regime") == "pretrained")["test_loss"][0]
        # A real language model: far below the uniform guess, learning from more data, and helped by
        # pre-training when target data is scarcest.
        assert zero_shot < math.log(500) - 1.0
        assert scratch[-1] < scratch[0] and tuned[0] < scratch[0]


def test_transfer_fit_and_report(transfer_run):
    fit = pl.read_parquet(transfer_run / "fit" / "part-*.parquet").row(0, named=True)
    points = pl.read_parquet(transfer_run / "fit@transfer_points" / "part-*.parquet")
    assert fit["law"] == "transfer" and fit["points"] == points["used"].sum() >= 4
    for name in ("k", "alpha", "beta"):
        assert math.isfinite(fit[name]) and fit[f"{name}_low"] <= fit[f"{name}_high"]
    used = points.filter(pl.col("used"))
    assert (used["D_E"] > used["D_F"]).all() and (used["D_T"] > 0).all()
    html = (transfer_run / "report" / "report.html").read_text()
    assert "Transfer law: D_T = k D_F^alpha N^beta" in html and "name: transfer_scaling_quick" in html
    assert "data:image/png;base64," in html


def test_tokens_contexts_and_bad_params():
    vocab = lm.build_vocabulary([lm.tokenize("def f(x):\n    return x + 1")], 50)
    docs = lm.encode(["def f(y): return y"], vocab)
    x, y = lm.contexts(docs, 2)
    assert x.shape == (docs[0].size, 2) and (x[0] == lm.BOS).all() and (y == docs[0]).all()
    assert docs[0][list(vocab).index("y") if "y" in vocab else 3] >= 0 and lm.UNK in docs[0]
    with pytest.raises(ParamError, match="models"):
        TransferCurve.from_params({"models": [{"embedding": 8}]})


@pytest.mark.parametrize(("param", "value"), [("learning_rate", -1), ("finetune_learning_rate", 0)])
def test_a_learning_rate_not_above_zero_is_refused_by_validate(tmp_path, param, value):
    # -1 failed inside torch's AdamW (exit 1); 0 ran every step and trained nothing.
    from cli_failures import refused_by_validate

    for name, table in TransferCurve.example()[1].items():
        table.write_parquet(tmp_path / f"{name}.parquet")
    message = refused_by_validate(tmp_path / "c.yaml", f"""
name: rate
steps:
  - id: transfer
    stage: transfer_curve
    inputs: {{pretrain: {tmp_path}/pretrain.parquet, data: {tmp_path}/data.parquet, test: {tmp_path}/test.parquet}}
    params: {{{param}: {value}}}
""")
    assert f"parameter '{param}'" in message and f"must be > 0, got {value}" in message, message


def test_duplicate_test_ids_are_refused_naming_input_column_and_file(tmp_path):
    # Ids repeated throughout read as "too few documents (20) to split off a validation set".
    from pipeline.errors import InputDataError
    from pipeline.io import Dataset

    params, inputs = TransferCurve.example()
    path = tmp_path / "test.parquet"
    inputs["test"].with_columns(pl.lit("x").alias("id")).write_parquet(path)
    with pytest.raises(InputDataError) as err:
        TransferCurve(**params).execute(pretrain=inputs["pretrain"], data=inputs["data"],
                                        test=Dataset.from_parquet(path))
    assert (err.value.param, err.value.file) == ("id_column", str(path))
    assert "input 'test' column 'id' holds duplicate ids" in err.value.message
