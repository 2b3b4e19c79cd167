"""collapse_report's refusals of bad input: one line, exit 2, the parameter and the file named."""

from __future__ import annotations

import polars as pl
import pytest
from cli_failures import fails_cleanly, refused_by_validate

from pipeline.errors import InputDataError
from stages.collapse_report import CollapseReport


@pytest.fixture
def metrics_file(tmp_path):
    rows = [{"schedule": s, "generation": g, "vocab_size": 1000 - 30 * g, "note": "x", "empty": None}
            for s in ("replace", "accumulate") for g in range(3)]
    path = tmp_path / "metrics.parquet"
    pl.DataFrame(rows).with_columns(pl.col("empty").cast(pl.Float64)).write_parquet(path)
    return path


def config(path, params: str) -> str:
    return f"""
name: bad
steps:
  - id: report
    stage: collapse_report
    inputs: {{metrics: {path}}}
    params: {params}
"""


@pytest.mark.parametrize(("params", "expected"), [
    ("{x: generation, line: generation}", "parameter 'line', file '{cfg}': names column 'generation', which is "
                                          "already named by parameter 'x'"),
    ("{x: schedule}", "set line: null"),
    ("{metrics: [vocab_size, generation]}", "parameter 'metrics', file '{cfg}': names column 'generation'"),
    ("{metrics: [vocab_size, vocab_size]}", "lists column 'vocab_size' twice"),
    ("{line: seed}", "names column 'seed', which keys the replicates"),
])
def test_a_column_in_two_roles_is_refused_by_validate(tmp_path, metrics_file, params, expected):
    # Each failed at run time inside polars (duplicate output name), exit 1.
    cfg = tmp_path / "c.yaml"
    assert expected.format(cfg=cfg) in refused_by_validate(cfg, config(metrics_file, params))


def test_a_text_metric_column_is_refused_by_validate(tmp_path, metrics_file):
    # Failed at run time in a cast to Float64 (exit 1).
    message = refused_by_validate(tmp_path / "c.yaml", config(metrics_file, "{metrics: [vocab_size, note]}"))
    assert f"parameter 'metrics', file '{metrics_file}'" in message and "column 'note'" in message
    assert "is String, not numeric" in message


def test_a_default_metric_of_text_is_refused_naming_the_file(metrics_file):
    table = pl.read_parquet(metrics_file).with_columns(pl.col("vocab_size").cast(pl.String))
    with pytest.raises(InputDataError, match="metric column 'vocab_size' is String, not numeric") as err:
        CollapseReport()._long(table, "m.parquet")
    assert err.value.file == "m.parquet" and err.value.param == "metrics"


def test_all_null_metrics_are_refused_naming_the_file(tmp_path, metrics_file):
    fails_cleanly(tmp_path, config(metrics_file, "{metrics: [empty]}"),
                  f"parameter 'metrics', file '{metrics_file}'", "(empty) has a value in the table (all null or NaN)")
    assert not (tmp_path / "runs" / "bad" / "report").exists()


def test_default_metrics_skip_a_column_of_nulls_and_plot_booleans(metrics_file):
    # A hand-made table's all-null default metric (Null type) was skipped before wave 23 and refused by its first
    # cut ("is Null, not numeric ... leave it out of metrics", to a user who set no metrics).
    table = pl.read_parquet(metrics_file).with_columns(vendi_score=pl.lit(None), tail_mass=pl.col("generation") > 0)
    long, *_ = CollapseReport()._long(table, "m.parquet")
    assert sorted(long["metric"].unique().to_list()) == ["tail_mass", "vocab_size"]


def test_a_default_metric_of_text_is_refused_saying_what_to_set(metrics_file):
    # "... or leave it out of metrics", to a user who set no metrics.
    table = pl.read_parquet(metrics_file).with_columns(pl.col("vocab_size").cast(pl.String),
                                                       tail_mass=pl.col("generation") * 0.1)
    with pytest.raises(InputDataError) as err:
        CollapseReport()._long(table, "m.parquet")
    message = err.value.message
    assert "leave it out of metrics" not in message, message
    assert "one of the standard collapse metrics plotted when metrics is not set" in message
    assert "set metrics to the columns to plot, e.g. metrics: [tail_mass]" in message, message
    # A metric with no value (type Null, or nulls only) is no column to suggest plotting.
    with pytest.raises(InputDataError) as err:
        CollapseReport()._long(table.with_columns(pl.lit(None).alias("js_divergence")), "m.parquet")
    assert "e.g. metrics: [tail_mass]" in err.value.message, err.value.message
    with pytest.raises(InputDataError, match="cast it to a number first or leave it out of metrics"):
        CollapseReport(metrics=["vocab_size", "tail_mass"])._long(table, "m.parquet")


def test_report_text_keeps_the_space_after_the_seed_sentence(metrics_file, tmp_path):
    # The template's line break after {% endif %} was trimmed: "one seed, no bands.Every panel names ...".
    table = pl.read_parquet(metrics_file).select("schedule", "generation", "vocab_size")
    CollapseReport().execute(metrics=table, workdir=tmp_path / "out")
    assert "no bands. Every panel names its metric" in (tmp_path / "out" / "report.html").read_text()


def test_perplexity_is_not_called_worse_when_higher(tmp_path):
    # Collapse lowers perplexity under the generation-0 model (the n-gram study's replace schedule: 10 -> 2.5, a
    # generator repeating generation 0's likeliest text), yet its panels and table said "higher is worse".
    table = pl.DataFrame({"schedule": ["replace"] * 3, "generation": [0, 1, 2], "perplexity_median": [5.0, 10.0, 2.5]})
    ppl = pl.DataFrame({"schedule": ["replace"] * 6, "generation": [0, 0, 1, 1, 2, 2],
                        "perplexity": [4.0, 6.0, 9.0, 11.0, 2.0, 3.0]})
    CollapseReport().execute(metrics=table, perplexity=ppl, workdir=tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    assert "higher is worse" not in html
    assert "held out)</td><td>a departure either way is worse" in html
    # corpus_metrics scores generation 0 leave-one-out; the page said "scored in-sample" (favoured) before.
    assert "scored held out, by the model fit without it" in html and "in-sample" not in html


def test_the_run_summary_leads_with_what_each_schedule_keeps(metrics_file, tmp_path):
    # collapse_report recorded only lists and strings: the end-of-run summary and the run index showed no figure.
    from pipeline.summary import headline

    table = pl.read_parquet(metrics_file).select("schedule", "generation", "vocab_size")
    result = CollapseReport().execute(metrics=table, workdir=tmp_path / "out")
    assert result.stats["vocab_size_last_over_first"] == {"accumulate": 0.94, "replace": 0.94}  # 940 / 1000
    assert headline(result.stats)[0] == "vocab_size_last_over_first {accumulate 0.94, replace 0.94}"


def test_panel_titles_do_not_run_into_each_other(monkeypatch, tmp_path):
    # The perplexity panel's one-line definition (110 characters) overran its column and the vendi_score title
    # beside it in the grid of configs/model_collapse.yaml's report.
    import stages.collapse_report as module

    figures = []
    real_png_bytes = module.png_bytes
    monkeypatch.setattr(module, "png_bytes", lambda fig: figures.append(fig) or real_png_bytes(fig))
    table = pl.DataFrame({"schedule": ["replace"] * 3, "generation": [0, 1, 2], "self_bleu": [0.5, 0.6, 0.7],
                          "vendi_score": [8.0, 5.0, 4.0], "perplexity_median": [22.0, 9.0, 2.5]})
    CollapseReport(metrics=["self_bleu", "vendi_score", "perplexity_median"]).execute(metrics=table,
                                                                                      workdir=tmp_path / "out")
    grid = max(figures, key=lambda fig: len(fig.axes))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(grid)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [ax.title.get_window_extent(renderer) for ax in grid.axes if ax.get_visible()]
    assert len(boxes) == 3
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 <= right.x0, (left, right)


def test_relative_curves_keep_a_metric_that_starts_at_zero(monkeypatch, tmp_path):
    # Under relative: true, js_divergence (0 at generation 0, so no ratio) drew an empty panel with a made-up axis.
    import stages.collapse_report as module

    figures = []
    real_png_bytes = module.png_bytes
    monkeypatch.setattr(module, "png_bytes", lambda fig: figures.append(fig) or real_png_bytes(fig))
    table = pl.DataFrame({"schedule": ["replace"] * 3, "generation": [0, 1, 2], "vocab_size": [100.0, 80.0, 50.0],
                          "js_divergence": [0.0, 0.1, 0.3]})
    CollapseReport(metrics=["vocab_size", "js_divergence"], relative=True).execute(metrics=table,
                                                                                 workdir=tmp_path / "out")
    grid = max(figures, key=lambda fig: len(fig.axes))
    vocab, js = grid.axes[:2]
    assert list(vocab.lines[0].get_ydata()) == [1.0, 0.8, 0.5] and "(/ generation 0)" in vocab.get_title()
    assert list(js.lines[0].get_ydata()) == [0.0, 0.1, 0.3] and "values, not ratios" in js.get_title()
