"""Studies: training loops that call stages as library functions and report a figure.

`label_noise_curve` reproduces the shape of Rolnick et al. (2017), "Deep Learning is Robust to Massive
Label Noise": test accuracy as alpha noisy examples are added per clean one, for uniform and for
structured noise. It is the "library call inside training code" use of `label_noise`: every point of
the grid is `LabelNoise(mode="dilute", ...).apply(train, seed=...)` followed by a fit.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl

from pipeline.columns import is_text
from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.params import Annotated, Field, Fraction, PositiveInt
from pipeline.stage import Context, Stage
from stages._ids import refuse_bad_id_column, refuse_null_texts, refuse_nulls
from stages.noise import LabelNoise, vector_matrix
from stages.noise.params import Alpha, structured_params
from stages.noise.rows import refuse_label_kind, refuse_noise_columns, with_label_kind
from stages.scaling.plots import source_name

PLOT_NAME = "accuracy_vs_alpha.png"


def _split(table: pl.DataFrame, label: str, test_fraction: float, seed: int,
           file: str | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The clean train and test parts of `table` (stratified by `label`), in row order."""
    train_idx, test_idx = stratified_split(np.arange(table.height), table[label], test_fraction, seed,
                                           param="test_fraction", file=file)
    return table[np.sort(train_idx)], table[np.sort(test_idx)]


def stratified_split(rows: np.ndarray, labels: pl.Series, fraction: float, seed: int, *, param: str,
                     file: str | None, part: str = "input 'data'") -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's `train_test_split` of `rows` stratified by `labels`, holding out `fraction` (the parameter
    `param`), once `refuse_unsplittable` has refused in one line what scikit-learn refuses with a traceback."""
    from sklearn.model_selection import train_test_split

    refuse_unsplittable(labels, fraction, param=param, file=file, part=part)
    return train_test_split(rows, test_size=fraction, random_state=seed % (2**32), stratify=labels.to_numpy())


def refuse_unsplittable(labels: pl.Series, fraction: float, *, param: str, file: str | None, part: str) -> None:
    """A stratified split puts every class on both sides, so (scikit-learn's conditions and rounding: the held-out
    side gets ceil(fraction * rows)) each class needs 2 rows and each side a row of every class. `part` names the
    rows split (the input, or the training split a second split divides); a study also needs 2 classes to learn."""
    column = labels.name
    counts = labels.alias("class").value_counts(name="rows")
    k, n = counts.height, labels.len()
    single = counts.filter(pl.col("rows") < 2)["class"]
    if k < 2 or single.len():
        what = (f"a single class {counts['class'].to_list()}; a study needs at least 2" if k < 2 else
                f"{single.len():,} class(es) with a single row (e.g. {single[0]!r}); a stratified split puts "
                "every class on both sides, so each needs at least 2 rows")
        raise InputDataError(f"{part} column '{column}' has {what}", param="label_column", file=file,
                             hint="drop those classes' rows, or add rows of them" if k >= 2 else None)
    held = math.ceil(fraction * n)
    if min(held, n - held) < k:
        raise InputDataError(
            f"{part}: {param} {fraction:g} of {n:,} rows holds out {held:,} and keeps {n - held:,}; a stratified "
            f"split needs a row of each of the {k:,} classes (column '{column}') on both sides",
            param=param, file=file, hint=f"set {param} so that both sides get at least {k:,} rows, or add rows",
        )


def refuse_null_labels(data: Dataset, label: str) -> None:
    """Every row of a study needs a label: a null reached scikit-learn's split as a traceback. (A label column
    that is not integers or strings is refused before, from the schema: `label_column`'s kind "label", and by
    `refuse_label_kind` where the schema was not known before the run.)"""
    refuse_nulls(data, label, "every row needs a label to be split and trained on", kind="label",
                 param="label_column", input_name="data")


def digits_example(rows: int = 150) -> pl.DataFrame:
    """A small three-class slice of scikit-learn's digits: the studies' conformance example."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = digits.target < 3
    return pl.DataFrame({
        "id": np.arange(rows),
        "pixels": pl.Series(digits.data[keep][:rows].astype(np.float32).tolist(), dtype=pl.List(pl.Float32)),
        "label": digits.target[keep][:rows],
    })


def feature_column(schema: Any, features: str, exclude: tuple[str, ...], file: str | None,
                   required: bool = True) -> str | None:
    """The column a study trains on: `features` if set, else the first vector column, else `text`; refused
    unless it holds text or numeric vectors (`refuse_feature_kind`). `exclude`: the label and id columns.
    Not `required` (`pipeline validate`): None where 'auto' finds no column (the run refuses that, naming the file)
    or meets a column of undeclared type before any vector column (the run sees what it holds)."""
    if features != "auto":
        return refuse_feature_kind(features, schema[features], "named by parameter 'features'", file)
    for name, dtype in schema.items():
        if name in exclude:
            continue
        if dtype is None and not required:  # undeclared upstream: it may be the first vector column when run
            return None
        if isinstance(dtype, (pl.List, pl.Array)):
            return refuse_feature_kind(name, dtype, "picked by features: auto as the first vector column", file)
    if "text" in schema and "text" not in exclude:
        return refuse_feature_kind("text", schema["text"], "picked by features: auto as the text column", file)
    if not required:
        return None
    raise InputDataError("found no vector column and no 'text' column to train on; set 'features'",
                         param="features", file=file)


def refuse_feature_kind(column: str, dtype: Any, how: str, file: str | None) -> str:
    """`column`, unless it is neither text (a String, Categorical or Enum column, read as strings as every text
    stage reads them: TF-IDF or tokens) nor numeric vectors (a List or Array of numbers: the vector path). Anything
    else was trained on as something it is not: an integer `text` column as a 1-wide vector, a list of words as
    numbers (a ValueError), a column of nulls as empty documents. An unknown type (None: an upstream stage's
    declaration did not say) is left to the run's check."""
    if is_text(dtype) or (isinstance(dtype, (pl.List, pl.Array)) and dtype.inner.is_numeric()):
        return column
    what = ("holds only nulls (type Null); a study needs a document or a vector in every row"
            if dtype == pl.Null else
            f"is {dtype}, not text (a String, Categorical or Enum column) or numeric vectors (a List or Array of numbers); "
            "cast it to a string to train on it as text, or gather numbers into a list column to train on them as "
            "a vector")
    raise InputDataError(f"input 'data' column '{column}' ({how}) {what}", param="features", file=file)


def study_feature(data: Dataset, features: str, label_column: str, id_column: str, centroid: bool = False) -> str:
    """The feature column of a study's input (`feature_column`), with a text column's nulls, or one without a word,
    refused naming the file: TF-IDF failed on a null ('NoneType' has no attribute 'lower') and the tokenizer read
    it as empty. `centroid`: structured noise will take class centroids of the column (confusion: centroid), so
    text is refused naming `confusion` (the inner label_noise step blamed its own 'feature_column', mid-run)."""
    schema = data.lazy().collect_schema()
    column = feature_column(schema, features, (label_column, id_column), data.label)
    if centroid and is_text(schema[column]):
        raise InputDataError(f"confusion 'centroid' takes class centroids of numeric vectors, but the feature column "
                             f"'{column}' holds text; set confusion: derangement (or auto), or features to a vector "
                             "column", param="confusion", file=data.label)
    if is_text(schema[column]):
        refuse_null_texts(data, column, "a study cannot train on a missing document", input_name="data",
                          param="features")
        if not data.lazy().select(pl.col(column).cast(pl.String).str.contains(r"\w").any()).collect().item():
            # TF-IDF failed with "empty vocabulary"; the networks trained on padding alone and reported chance.
            raise InputDataError(f"input 'data' column '{column}' holds no words (all {data.num_rows:,} rows blank); "
                                 "a study has nothing to learn from", param="features", file=data.label)
    return column


def refuse_features_naming(features: str, **columns: str) -> None:
    """`features` naming the label (or id) column trained the study on its own labels (accuracy 1, exit 0), or
    failed in polars with a duplicate column: refused at validate time."""
    for param, column in columns.items():
        if features == column:
            raise ParamError("features", f"names the {param} '{column}'; a study trains on an input column beside "
                                         "its labels and ids: name a vector or text column, or 'auto'")


def refuse_nonfinite_features(table: pl.DataFrame, feature: str, file: str) -> None:
    """A vector feature column holding NaN or inf is refused in one line, counted over the whole input (a fit
    would fail deep inside scikit-learn, or train on NaN and report it)."""
    if not is_text(table.schema[feature]):
        vector_matrix(table[feature], "features", finite=True, file=file)


def text_as_strings(table: pl.DataFrame, feature: str) -> tuple[pl.DataFrame, bool]:
    """`table` with a text feature column (String, Categorical or Enum) as strings, and whether it is text: a
    study reads a Categorical column as the strings it holds, as every other text stage does, so it learns and
    reports the same as on the String column."""
    if not is_text(table.schema[feature]):
        return table, False
    return table.with_columns(pl.col(feature).cast(pl.String)), True


def _tfidf_fit(vectoriser: Any, texts: list[str], feature: str, file: str | None) -> Any:
    """`vectoriser.fit_transform(texts)`, with no term kept refused in one line: texts whose words are one character
    long or never repeat across documents failed inside scikit-learn ("After pruning, no terms remain", exit 1)."""
    try:
        return vectoriser.fit_transform(texts)
    except ValueError as exc:
        if "no terms remain" not in str(exc) and "empty vocabulary" not in str(exc):
            raise
        raise InputDataError(f"column '{feature}' gives TF-IDF no term: a term is a word of 2 or more letters or "
                             f"digits found in at least 2 of the {len(texts):,} training texts; give texts that share "
                             "words, or a numeric vector column as features", param="features", file=file) from None


class LabelNoiseCurve(Stage):
    """Test accuracy against alpha (noisy rows per clean row) for uniform and structured label noise.

    A clean test split is held out; for each noise kind and alpha, the training split is diluted by
    `label_noise` and a multinomial logistic regression is fitted. Added rows repeat training inputs,
    so the fit uses one row per distinct (input, label) pair weighted by its count: the same mean loss
    as training on every duplicated row, at a fraction of the cost. Chance level (majority class of the
    test split) is recorded and drawn on the plot `accuracy_vs_alpha.png`.

    Parameters:
        alphas: the noisy-rows-per-clean-row values to train at
        noises: which noise kinds to run: 'uniform', 'structured'
        delta: structured noise: probability that an added label is the confusing class
        confusion: structured noise: 'auto' (centroid for vectors, derangement for text), or any label_noise confusion
        features: the input column: a numeric vector column (images) or a string column (TF-IDF); 'auto' picks
        test_fraction: fraction of the data held out, clean, for testing (stratified)
        repeats: seeds per grid point (the table keeps each; the plot shows their mean)
        C: inverse regularisation strength of the logistic regression
        title: plot title (defaults to the input's name)
        label_column: the column holding labels
        id_column: unique row id
    """

    name = "label_noise_curve"
    version = "2"  # 2: the default plot title names the input, not its path
    requires: ClassVar[tuple[str, ...]] = ("sklearn", "matplotlib")

    def __init__(
        self,
        alphas: Annotated[list[Alpha], Field(min_length=1)] = [0, 1, 2, 5, 10, 20, 50],  # noqa: B006 - params are stored as given
        noises: list[Literal["uniform", "structured"]] = ["uniform", "structured"],  # noqa: B006
        delta: Fraction = 0.2,
        confusion: str | dict[Any, Any] | list[list[float]] = "auto",
        features: str = "auto",
        test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2,
        repeats: PositiveInt = 1,
        C: Annotated[float, Field(gt=0.0)] = 1.0,
        title: str | None = None,
        label_column: str = "label",
        id_column: str = "id",
    ):
        self.alphas = alphas
        self.noises = noises
        self.delta = delta
        self.confusion = confusion
        self.features = features
        self.test_fraction = test_fraction
        self.repeats = repeats
        self.C = C
        self.title = title
        self.label_column = label_column
        self.id_column = id_column

    def validate(self) -> None:
        if not self.noises:
            raise ParamError("noises", "must name at least one of 'uniform', 'structured'")
        refuse_features_naming(self.features, label_column=self.label_column, id_column=self.id_column)

    def output_schema(self, inputs):
        """One row per (repeat, noise, alpha) fit; the feature column's kind is checked first (validate)."""
        feature_column(inputs["data"], self.features, (self.label_column, self.id_column), None, required=False)
        return {"noise": pl.String, "alpha": pl.Float64, "delta": pl.Float64, "repeat": pl.Int64, "seed": pl.Int64,
                "classes": None, "train_clean_rows": pl.Int64, "train_rows": pl.Int64, "test_rows": pl.Int64,
                "accuracy": pl.Float64, "chance_majority": pl.Float64, "chance_uniform": pl.Float64,
                "features": pl.String}

    def required_column_types(self) -> dict[str, dict[str, str]]:
        return with_label_kind(super().required_column_types(), self.label_column)

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        cols: dict[str, str | None] = {self.label_column: "label_column", self.id_column: "id_column"}
        if self.features != "auto":
            cols[self.features] = "features"
        return {"data": cols}

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        # What the inner label_noise step would refuse, refused here naming the user's file, not the split's
        # in-memory table (and its id advice fits this stage: it has no id_column: null).
        refuse_label_kind(inputs["data"], self.label_column)  # before the split, naming this step and the file
        refuse_null_labels(inputs["data"], self.label_column)
        refuse_bad_id_column(inputs["data"], self.id_column)
        refuse_noise_columns(inputs["data"])  # every column is passed on to label_noise
        study_feature(inputs["data"], self.features, self.label_column, self.id_column,
                      centroid=self.confusion == "centroid" and "structured" in self.noises)

    def _feature_column(self, data: Dataset) -> str:
        return feature_column(data.lazy().collect_schema(), self.features, (self.label_column, self.id_column),
                              data.label)

    def run(self, ctx: Context, data: Dataset) -> pl.DataFrame:
        from threadpoolctl import threadpool_limits

        # The fits are small (thousands of rows): BLAS threads only contend, and on a busy machine
        # they made a 1 s fit take 40 s.
        with threadpool_limits(limits=1):
            return self._run(ctx, data)

    def _run(self, ctx: Context, data: Dataset) -> pl.DataFrame:
        from sklearn.linear_model import LogisticRegression

        table = data.collect()
        feature = self._feature_column(data)
        refuse_nonfinite_features(table, feature, data.label)
        table, text = text_as_strings(table, feature)
        if text:
            from sklearn.feature_extraction.text import TfidfVectorizer

        confusion = self.confusion
        if confusion == "auto":
            confusion = "derangement" if text else "centroid"
        classes = table[self.label_column].unique().sort()
        rows = []
        bar = ctx.progress(total=self.repeats * len(self.noises) * len(self.alphas), unit="fits")
        for repeat in range(self.repeats):
            seed = ctx.seed + repeat
            train, test = _split(table, self.label_column, self.test_fraction, seed, data.label)
            if text:
                vectoriser = TfidfVectorizer(sublinear_tf=True, min_df=2, ngram_range=(1, 2))
                x_train = _tfidf_fit(vectoriser, train[feature].to_list(), feature, data.label)
                x_test = vectoriser.transform(test[feature].to_list())
            else:
                scale = float(np.abs(vector_matrix(train[feature], "features")).max()) or 1.0
                x_train = vector_matrix(train[feature], "features") / scale
                x_test = vector_matrix(test[feature], "features") / scale
            y_test = test[self.label_column].to_numpy()
            majority = float(test[self.label_column].value_counts()["count"].max() / test.height)
            position = pl.DataFrame({"source_id": train[self.id_column],
                                     "_row": np.arange(train.height, dtype=np.int64)})
            for noise in self.noises:
                for alpha in self.alphas:
                    noiser = LabelNoise(
                        mode="dilute", alpha=alpha, noise=noise,
                        **structured_params(noise, delta=self.delta, confusion=confusion,
                                            feature_column=feature if confusion == "centroid" else None),
                        classes=classes.to_list(), label_column=self.label_column, id_column=self.id_column,
                    )
                    noisy = noiser.apply(train, seed=seed)
                    pairs = (
                        noisy.group_by("source_id", self.label_column).len()
                        .join(position, on="source_id").sort("_row", self.label_column)
                    )
                    model = LogisticRegression(C=self.C, max_iter=2000)
                    # Mean loss over the diluted set (as minibatch SGD sees it): the penalty keeps its weight
                    # relative to the data whatever alpha is, instead of fading as rows are added.
                    weight = pairs["len"].to_numpy().astype(np.float64) * (train.height / noisy.height)
                    model.fit(x_train[pairs["_row"].to_numpy()], pairs[self.label_column].to_numpy(),
                              sample_weight=weight)
                    accuracy = float((model.predict(x_test) == y_test).mean())
                    rows.append({
                        "noise": noise, "alpha": float(alpha), "delta": float(self.delta), "repeat": repeat,
                        "seed": seed, "classes": classes.len(), "train_clean_rows": train.height,
                        "train_rows": noisy.height, "test_rows": test.height, "accuracy": accuracy,
                        "chance_majority": majority, "chance_uniform": 1.0 / classes.len(),
                        "features": "tfidf" if text else feature,
                    })
                    bar.update(1)
        bar.close()
        result = pl.DataFrame(rows)
        # The input's name, not its path: a path ran off both ends of the title, and made the plot's bytes depend on
        # the workdir.
        title = self.title or f"{source_name(data.label)}: {classes.len()} classes, {train.height} clean training rows"
        self._plot(result, ctx.artefact_path(PLOT_NAME), title)
        summary = result.group_by("noise", "alpha").agg(pl.col("accuracy").mean()).sort("noise", "alpha")
        ctx.record("accuracy", {f"{r['noise']}@{r['alpha']:g}": round(r["accuracy"], 4)
                                for r in summary.iter_rows(named=True)})
        ctx.record("chance_majority", float(result["chance_majority"].mean()))
        ctx.record("plot", PLOT_NAME)
        return result

    def _plot(self, result: pl.DataFrame, path: Any, title: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
        styles = {"uniform": ("tab:blue", "o"), "structured": ("tab:red", "s")}
        for noise in result["noise"].unique(maintain_order=True):
            part = (result.filter(pl.col("noise") == noise).group_by("alpha")
                    .agg(pl.col("accuracy").mean(), pl.col("accuracy").min().alias("lo"),
                         pl.col("accuracy").max().alias("hi")).sort("alpha"))
            color, marker = styles.get(noise, ("tab:gray", "^"))
            delta = f" (delta={result['delta'][0]:g})" if noise == "structured" else ""
            ax.plot(part["alpha"], part["accuracy"], marker=marker, color=color, label=f"{noise} noise{delta}")
            if result["repeat"].n_unique() > 1:
                ax.fill_between(part["alpha"], part["lo"], part["hi"], color=color, alpha=0.15)
        chance = float(result["chance_majority"].mean())
        ax.axhline(chance, color="black", linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
        ax.set_xscale("symlog", linthresh=1)
        alphas = sorted(result["alpha"].unique().to_list())
        ax.set_xticks(alphas)
        ax.set_xticklabels([f"{a:g}" for a in alphas])
        ax.set_xlim(-0.1, max(alphas) * 1.15 + 0.1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("alpha: noisy examples added per clean example")
        ax.set_ylabel("test accuracy (clean test split)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=9)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)

    @classmethod
    def example(cls) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        return {"alphas": [0, 2], "noises": ["uniform", "structured"]}, {"data": digits_example()}
