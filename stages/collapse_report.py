"""The collapse report: corpus metrics across generations as curves with seed bands, and a written summary.

A reader of a collapse study needs, on every panel, what the number is and which way is worse; with
several seeds, the spread (a line is the mean over seeds, the band spans min to max); and in words,
per schedule, what happened by the last generation relative to generation 0. This module draws
that from `corpus_metrics` tables and writes report.html through the shared jinja2 templates.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import numpy as np
import polars as pl

from pipeline.columns import is_numeric
from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.stage import Context, Stage
from stages._report import png_bytes, png_data_uri, render

DEFAULT_PLOT_METRICS = (
    "vocab_size", "tail_mass", "js_divergence", "unigram_entropy_bits", "distinct_2",
    "self_bleu", "vendi_score", "perplexity_median", "reference_vocab_coverage", "duplicate_rate",
    "near_duplicate_rate",
)

PERPLEXITY_DIRECTION = "a departure either way is worse"
# Characters a panel title's line holds at font size 8 in a grid column (4.6 inches) with room to spare.
PANEL_TITLE_CHARS = 62
# name -> (definition, which direction is worse for a collapse study)
METRIC_INFO: dict[str, tuple[str, str]] = {
    "vocab_size": ("distinct words in the corpus", "lower is worse"),
    "tail_mass": ("share of tokens whose word is rare (<= rare_max_count) in generation 0", "lower is worse"),
    "reference_vocab_coverage": ("share of generation 0's vocabulary still used", "lower is worse"),
    "js_divergence": ("Jensen-Shannon divergence of word frequencies from generation 0 (bits)", "higher is worse"),
    "unigram_entropy_bits": ("entropy of the word distribution (bits)", "lower is worse"),
    "distinct_1": ("distinct words / words", "lower is worse"),
    "distinct_2": ("distinct word bigrams / bigrams", "lower is worse"),
    "distinct_3": ("distinct word trigrams / trigrams", "lower is worse"),
    "type_token_ratio": ("distinct words / words", "lower is worse"),
    "self_bleu": ("mean BLEU-4 of each document against the others", "higher is worse"),
    "vendi_score": ("effective number of distinct documents (embeddings)", "lower is worse"),
    "mean_pairwise_distance": ("mean cosine distance between document embeddings", "lower is worse"),
    # Collapse moves perplexity both ways (Shumailov et al.): down as a generator repeats generation 0's likeliest
    # text (300 pydoc paragraphs, replace schedule, median held out: 100 at generation 0, 14 at 1), up as it drifts
    # into text generation 0 would not write (31, then 47). In-sample, generation 0 had read 10 against 2.5.
    "perplexity_median": ("median perplexity under a generation-0 n-gram model (its own documents held out)",
                          PERPLEXITY_DIRECTION),
    "perplexity_mean": ("mean perplexity under a generation-0 n-gram model (its own documents held out)",
                          PERPLEXITY_DIRECTION),
    "duplicate_rate": ("share of documents repeating an earlier one exactly", "higher is worse"),
    "near_duplicate_rate": ("share of documents with a MinHash near-duplicate", "higher is worse"),
    "docs": ("documents", "size, not quality"),
    "tokens": ("words", "size, not quality"),
    "mean_doc_tokens": ("words per document", "shorter is worse"),
}


def describe(metric: str) -> tuple[str, str]:
    return METRIC_INFO.get(metric, (metric, "direction not defined"))


def seed_bands(long: pl.DataFrame, keys: list[str], x: str, column: str) -> pl.DataFrame:
    """Mean, min and max over seeds of `column` per (keys, metric, x); one seed gives a zero-width band."""
    return (long.group_by([*keys, "metric", x])
            .agg(pl.col(column).mean().alias("mean"), pl.col(column).min().alias("lo"),
                 pl.col(column).max().alias("hi"), pl.len().alias("seeds"))
            .sort([*keys, "metric", x]))


def last_over_first(table: pl.DataFrame, line: str | None, x: str) -> dict[Any, dict[str, np.ndarray]]:
    """Per schedule (None: the whole table), per collapse metric: the last generation's value over the first's,
    one ratio per seed."""
    present = [m for m in ("tail_mass", "vocab_size", "reference_vocab_coverage") if m in table.columns]
    if not present or x not in table.columns:
        return {}
    seed = ["seed"] if "seed" in table.columns else []
    out: dict[Any, dict[str, np.ndarray]] = {}
    for value in (table[line].unique().sort().to_list() if line else [None]):
        part = table.filter(pl.col(line) == value) if line else table
        first, last = part[x].min(), part[x].max()
        for metric in present:
            base = part.filter(pl.col(x) == first).select([*seed, pl.col(metric).alias("b")])
            end = part.filter(pl.col(x) == last).select([*seed, pl.col(metric).alias("e")])
            joined = end.join(base, on=seed, how="inner") if seed else pl.concat([end, base], how="horizontal")
            ratio = (joined["e"] / joined["b"]).to_numpy().astype(float)
            ratio = ratio[np.isfinite(ratio)]
            if len(ratio):
                out.setdefault(value, {})[metric] = ratio
    return out


def schedule_summaries(table: pl.DataFrame, line: str | None, x: str) -> list[str]:
    """Per schedule, tail mass and vocabulary at the last generation as a fraction of generation 0."""
    if x not in table.columns:
        return []
    out = []
    for value, ratios in last_over_first(table, line, x).items():
        part = table.filter(pl.col(line) == value) if line else table
        first, last = part[x].min(), part[x].max()
        facts = []
        for metric, ratio in ratios.items():
            spread = f" (seeds {ratio.min():.2f} to {ratio.max():.2f}, n = {len(ratio)})" if len(ratio) > 1 else ""
            facts.append(f"{metric} {ratio.mean():.2f}x of generation {first}{spread}")
        out.append(f"{'all' if value is None else value}: at generation {last}, " + "; ".join(facts) + ".")
    return out


class CollapseReport(Stage):
    """Curves of corpus metrics over generations, one line per schedule with seed bands, as PNGs and report.html.

    The main output is the metrics in long form (schedule, [seed,] generation, metric, value) with
    each value relative to its schedule's (and seed's) generation 0, which the curves show when
    `relative`. With a `seed` column the lines are means over seeds and the bands span min to max.
    Every panel is titled with the metric, its definition and which direction is worse; one legend
    serves the whole figure. Artefacts: curves.png, metric-<name>.png each, corpus-curves.png (the
    training corpora), perplexity.png (per-document perplexity under the generation-0 model, as in
    Shumailov et al.'s figure) and report.html with a written summary per schedule (tail mass and
    vocabulary at the last generation as a fraction of generation 0), the settings and every column.

    Parameters:
        metrics: metric columns to plot (null = the standard collapse set that is present and not empty)
        x: column on the horizontal axis
        line: column that makes one line per value (null = a single line)
        relative: plot each metric divided by its generation-0 value
        title: heading of the report
    """

    name = "collapse_report"
    version = "5"  # 5: panel titles wrapped to their column (a cached report kept the overlapping ones), and under
    # relative: true a metric that is 0 at generation 0 is drawn in its values (its panel was empty);
    # 4: the perplexity text says generation 0 is scored held out (corpus_metrics 4), not in-sample;
    # 3: perplexity is not "higher is worse" (collapse lowers it)
    inputs = ("metrics", "perplexity", "corpus_metrics", "settings")
    optional_inputs = ("perplexity", "corpus_metrics", "settings")

    def __init__(
        self,
        metrics: list[str] | None = None,
        x: str = "generation",
        line: str | None = "schedule",
        relative: bool = False,
        title: str = "Model collapse across generations",
    ):
        self.metrics = metrics
        self.x = x
        self.line = line
        self.relative = relative
        self.title = title

    def output_schema(self, inputs):
        """The metrics in long form: [line], [seed], x, metric, value, relative_to_first (see `_long`)."""
        schema = inputs["metrics"]
        keys = [c for c in (self.line, "seed") if c and c in schema]
        return {**{c: schema[c] for c in keys}, self.x: schema.get(self.x), "metric": pl.String,
                "value": pl.Float64, "relative_to_first": pl.Float64}

    def validate(self) -> None:
        """Each column in one role: `x`, `line`, a metric and the replicate column 'seed' are selected side by side
        into the long table, so a column named twice would be a duplicate there (a polars error at run time)."""
        roles = [("seed", "seed"), ("x", self.x), *([("line", self.line)] if self.line else []),
                 *(("metrics", m) for m in self.metrics or ())]
        seen: dict[str, str] = {}
        for param, column in roles:
            first = seen.get(column)
            if first == param:
                raise ParamError(param, f"lists column '{column}' twice; name each metric once")
            if first is not None:
                where = "keys the replicates" if first == "seed" else f"is already named by parameter '{first}'"
                instead = "name another column" + (" or set line: null" if param == "line" else "")
                raise ParamError(param, f"names column '{column}', which {where}; a column takes one role (x, line "
                                 f"or a metric), so {instead}")
            seen[column] = param

    def required_columns(self):
        cols = {self.x: "x"}
        if self.metrics:
            cols.update({m: "metrics" for m in self.metrics})
        return {"metrics": cols}

    def required_column_types(self):
        """The named metrics are plotted as numbers: a text column is refused from the schema (by `pipeline
        validate` too), not in a cast when the step runs."""
        types = super().required_column_types()
        types.setdefault("metrics", {}).update({m: "numeric" for m in self.metrics or ()})
        return types

    @classmethod
    def example(cls):
        rows = [{"schedule": s, "generation": g, "vocab_size": 1000 - (300 if s == "replace" else 20) * g,
                 "tail_mass": 0.1 / (1 + g * (s == "replace"))} for s in ("replace", "accumulate") for g in range(3)]
        return {}, {"metrics": pl.DataFrame(rows)}

    def run(self, ctx: Context, metrics: Dataset, perplexity: Dataset | None = None,
            corpus_metrics: Dataset | None = None, settings: Dataset | None = None) -> pl.DataFrame:
        from matplotlib.figure import Figure

        table = metrics.collect()
        long, images = self._curves(table, metrics.label, Figure, "curves.png", write_singles=True)
        if corpus_metrics is not None:
            _, corpus_images = self._curves(corpus_metrics.collect(), corpus_metrics.label, Figure,
                                            "corpus-curves.png", write_singles=False)
            images.update(corpus_images)
        if perplexity is not None:
            line = self.line if self.line and self.line in table.columns else None
            images["perplexity.png"] = self._histograms(perplexity.collect(), perplexity.label, line, Figure)
        for name, data in images.items():
            ctx.artefact_path(name).write_bytes(data)
        line = self.line if self.line and self.line in table.columns else None
        summary = schedule_summaries(table, line, self.x)
        html = self._html(ctx, table, images, summary, settings.collect() if settings is not None else None)
        ctx.artefact_path("report.html").write_text(html, encoding="utf-8")
        ctx.record("plotted_metrics", long["metric"].unique(maintain_order=True).to_list())
        ctx.record("summary", summary)
        # The run's summary shows a step's first figures: per schedule, what is left at the last generation.
        ratios = last_over_first(table, line, self.x)
        ctx.lead_with({f"{metric}_last_over_first": {"all" if k is None else str(k): round(float(v[metric].mean()), 3)
                                                     for k, v in ratios.items() if metric in v}
                       for metric in ("vocab_size", "tail_mass") if any(metric in v for v in ratios.values())})
        ctx.record("artefacts", sorted([*images, "report.html"]))
        return long

    def _long(self, table: pl.DataFrame, label: str | None) -> tuple[pl.DataFrame, list[str], list[str], str | None]:
        """The metrics in long form; `label` names the input's file in a refusal."""
        line = self.line if self.line and self.line in table.columns else None
        if self.line and line is None and self.line != "schedule":
            raise InputDataError(f"input 'metrics' has no column '{self.line}'", param="line", file=label)
        keys_in_use = {self.x, line, "seed"}
        candidates = [m for m in (self.metrics or DEFAULT_PLOT_METRICS) if m in table.columns and m not in keys_in_use]
        # Numbers and booleans plot; a column of nulls only (a hand-made table's empty metric) has no value to plot.
        text = [m for m in candidates if not (is_numeric(table.schema[m]) or table.schema[m] in (pl.Boolean, pl.Null))]
        names = [m for m in candidates if m not in text and table[m].cast(pl.Float64).is_not_nan().any()]
        if text:
            what = f"metric column '{text[0]}' is {table.schema[text[0]]}, not numeric; "
            if self.metrics:
                what += "cast it to a number first or leave it out of metrics"
            else:  # the user named no metrics: "leave it out of metrics" meant nothing to them
                what += ("it is one of the standard collapse metrics plotted when metrics is not set: cast it to a "
                         "number first, or set metrics to the columns to plot"
                         + (f", e.g. metrics: [{', '.join(names)}]" if names else ""))
            raise InputDataError(what, param="metrics", file=label)
        if not names:
            raise ParamError("metrics", f"none of the metrics to plot ({', '.join(candidates) or 'none present'}) "
                             f"has a value in the table (all null or NaN); columns: {table.columns}", file=label)
        keys = [line] if line else []
        seed = ["seed"] if "seed" in table.columns else []
        long = (table.select([*keys, *seed, self.x, *[pl.col(m).cast(pl.Float64) for m in names]])
                .unpivot(index=[*keys, *seed, self.x], variable_name="metric", value_name="value")
                .sort([*keys, *seed, "metric", self.x]))
        base = pl.col("value").first().over([*keys, *seed, "metric"], order_by=self.x)
        # A metric that starts at 0 (divergence from generation 0) has no ratio: null, not inf.
        long = long.with_columns(relative_to_first=pl.when(base != 0).then(pl.col("value") / base))
        return long, names, keys, line

    def _curves(self, table: pl.DataFrame, label: str | None, figure_cls, grid_name: str, write_singles: bool):
        """Long-form metrics and the PNGs of their curves (one grid, and one file per metric)."""
        from matplotlib.ticker import MaxNLocator

        long, names, keys, line = self._long(table, label)
        # A metric that is 0 at generation 0 (js_divergence) has no ratio: its panel was empty under relative: true,
        # so it keeps its own values there, and its title says so.
        absolute = set() if not self.relative else set(
            long.group_by("metric").agg(pl.col("relative_to_first").is_null().all().alias("none"))
            .filter("none")["metric"].to_list())
        plotted = pl.when(pl.col("metric").is_in(list(absolute))).then("value").otherwise(
            "relative_to_first" if self.relative else "value").alias("plotted")
        bands = seed_bands(long.with_columns(plotted).drop_nulls("plotted"), keys, self.x, "plotted")
        lines = long[line].unique(maintain_order=True).sort().to_list() if line else [None]
        n_seeds = long["seed"].n_unique() if "seed" in long.columns else 1

        images: dict[str, bytes] = {}
        cols = 3
        rows = (len(names) + cols - 1) // cols
        grid = figure_cls(figsize=(4.6 * cols, 3.5 * rows + 0.6), layout="constrained")
        axes = grid.subplots(rows, cols, squeeze=False).ravel()
        handles: dict[str, object] = {}
        for i, metric in enumerate(names):
            single = figure_cls(figsize=(5.2, 3.8), layout="constrained") if write_singles else None
            for ax in (axes[i], *([single.subplots()] if single is not None else [])):
                for j, value in enumerate(lines):
                    part = bands.filter(pl.col("metric") == metric)
                    if line:
                        part = part.filter(pl.col(line) == value)
                    colour = f"C{j}"
                    xs = part[self.x].to_numpy()
                    (h,) = ax.plot(xs, part["mean"].to_numpy(), marker="o", color=colour, label=str(value))
                    if n_seeds > 1:
                        ax.fill_between(xs, part["lo"].to_numpy(), part["hi"].to_numpy(), color=colour, alpha=0.2,
                                        linewidth=0)
                    handles.setdefault(str(value), h)
                ax.set_title(self._panel_title(metric, metric in absolute), fontsize=8)
                ax.set_xlabel(self.x)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.grid(alpha=0.3)
            if single is not None:
                if line:
                    single.legend(list(handles.values()), list(handles), loc="outside lower center",
                                  ncols=len(handles), fontsize=8)
                images[f"metric-{metric}.png"] = png_bytes(single)
        for ax in axes[len(names):]:
            ax.set_visible(False)
        if line:
            band = f"; lines = mean of {n_seeds} seeds, bands = min to max" if n_seeds > 1 else ""
            grid.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=len(handles),
                        title=f"{line}{band}", fontsize=9)
        grid.suptitle(self.title if write_singles else "Training corpora (what each generation is fit on)")
        images[grid_name] = png_bytes(grid)
        return long, images

    def _panel_title(self, metric: str, absolute: bool = False) -> str:
        """The metric, then its definition and direction wrapped to the panel's width: one long line (the perplexity
        definition, 110 characters) ran into the next panel's title in the three-column grid."""
        definition, worse = describe(metric)
        scale = " (0 at generation 0: values, not ratios)" if absolute else " (/ generation 0)" if self.relative else ""
        return (f"{metric}{scale}\n"
                + textwrap.fill(f"{definition}; {worse}", PANEL_TITLE_CHARS))

    def _histograms(self, ppl: pl.DataFrame, label: str | None, line: str | None, figure_cls) -> bytes:
        if "perplexity" not in ppl.columns or self.x not in ppl.columns:
            raise InputDataError(f"input 'perplexity' needs columns 'perplexity' and '{self.x}'; "
                                 f"it has {ppl.columns}", param="x", file=label)
        panels = ppl[line].unique().sort().to_list() if line and line in ppl.columns else [None]
        fig = figure_cls(figsize=(4.5 * len(panels), 3.6), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False).ravel()
        logp = np.log10(np.maximum(ppl["perplexity"].to_numpy(), 1.0))
        bins = np.linspace(np.nanmin(logp), np.nanpercentile(logp, 99.5), 50)
        gens = ppl[self.x].to_numpy()
        panel_col = ppl[line].to_numpy() if panels != [None] else None
        for ax, panel in zip(axes, panels):
            in_panel = np.ones(len(ppl), bool) if panel_col is None else panel_col == panel
            for k, gen in enumerate(np.unique(gens)):
                sel = in_panel & (gens == gen)  # all seeds pooled
                ax.hist(logp[sel], bins=bins, density=True, histtype="step", color=f"C{k}", label=f"{self.x} {gen}")
            ax.set_title(f"{panel}" if panel is not None else "perplexity", fontsize=9)
            ax.set_xlabel("log10 perplexity under generation-0 model\n(left: its likeliest text repeated; right: drift)")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", fontsize=8)
        return png_bytes(fig)

    def _html(self, ctx: Context, table: pl.DataFrame, images: dict[str, bytes], summary: list[str],
              settings: pl.DataFrame | None) -> str:
        rows = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in table.iter_rows()]
        definitions = [(c, *describe(c)) for c in table.columns if c in METRIC_INFO]
        config = {"report": {"seed": ctx.seed, **self.get_params()}}
        if settings is not None and len(settings):
            row = settings.row(0, named=True)
            config["study"] = {"seed": row.get("seed"), "generator": row.get("generator"),
                               "params": json.loads(row.get("params") or "{}")}
            training = json.loads(row.get("training") or "[]")
        else:
            training = []
        return render("collapse.html.j2", title=self.title, columns=table.columns, rows=rows,
                      images={name: png_data_uri(data) for name, data in images.items()}, summary=summary,
                      definitions=definitions, config=json.dumps(config, indent=2, default=str),
                      training=training, seed=ctx.seed,
                      replicas=int(table["seed"].n_unique()) if "seed" in table.columns else 1)
