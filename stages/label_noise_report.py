"""The report of `label_noise_nets`: plots, tables and a written verdict on each of Rolnick et al.'s findings.

The verdicts are computed from the run's own table, never written in advance: each names the figures
it rests on, so a reader can check it against the plots. The page is one self-contained HTML file
(jinja2, matplotlib PNGs inlined).
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import polars as pl

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.45}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{max-width:100%}
.finding{margin:.5em 0;padding:.5em .8em;border-left:4px solid #999;background:#fafafa}
.holds{border-color:#2a7}.fails{border-color:#c33}.mixed{border-color:#d90}
pre{background:#f6f6f6;padding:.8em;font-size:.8em;overflow-x:auto}
</style></head><body>
<h1>{{ title }}</h1>
<p>Rolnick et al. (2017), "Deep Learning is Robust to Massive Label Noise": each clean training example is
joined by alpha noisy copies (<code>label_noise</code>, mode dilute). Networks are trained by minibatch SGD
for a fixed budget of {{ examples }} examples seen (cosine learning-rate decay); the weights kept are those
with the lowest loss on a <em>noisy</em> validation split (held-out training rows diluted the same way), so
no clean label is used to stop training. Accuracy is measured on a clean held-out test split. {{ seeds }} seed(s); bands span
the seeds (min to max), lines are means.</p>
<h2>Findings</h2>
{% for f in findings %}<div class="finding {{ f.verdict }}"><b>{{ f.name }}</b> ({{ f.verdict_text }}):
{{ f.text }}</div>{% endfor %}
<h2>Accuracy against alpha</h2><img src="data:image/png;base64,{{ plots.alpha }}">
{{ tables.alpha }}
{% if plots.batch %}<h2>Batch size (learning rate scaled linearly)</h2><img src="data:image/png;base64,{{ plots.batch }}">
{{ tables.batch }}{% endif %}
{% if plots.clean %}<h2>Clean training-set size</h2><img src="data:image/png;base64,{{ plots.clean }}">
{{ tables.clean }}{% endif %}
{% if plots.transitions %}<h2>Realised noise (structured, alpha = {{ max_alpha }})</h2>
<p>Share of each clean class's rows (clean and added) that carry each label, as <code>label_noise</code>
wrote them (side output <code>transitions</code>).</p>
<img src="data:image/png;base64,{{ plots.transitions }}">{% endif %}
<h2>Configuration</h2><pre>{{ config }}</pre>
</body></html>
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _summary(frame: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    return (frame.group_by(by).agg(pl.col("accuracy").mean().alias("mean"), pl.col("accuracy").min().alias("lo"),
                                   pl.col("accuracy").max().alias("hi"), pl.len().alias("seeds")).sort(by))


def _html_table(frame: pl.DataFrame) -> str:
    head = "".join(f"<th>{c}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in frame.iter_rows())
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _axes(title: str, xlabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("clean test accuracy (higher is better)")
    ax.grid(alpha=0.3)
    return fig, ax


def _alpha_axis(ax: Any, alphas: list[float]) -> None:
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(alphas)
    ax.set_xticklabels([f"{a:g}" for a in alphas])
    ax.set_ylim(0, 1.02)


def _plot_curves(ax: Any, summary: pl.DataFrame, key: str, label_of, style_of) -> None:
    for value in summary[key].unique(maintain_order=True).to_list():
        part = summary.filter(pl.col(key) == value).sort("alpha")
        color, dash = style_of(value)
        ax.plot(part["alpha"], part["mean"], marker="o", ms=3, color=color, linestyle=dash, label=label_of(value))
        ax.fill_between(part["alpha"], part["lo"], part["hi"], color=color, alpha=0.15)


def write_report(result: pl.DataFrame, transitions: pl.DataFrame | None, stage: Any, ctx: Any,
                 title: str) -> dict[str, Any]:
    """Write report.html beside the step's table; return the headline figures for the manifest."""
    import jinja2

    main = result.filter((pl.col("clean_fraction") == 1.0) & (pl.col("batch_size") == stage.batch_size))
    chance = float(result["chance_majority"].mean())
    alphas = sorted(main["alpha"].unique().to_list())
    plots: dict[str, str | None] = {}
    tables: dict[str, str] = {}

    by_model = _summary(main, ["model", "noise", "alpha"]).with_columns(
        (pl.col("model") + " / " + pl.col("noise")).alias("curve"))
    palette = dict(zip(stage.models, ["tab:blue", "tab:green", "tab:purple", "tab:gray"]))
    fig, ax = _axes(f"{title}: accuracy against alpha", "alpha: noisy examples added per clean example")
    _plot_curves(ax, by_model, "curve", lambda c: c,
                 lambda c: (palette.get(c.split(" / ")[0], "tab:gray"), "-" if c.endswith("uniform") else "--"))
    ax.axhline(chance, color="black", linestyle=":", linewidth=1, label=f"chance ({chance:.2f})")
    _alpha_axis(ax, alphas)
    ax.legend(fontsize=8, loc="lower left")
    plots["alpha"] = _png(fig)
    tables["alpha"] = _html_table(by_model.drop("curve"))

    neural = [m for m in stage.models if m != "logistic"]
    batch = result.filter(pl.col("model").is_in(neural[:1]) & (pl.col("noise") == "uniform")
                          & (pl.col("clean_fraction") == 1.0) & pl.col("alpha").is_in([float(a) for a in stage.batch_alphas])
                          & pl.col("batch_size").is_in(stage.batch_sizes))
    batch_summary = _summary(batch, ["alpha", "batch_size"]) if batch.height else None
    plots["batch"] = _plot_batch(batch_summary, title) if batch_summary is not None else None
    if batch_summary is not None:
        tables["batch"] = _html_table(batch_summary)

    clean = result.filter(pl.col("model").is_in(neural[:1]) & (pl.col("noise") == "uniform")
                          & (pl.col("batch_size") == stage.batch_size))
    clean_summary = _summary(clean, ["train_clean_rows", "alpha"]) if neural else None
    if clean_summary is not None and clean_summary["train_clean_rows"].n_unique() > 1:
        fig, ax = _axes(f"{title}: clean training-set size ({neural[0]}, uniform noise)",
                        "alpha: noisy examples added per clean example")
        sizes = sorted(clean_summary["train_clean_rows"].unique().to_list())
        colors = dict(zip(sizes, ["tab:orange", "tab:red", "tab:brown", "tab:pink"]))
        _plot_curves(ax, clean_summary, "train_clean_rows", lambda s: f"{s} clean rows",
                     lambda s: (colors.get(s, "tab:gray"), "-"))
        _alpha_axis(ax, alphas)
        ax.legend(fontsize=8, loc="lower left")
        plots["clean"] = _png(fig)
        tables["clean"] = _html_table(_robust_alpha(clean_summary, stage.robust_fraction))
    else:
        plots["clean"] = None
    plots["transitions"] = _plot_transitions(transitions) if transitions is not None else None

    findings, figures = _findings(main, batch_summary, clean_summary, stage, chance)
    page = jinja2.Environment(autoescape=jinja2.select_autoescape(default=True)).from_string(PAGE)
    params = {"seed": ctx.seed, "stage": stage.name, "params": stage.get_params()}
    html = page.render(title=title, examples=stage.examples, seeds=stage.seeds, findings=findings,
                       plots=plots, tables={k: jinja2.utils.markupsafe.Markup(v) for k, v in tables.items()},
                       max_alpha=f"{max(stage.alphas):g}", config=json.dumps(params, indent=2, default=str))
    ctx.artefact_path("report.html").write_text(html, encoding="utf-8")
    figures["report"] = "report.html"
    return figures


def _plot_batch(summary: pl.DataFrame, title: str) -> str:
    fig, ax = _axes(f"{title}: batch size at fixed alpha (uniform noise)", "batch size (learning rate scaled with it)")
    for i, alpha in enumerate(summary["alpha"].unique().sort().to_list()):
        part = summary.filter(pl.col("alpha") == alpha).sort("batch_size")
        color = ["tab:blue", "tab:red", "tab:green", "tab:purple"][i % 4]
        ax.plot(part["batch_size"], part["mean"], marker="o", color=color, label=f"alpha = {alpha:g}")
        ax.fill_between(part["batch_size"], part["lo"], part["hi"], color=color, alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    return _png(fig)


def _plot_transitions(transitions: pl.DataFrame) -> str:
    import matplotlib.pyplot as plt

    clean = transitions.filter(pl.col("clean_label").is_not_null())
    classes = clean["clean_label"].unique(maintain_order=True).to_list()
    k = len(classes)
    counts = clean["count"].to_numpy().reshape(k, k).astype(np.float64)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    image = ax.imshow(share, cmap="viridis", vmin=0)
    ax.set_xticks(range(k), [str(c) for c in classes], fontsize=7)
    ax.set_yticks(range(k), [str(c) for c in classes], fontsize=7)
    ax.set_xlabel("label written")
    ax.set_ylabel("clean class")
    fig.colorbar(image, ax=ax, label="share of the class's rows")
    return _png(fig)


def _robust_alpha(summary: pl.DataFrame, fraction: float) -> pl.DataFrame:
    """Per clean-set size: the largest alpha whose mean accuracy stays >= fraction x that size's alpha=0 accuracy."""
    rows = []
    for size in sorted(summary["train_clean_rows"].unique().to_list()):
        part = summary.filter(pl.col("train_clean_rows") == size).sort("alpha")
        base = part.filter(pl.col("alpha") == 0)["mean"]
        if base.len() == 0:
            continue
        ok = part.filter(pl.col("mean") >= fraction * base[0])["alpha"]
        # The first alpha that falls below, so a late recovery does not count.
        below = part.filter(pl.col("mean") < fraction * base[0])["alpha"]
        first_below = float(below.min()) if below.len() else None
        rows.append({"train_clean_rows": size, "accuracy_at_alpha_0": round(float(base[0]), 4),
                     "largest_robust_alpha": float(ok.filter(ok < (first_below or np.inf)).max()),
                     "first_alpha_below": first_below})
    return pl.DataFrame(rows)


def _mean(frame: pl.DataFrame, **where: Any) -> float | None:
    part = frame
    for key, value in where.items():
        part = part.filter(pl.col(key) == value)
    return float(part["accuracy"].mean()) if part.height else None


def _findings(main: pl.DataFrame, batch: pl.DataFrame | None, clean: pl.DataFrame | None, stage: Any,
              chance: float) -> tuple[list[dict[str, str]], dict[str, Any]]:
    findings, figures = [], {}
    top = max(stage.alphas)
    neural = [m for m in stage.models if m != "logistic"]
    swept = clean is not None and clean["train_clean_rows"].n_unique() > 1  # the report has a clean-size section
    if "uniform" in stage.noises and neural:  # a finding about networks, not about the logistic baseline alone
        accs = {m: _mean(main, model=m, noise="uniform", alpha=float(top)) for m in stage.models}
        zero = {m: _mean(main, model=m, noise="uniform", alpha=0.0) for m in stage.models}
        figures["uniform_accuracy_at_max_alpha"] = {m: round(a, 4) for m, a in accs.items() if a is not None}
        text = "; ".join(f"{m}: {zero[m]:.3f} at alpha 0, {accs[m]:.3f} at alpha {top:g}"
                         for m in stage.models if accs[m] is not None and zero[m] is not None)
        best = max(neural, key=lambda m: accs[m] or 0) if neural else None
        holds = best is not None and accs[best] is not None and accs[best] >= 0.9
        beats = best is not None and "logistic" in accs and accs["logistic"] is not None \
            and accs[best] > accs["logistic"]
        verdict = "holds" if holds else ("mixed" if beats else "fails")
        findings.append({"name": "Networks stay accurate under uniform noise (paper: MNIST > 90% at alpha 100)",
                         "verdict": verdict, "verdict_text": {"holds": "reproduces", "mixed": "partly",
                                                               "fails": "does not reproduce"}[verdict],
                         "text": text + (f". Best network ({best}) beats the logistic baseline." if beats else ".")
                         + ("" if holds else f" This data set has {int(main['train_clean_rows'].max())} clean "
                            "training rows (MNIST: 60,000)" + ("; the clean-size sweep shows how the alpha a network "
                                                               "tolerates grows with clean data." if swept else "."))})
    if "structured" in stage.noises and stage.delta > 0:
        edge = 1.0 / stage.delta
        model = neural[0] if neural else stage.models[0]
        part = main.filter((pl.col("model") == model) & (pl.col("noise") == "structured"))
        below = part.filter(pl.col("alpha") * stage.delta < 1)["accuracy"].mean()
        above = part.filter(pl.col("alpha") * stage.delta > 1)["accuracy"].mean()
        uniform_above = main.filter((pl.col("model") == model) & (pl.col("noise") == "uniform")
                                    & (pl.col("alpha") * stage.delta > 1))["accuracy"].mean()
        if below is not None and above is not None:
            figures["structured_accuracy_below_above_1_over_delta"] = [round(below, 4), round(above, 4)]
            collapses = above < 0.5 * below and (uniform_above is None or above < uniform_above)
            findings.append({
                "name": f"Structured noise collapses once alpha x delta > 1 (alpha > {edge:g}: the confusing "
                        "class takes the plurality)",
                "verdict": "holds" if collapses else "fails",
                "verdict_text": "reproduces" if collapses else "does not reproduce",
                "text": f"{model}, delta {stage.delta:g}: mean accuracy {below:.3f} for alpha x delta < 1, "
                        f"{above:.3f} above (chance {chance:.3f}; uniform noise at the same alphas: "
                        f"{uniform_above if uniform_above is None else round(uniform_above, 3)})."})
    if batch is not None and batch.height:
        parts, rising = [], []
        for alpha in batch["alpha"].unique().sort().to_list():
            row = batch.filter(pl.col("alpha") == alpha).sort("batch_size")
            means = row["mean"].to_list()
            rising.append(means[-1] > means[0])
            parts.append(f"alpha {alpha:g}: " + ", ".join(f"B={b} {m:.3f}" for b, m in zip(row["batch_size"], means)))
        figures["batch_size_rises"] = rising
        verdict = "holds" if all(rising) else ("mixed" if any(rising) else "fails")
        findings.append({"name": "Larger batches (learning rate scaled) are more robust", "verdict": verdict,
                         "verdict_text": {"holds": "reproduces", "mixed": "partly", "fails": "does not reproduce"}[
                             verdict], "text": "; ".join(parts) + "."})
    if swept:
        table = _robust_alpha(clean, stage.robust_fraction)
        alphas = table["largest_robust_alpha"].to_list()
        grows = all(b >= a for a, b in zip(alphas, alphas[1:])) and alphas[-1] > alphas[0]
        figures["largest_robust_alpha_by_clean_rows"] = dict(zip(map(str, table["train_clean_rows"]), alphas))
        findings.append({
            "name": "More noise needs more clean data", "verdict": "holds" if grows else "fails",
            "verdict_text": "reproduces" if grows else "does not reproduce",
            "text": "largest alpha keeping accuracy >= " + f"{stage.robust_fraction:g} x its alpha-0 value: "
                    + ", ".join(f"{s} clean rows: {a:g}" for s, a in zip(table["train_clean_rows"], alphas)) + "."})
    return findings, figures
