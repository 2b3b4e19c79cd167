"""Rolnick et al. (2017) with neural networks: accuracy under massive label noise, batch size, clean data.

`label_noise_nets` trains small torch networks by minibatch SGD (see `stages.nets`) on training sets
diluted by `label_noise` (alpha noisy rows per clean row), and measures clean test accuracy over three
sweeps that answer the paper's findings:

- main: accuracy against alpha, per model and per noise kind (uniform, structured with `delta`);
- batch: accuracy against batch size (learning rate scaled linearly) at a few alphas;
- clean: accuracy against alpha for several clean training-set sizes (how much clean data alpha needs).

Every run of a sweep shares the held-out clean test split of its seed; a run that two sweeps need is
trained once. The `logistic` model is a multinomial logistic regression (the earlier study's model)
kept as a baseline. Output: one row per run; side output `transitions` (the realised clean x noisy
counts of the structured run at the largest alpha); artefacts `report.html` and the plots in it.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl

from pipeline.errors import ParamError
from pipeline.io import Dataset
from pipeline.params import Annotated, Field, Fraction, PositiveInt
from pipeline.stage import Context, Stage
from stages._ids import refuse_bad_id_column
from stages.nets import TrainConfig, train_classifier
from stages.noise import LabelNoise, vector_matrix
from stages.noise.params import Alpha, structured_params
from stages.noise.rows import refuse_label_kind, with_label_kind
from stages.studies import (
    _split,
    digits_example,
    feature_column,
    refuse_features_naming,
    refuse_nonfinite_features,
    refuse_null_labels,
    stratified_split,
    study_feature,
    text_as_strings,
)

NEURAL = ("mlp", "convnet", "bag_of_embeddings")


@dataclass(frozen=True)
class Run:
    model: str
    noise: str
    alpha: float
    batch_size: int
    clean_fraction: float
    seed_index: int


@dataclass
class Prepared:
    """One seed's split of the data: feature matrix, class indices, row indices of each part."""

    x: np.ndarray
    y: np.ndarray
    table: pl.DataFrame  # id, label (and the feature column for centroid confusion), in x's row order
    fit: np.ndarray
    val: np.ndarray
    test: np.ndarray
    vocab_size: int


class LabelNoiseNets(Stage):
    """Neural-network label-noise study (Rolnick et al. 2017): alpha, noise kind, batch size, clean size.

    Parameters:
        models: networks to train: 'mlp', 'convnet' (square images), 'bag_of_embeddings' (text), 'logistic' (baseline)
        alphas: noisy rows added per clean row
        noises: noise kinds of the main sweep: 'uniform', 'structured'
        delta: structured noise: probability an added label is the class's confusing class
        confusion: structured noise: 'auto' (centroid for vectors, derangement for text) or any label_noise confusion
        batch_size: minibatch size of the main and clean sweeps (the learning rate `lr` is for this size)
        lr: SGD learning rate at `batch_size`; other batch sizes scale it linearly
        batch_sizes: batch sizes of the batch sweep (first neural model, uniform noise)
        batch_alphas: alphas of the batch sweep
        clean_fractions: fractions of the clean training split for the clean sweep (first neural model, uniform)
        examples: training budget: examples seen per run, whatever alpha and batch size
        seeds: independent repeats (split, noise and initialisation all change)
        test_fraction: clean held-out test fraction (stratified)
        val_fraction: fraction of the training split held out (then diluted like training) for early stopping
        robust_fraction: the clean sweep counts a run as robust when accuracy >= this x its alpha=0 accuracy
        features: the input column: a vector column or a text column; 'auto' picks
        max_tokens: text: tokens kept per document
        label_column: the column holding labels
        id_column: unique row id
    """

    name = "label_noise_nets"
    # 2: the validation split's structured noise uses the training split's confusion; the report's findings name
    # only the sections it has; text features keep combining marks in their words (the text core's WORD_REGEX)
    version = "2"
    requires: ClassVar[tuple[str, ...]] = ("torch", "sklearn", "matplotlib", "jinja2")

    def __init__(
        self,
        models: Annotated[list[Literal["mlp", "convnet", "bag_of_embeddings", "logistic"]],
                          Field(min_length=1)] = ["mlp", "logistic"],  # noqa: B006 - params are stored as given
        alphas: Annotated[list[Alpha], Field(min_length=1)] = [0, 1, 2, 5, 10, 20, 50, 100],  # noqa: B006
        noises: Annotated[list[Literal["uniform", "structured"]], Field(min_length=1)] = ["uniform", "structured"],  # noqa: B006
        delta: Fraction = 0.2,
        confusion: str | dict[Any, Any] | list[list[float]] = "auto",
        batch_size: PositiveInt = 64,
        lr: Annotated[float, Field(gt=0.0)] = 0.05,
        batch_sizes: list[PositiveInt] = [32, 128, 512],  # noqa: B006
        batch_alphas: list[Alpha] = [10, 50],  # noqa: B006
        clean_fractions: list[Annotated[float, Field(gt=0.0, le=1.0)]] = [0.25, 0.5, 1.0],  # noqa: B006
        examples: PositiveInt = 150_000,
        seeds: PositiveInt = 3,
        test_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.2,
        val_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.1,
        robust_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9,
        features: str = "auto",
        max_tokens: PositiveInt = 64,
        label_column: str = "label",
        id_column: str = "id",
    ):
        self.models = models
        self.alphas = alphas
        self.noises = noises
        self.delta = delta
        self.confusion = confusion
        self.batch_size = batch_size
        self.lr = lr
        self.batch_sizes = batch_sizes
        self.batch_alphas = batch_alphas
        self.clean_fractions = clean_fractions
        self.examples = examples
        self.seeds = seeds
        self.test_fraction = test_fraction
        self.val_fraction = val_fraction
        self.robust_fraction = robust_fraction
        self.features = features
        self.max_tokens = max_tokens
        self.label_column = label_column
        self.id_column = id_column

    def validate(self) -> None:
        refuse_features_naming(self.features, label_column=self.label_column, id_column=self.id_column)

    def output_schema(self, inputs):
        """One row per trained model (see `_one_run`); `lr` is null for the logistic baseline. The feature
        column's kind is checked first (`pipeline validate`)."""
        feature_column(inputs["data"], self.features, (self.label_column, self.id_column), None, required=False)
        return {"model": pl.String, "noise": pl.String, "alpha": pl.Float64, "delta": pl.Float64,
                "batch_size": pl.Int64, "lr": None, "clean_fraction": pl.Float64, "seed": pl.Int64,
                "repeat": pl.Int64, "train_clean_rows": pl.Int64, "train_rows": pl.Int64, "test_rows": pl.Int64,
                "accuracy": pl.Float64, "val_accuracy_noisy": pl.Float64, "best_step": pl.Int64, "steps": pl.Int64,
                "chance_majority": pl.Float64, "classes": pl.Int64, "features": pl.String}

    def required_column_types(self) -> dict[str, dict[str, str]]:
        return with_label_kind(super().required_column_types(), self.label_column)

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        cols: dict[str, str | None] = {self.label_column: "label_column", self.id_column: "id_column"}
        if self.features != "auto":
            cols[self.features] = "features"
        return {"data": cols}

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        refuse_label_kind(inputs["data"], self.label_column)  # before the split, naming this step and the file
        refuse_null_labels(inputs["data"], self.label_column)
        refuse_bad_id_column(inputs["data"], self.id_column)  # here, naming the user's file, not the split's table
        study_feature(inputs["data"], self.features, self.label_column, self.id_column,
                      centroid=self.confusion == "centroid" and "structured" in self.noises)

    def side_output_names(self):
        return ("transitions",) if any(self._keeps_transitions(run) for run in self._runs()) else ()

    # ------------------------------------------------------------ plan

    def _keeps_transitions(self, run: Run) -> bool:
        """The run whose label noise is the `transitions` side output: structured, at the largest alpha."""
        return (run.noise == "structured" and run.alpha == max(self.alphas) and run.seed_index == 0
                and run.clean_fraction == 1.0)

    def _runs(self) -> list[Run]:
        """Every run the three sweeps need, each once, in a fixed order."""
        neural = [m for m in self.models if m in NEURAL]
        runs: dict[Run, None] = {}
        for s in range(self.seeds):
            for model in self.models:
                for noise in self.noises:
                    for alpha in self.alphas:
                        runs[Run(model, noise, float(alpha), self.batch_size, 1.0, s)] = None
            if neural:
                for alpha in self.batch_alphas:
                    for b in self.batch_sizes:
                        runs[Run(neural[0], "uniform", float(alpha), b, 1.0, s)] = None
                for fraction in self.clean_fractions:
                    for alpha in self.alphas:
                        runs[Run(neural[0], "uniform", float(alpha), self.batch_size, float(fraction), s)] = None
        return list(runs)

    # ------------------------------------------------------------ run

    def run(self, ctx: Context, data: Dataset) -> pl.DataFrame:
        from threadpoolctl import threadpool_limits

        from stages.label_noise_report import write_report
        from stages.scaling.training import one_thread

        # Tiny models: more threads only contend on a small machine.
        with one_thread(), threadpool_limits(limits=1):
            result, transitions = self._sweep(ctx, data)
        if transitions is not None:
            ctx.write_side_output("transitions", transitions)
        # The step id names the study; the input's last path part names the data (a full path is noise here).
        title = f"{ctx.step_id}: {str(data.label).rstrip('/').rsplit('/', 1)[-1]}"
        findings = write_report(result, transitions, self, ctx, title=title)
        for key, value in findings.items():
            ctx.record(key, value)
        return result

    def _sweep(self, ctx: Context, data: Dataset) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        table = data.collect()
        feature = feature_column(table.schema, self.features, (self.label_column, self.id_column), data.label)
        refuse_nonfinite_features(table, feature, data.label)
        table, is_text = text_as_strings(table, feature)
        if "convnet" in self.models and is_text:
            raise ParamError("models", "'convnet' needs image vectors; the feature column holds text")
        if "bag_of_embeddings" in self.models and not is_text:
            raise ParamError("models", "'bag_of_embeddings' needs a text feature column")
        classes = table[self.label_column].unique().sort()
        confusion = self.confusion
        if confusion == "auto":
            confusion = "derangement" if is_text else "centroid"
        runs = self._runs()
        start = time.perf_counter()
        bar = ctx.progress(total=len(runs), unit="runs")
        prepared: dict[int, Prepared] = {}
        rows, transitions = [], None
        for run in runs:
            if run.seed_index not in prepared:
                prepared[run.seed_index] = self._prepare(table, feature, is_text, classes, ctx.seed + run.seed_index,
                                                         data.label)
            prep = prepared[run.seed_index]
            row, trans = self._one_run(run, prep, feature, is_text, classes, confusion, ctx.seed + run.seed_index)
            rows.append(row)
            if trans is not None and transitions is None:
                transitions = trans
            bar.update(1)
        bar.close()
        # Timing goes to the manifest, not the table: the table must be the same bytes on every run.
        ctx.record("train_seconds_per_run", round((time.perf_counter() - start) / max(len(runs), 1), 3))
        return pl.DataFrame(rows), transitions

    def _prepare(self, table: pl.DataFrame, feature: str, is_text: bool, classes: pl.Series, seed: int,
                 file: str | None) -> Prepared:
        train, test = _split(table.with_row_index("_row"), self.label_column, self.test_fraction, seed, file)
        fit_idx, val_idx = stratified_split(train["_row"].to_numpy(), train[self.label_column], self.val_fraction,
                                            seed + 1, param="val_fraction", file=file,
                                            part="the training split of input 'data'")
        y = table[self.label_column].replace_strict(classes, np.arange(classes.len()), return_dtype=pl.Int64)
        vocab = 0
        if is_text:
            x, vocab = _token_ids(table[feature], np.sort(fit_idx), self.max_tokens)
        else:
            x = vector_matrix(table[feature], "features").astype(np.float32)
            x /= float(np.abs(x[fit_idx]).max()) or 1.0
        keep = [self.id_column, self.label_column] + ([] if is_text else [feature])
        return Prepared(x=x, y=y.to_numpy(), table=table.select(keep), fit=np.sort(fit_idx).astype(np.int64),
                        val=np.sort(val_idx).astype(np.int64), test=test["_row"].to_numpy().astype(np.int64),
                        vocab_size=vocab)

    def _nested_fit(self, prep: Prepared, fraction: float, seed: int) -> np.ndarray:
        """The first `fraction` of each class in a seeded order: smaller clean sets nest in larger ones."""
        if fraction >= 1.0:
            return prep.fit
        order = np.random.default_rng(seed + 7).permutation(prep.fit.size)
        ranked = prep.fit[order]
        keep = []
        for c in np.unique(prep.y[ranked]):
            members = ranked[prep.y[ranked] == c]
            keep.append(members[: max(1, int(round(fraction * members.size)))])
        return np.sort(np.concatenate(keep))

    def _dilute(self, prep: Prepared, rows: np.ndarray, noise: str, alpha: float, classes: pl.Series,
                confusion: Any, feature: str, is_text: bool, seed: int, transitions: bool = False):
        """(row indices into x, class indices) of `rows` diluted by label_noise, its transitions, and the confusion
        matrix structured noise drew from (None for uniform noise)."""
        part = prep.table[rows].with_columns(pl.Series("_row", rows))
        noiser = LabelNoise(
            mode="dilute", alpha=alpha, noise=noise,
            **structured_params(noise, delta=self.delta, confusion=confusion,
                                feature_column=feature if (confusion == "centroid" and not is_text) else None),
            classes=classes.to_list(), label_column=self.label_column, id_column=self.id_column)
        result = noiser.execute(part, seed=seed)
        noisy = result.table.join(part.select(pl.col(self.id_column).alias("source_id"), "_row"), on="source_id",
                                  how="left", maintain_order="left")
        labels = noisy[self.label_column].replace_strict(classes, np.arange(classes.len()), return_dtype=pl.Int64)
        trans = result.side_outputs.get("transitions") if transitions else None
        drawn = result.stats["label_noise"].get("confusion_matrix") if noise == "structured" else None
        return noisy["_row"].cast(pl.Int64).to_numpy(), labels.to_numpy().copy(), trans, drawn

    def _one_run(self, run: Run, prep: Prepared, feature: str, is_text: bool, classes: pl.Series, confusion: Any,
                 seed: int) -> tuple[dict[str, Any], pl.DataFrame | None]:
        fit = self._nested_fit(prep, run.clean_fraction, seed)
        rows, labels, trans, drawn = self._dilute(prep, fit, run.noise, run.alpha, classes, confusion, feature,
                                                  is_text, seed, transitions=self._keeps_transitions(run))
        # The validation rows are diluted the same way: with the confusion the training rows drew (a derangement
        # drawn with the validation seed, or centroids of the validation rows, would confuse other classes).
        val_rows, val_labels, _, _ = self._dilute(prep, prep.val, run.noise, run.alpha, classes,
                                                  confusion if drawn is None else drawn, feature, is_text,
                                                  seed + 1_000_003)
        k = classes.len()
        config = TrainConfig(batch_size=run.batch_size, base_batch_size=self.batch_size, lr=self.lr,
                             examples=self.examples)
        if run.model == "logistic":
            predict, best_step, steps, val_acc = _fit_logistic(prep.x, rows, labels, val_rows, val_labels, is_text)
        else:
            trained = train_classifier(run.model, prep.x, rows, labels, val_rows, val_labels, k, config,
                                       seed=seed * 1_000 + zlib.crc32(f"{run.model}/{run.noise}".encode()) % 997,
                                       vocab_size=prep.vocab_size)
            predict, best_step, steps, val_acc = (trained.predict, trained.best_step, trained.steps,
                                                  trained.best_val_accuracy)
        y_test = prep.y[prep.test]
        accuracy = float((predict(prep.x[prep.test]) == y_test).mean())
        majority = float(np.bincount(y_test, minlength=k).max() / y_test.size)
        return {
            "model": run.model, "noise": run.noise, "alpha": run.alpha, "delta": float(self.delta),
            "batch_size": run.batch_size, "lr": config.scaled_lr if run.model != "logistic" else None,
            "clean_fraction": run.clean_fraction, "seed": seed, "repeat": run.seed_index,
            "train_clean_rows": int(fit.size), "train_rows": int(rows.size), "test_rows": int(prep.test.size),
            "accuracy": accuracy, "val_accuracy_noisy": float(val_acc), "best_step": int(best_step),
            "steps": int(steps), "chance_majority": majority, "classes": k,
            "features": "tokens" if is_text else feature,
        }, trans

    @classmethod
    def example(cls) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        params = {"models": ["mlp"], "alphas": [0, 2], "noises": ["uniform"], "batch_sizes": [32],
                  "batch_alphas": [2], "clean_fractions": [1.0], "examples": 2000, "seeds": 1}
        return params, {"data": digits_example()}


def _fit_logistic(x: np.ndarray, rows: np.ndarray, labels: np.ndarray, val_rows: np.ndarray, val_labels: np.ndarray,
                  is_text: bool):
    """The baseline: logistic regression on distinct (input, label) pairs weighted by count (same mean loss)."""
    from sklearn.linear_model import LogisticRegression

    if is_text:
        raise ParamError("models", "'logistic' runs on vector features; for text use the label_noise_curve stage")
    pairs = pl.DataFrame({"r": rows, "y": labels}).group_by("r", "y").len().sort("r", "y")
    weight = pairs["len"].to_numpy().astype(np.float64) * (np.unique(rows).size / rows.size)
    model = LogisticRegression(C=1.0, max_iter=2000)
    model.fit(x[pairs["r"].to_numpy()], pairs["y"].to_numpy(), sample_weight=weight)
    val_acc = float((model.predict(x[val_rows]) == val_labels).mean())
    return model.predict, 0, 0, val_acc


def _token_ids(texts: pl.Series, fit_rows: np.ndarray, max_tokens: int) -> tuple[np.ndarray, int]:
    """Padded word ids (0 = padding) of the text core's tokens; the vocabulary comes from the fit rows only.

    Words seen at least twice in the fit rows get ids by falling frequency (ties by the word); others are
    dropped, so a test document's unseen words carry no signal, as in any bag-of-words model.
    """
    from stages.text import tokenize

    tokens = tokenize(texts)
    doc = np.repeat(np.arange(texts.len()), tokens.counts)
    position = np.arange(doc.size) - tokens.offsets[doc]
    in_fit = np.isin(doc, fit_rows)
    fit_words = tokens.words.filter(pl.Series(in_fit))
    counts = fit_words.value_counts(name="n").filter(pl.col("n") >= 2).sort(
        ["n", fit_words.name], descending=[True, False])
    vocab = counts[fit_words.name]
    ids = tokens.words.replace_strict(vocab, pl.int_range(1, vocab.len() + 1, eager=True), default=0,
                                      return_dtype=pl.Int64).to_numpy()
    keep = (position < max_tokens) & (ids > 0)
    # Kept words move to the front of their row: padding (0) only ever trails.
    slot = np.zeros(doc.size, dtype=np.int64)
    if keep.any():
        kept_doc = doc[keep]
        starts = np.searchsorted(kept_doc, np.arange(texts.len()))
        slot[keep] = np.arange(kept_doc.size) - starts[kept_doc]
    matrix = np.zeros((texts.len(), max_tokens), dtype=np.int64)
    matrix[doc[keep], slot[keep]] = ids[keep]
    return matrix, int(vocab.len())
