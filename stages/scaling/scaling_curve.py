"""The `scaling_curve` stage: test loss of small torch MLPs trained on each nested subset.

The data-manifold side of Bahri et al.: train the same model on D_0 < ... < D_m (from
`nested_subsets`) and record the held-out loss at each size; `scaling_fit` then fits alpha. The
held-out input is split by id hash into a validation half (early stopping, see `training`) and a
test half (the reported loss), so the size D counts training rows only and the test loss is never
seen during training.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl

from pipeline.columns import polars_schema
from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.params import NonNegativeFloat
from pipeline.stage import Context, Stage
from stages._hashing import id_uniform
from stages._ids import refuse_bad_id_column, refuse_nans, refuse_nulls
from stages.embedding import vectors_to_series
from stages.noise import vector_matrix
from stages.scaling import training


def _loss_function(kind: str, classes: int):
    import torch
    import torch.nn.functional as F

    if kind == "cross_entropy":
        return lambda model, x, y: F.cross_entropy(model(x), y)

    def mse(model, x, y):
        # L2 on one-hot targets, summed over classes: the smooth loss the 4/d argument is made for.
        target = torch.nn.functional.one_hot(y, classes).to(torch.float32)
        return ((model(x) - target) ** 2).sum(dim=1).mean()

    return mse


def _vector_width(data: Dataset, column: str) -> int | None:
    """The width of a vector column: an Array's from the schema, a List's from its lengths, 1 for a number; None
    when the rows differ or the column is no vector (`vector_matrix` refuses those, naming the file)."""
    dtype = polars_schema(data.schema)[column]
    if isinstance(dtype, pl.Array):
        return dtype.size
    if not isinstance(dtype, pl.List):
        return 1 if dtype.is_numeric() else None
    widths = data.lazy().select(pl.col(column).list.len().unique().drop_nulls()).collect().to_series()
    return int(widths[0]) if widths.len() == 1 else None


def _label_kind(dtype: pl.DataType) -> str:
    """Labels that sort together: text with text, numbers (and booleans) with numbers, else only the same type."""
    if dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum)):
        return "text"
    return "number" if dtype.is_numeric() or dtype == pl.Boolean else str(dtype)


def _file(label: str | None) -> str:
    return f" (file '{label}')" if label else ""


class ScalingCurve(Stage):
    """Held-out loss of an MLP classifier trained on each nested subset (input `data`) at each size.

    One row per (subset, model, repeat): subset_size, rows, the model's hidden widths and parameter
    count, test loss and accuracy, validation loss, steps and what stopped training. With several
    `models` the same rows give L(N) (fit `params` per `subset_size` with `scaling_fit`). Side output
    `representation`: the last hidden layer of the last model trained on the largest subset (first
    repeat) over the test rows, for `intrinsic_dimension` of the learned representation.

    Parameters:
        features: the numeric vector column fed to the model
        label_column: class labels, sorted into class indices (integers, strings, booleans, categories or
            floats; the same kind in both inputs, no nulls)
        loss: 'mse' (L2 on one-hot targets) or 'cross_entropy'
        hidden: widths of the hidden layers
        models: several model sizes, each a list of hidden widths (null: the one model `hidden`)
        repeats: initialisation seeds per subset (all rows are kept; the fit sees each)
        validation_fraction: share of the held-out input used for early stopping (the rest is the test set)
        learning_rate: AdamW learning rate
        weight_decay: AdamW weight decay
        batch_size: minibatch rows
        max_steps: most optimiser steps per run
        eval_every: steps between validation evaluations
        patience: evaluations without improvement before stopping
        id_column: unique row id (splits the held-out input)
    """

    name = "scaling_curve"
    version = "2"  # 2: `representation` is written when the subset indices do not start at 0 (it was missing)
    inputs: ClassVar[tuple[str, ...]] = ("data", "test")
    requires: ClassVar[tuple[str, ...]] = ("torch",)

    def __init__(
        self,
        features: str = "pixels",
        label_column: str = "label",
        loss: Literal["mse", "cross_entropy"] = "mse",
        hidden: list[int] = [64, 64],  # noqa: B006 - params are stored as given
        models: list[list[int]] | None = None,
        repeats: int = 2,
        validation_fraction: float = 0.5,
        learning_rate: float = 3e-3,
        weight_decay: NonNegativeFloat = 0.0,
        batch_size: int = 64,
        max_steps: int = 3000,
        eval_every: int = 25,
        patience: int = 8,
        id_column: str = "id",
    ):
        self.features = features
        self.label_column = label_column
        self.loss = loss
        self.hidden = hidden
        self.models = models
        self.repeats = repeats
        self.validation_fraction = validation_fraction
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.eval_every = eval_every
        self.patience = patience
        self.id_column = id_column

    def validate(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ParamError("hidden", f"must be a non-empty list of widths >= 1, got {self.hidden}")
        if self.models is not None and (not self.models or any(not m or min(m) < 1 for m in self.models)):
            raise ParamError("models", f"must be a non-empty list of non-empty width lists >= 1, got {self.models}")
        for name in ("repeats", "batch_size", "max_steps", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise ParamError(name, f"must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ParamError("validation_fraction", f"must lie strictly between 0 and 1, got {self.validation_fraction}")
        if self.learning_rate <= 0:
            raise ParamError("learning_rate", f"must be > 0, got {self.learning_rate}")

    def side_output_names(self):
        return ("representation",)  # the last hidden layer of the largest subset's model, always

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        cols: dict[str, str | None] = {self.features: "features", self.label_column: "label_column",
                                       self.id_column: "id_column"}
        return {"data": cols | {"subset_index": None, "subset_size": None}, "test": cols}

    def required_column_types(self) -> dict[str, dict[str, str]]:
        """Labels one value a row: a list or struct label cannot be a class (it fails unhashable when run)."""
        types = super().required_column_types()
        for name in self.inputs:
            types.setdefault(name, {})[self.label_column] = "scalar"
        return types

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        """Refuse, before training, what the run would only meet as a torch or sort error: vectors of another
        width in the two inputs, null, NaN or mixed-kind labels (the classes are the sorted labels of both
        inputs), and repeated held-out ids (the ids split it into validation and test rows)."""
        data, test = inputs["data"], inputs["test"]
        self._refuse_other_widths(data, test)
        for name, dataset in inputs.items():
            refuse_nulls(dataset, self.label_column, "every row needs a class", kind="label", param="label_column",
                         input_name=name)
            refuse_nans(dataset, self.label_column, "a NaN label is a class of its own that sorts nowhere",
                        param="label_column", input_name=name)
        schemas = {name: polars_schema(dataset.schema) for name, dataset in inputs.items()}
        self._refuse_other_label_kinds(schemas["data"], schemas["test"], data.label, test.label)
        refuse_bad_id_column(test, self.id_column, input_name="test")

    def output_schema(self, inputs: dict[str, Any]) -> None:
        """No columns declared, but `pipeline validate` refuses what the two schemas already show: labels of two
        kinds, or Array vectors of two widths (a List column's width is known from its rows, when the step runs)."""
        data, test = inputs["data"], inputs["test"]
        self._refuse_other_label_kinds(data, test, None, None)
        widths = [s[self.features].size if isinstance(s[self.features], pl.Array) else None for s in (data, test)]
        self._refuse_widths(*widths, None, None)
        return None

    def _refuse_other_label_kinds(self, data: dict[str, Any], test: dict[str, Any], data_file: str | None,
                                  test_file: str | None) -> None:
        """The classes are the sorted labels of both inputs: text and numbers do not sort together."""
        kinds = data[self.label_column], test[self.label_column]
        if None in kinds:  # an upstream step that does not declare the type: the run checks it
            return
        if _label_kind(kinds[0]) != _label_kind(kinds[1]):
            raise InputDataError(f"input 'test' column '{self.label_column}' is {kinds[1]} but input 'data'"
                                 f"{_file(data_file)} has {kinds[0]} labels; the classes of both are sorted together, "
                                 "so cast one to the other's type", param="label_column", file=test_file)

    def _refuse_other_widths(self, data: Dataset, test: Dataset) -> None:
        """The model's input layer is as wide as the `data` vectors: `test` vectors of another width would fail
        in torch's matrix product after training."""
        self._refuse_widths(_vector_width(data, self.features), _vector_width(test, self.features), data.label,
                            test.label)

    def _refuse_widths(self, data_width: int | None, test_width: int | None, data_file: str | None,
                       test_file: str | None) -> None:
        if data_width is not None and test_width is not None and data_width != test_width:
            raise InputDataError(f"input 'test' column '{self.features}' holds vectors of width {test_width} "
                                 f"but input 'data'{_file(data_file)} holds width {data_width}; both inputs "
                                 "need the same features", param="features", file=test_file)

    def train_config(self) -> training.TrainConfig:
        return training.TrainConfig(learning_rate=self.learning_rate, batch_size=self.batch_size,
                                    max_steps=self.max_steps, eval_every=self.eval_every, patience=self.patience,
                                    weight_decay=self.weight_decay)

    def run(self, ctx: Context, data: Dataset, test: Dataset) -> pl.DataFrame:
        with training.one_thread():
            return self._run(ctx, data, test)

    def _run(self, ctx: Context, data: Dataset, test: Dataset) -> pl.DataFrame:
        train_table, held_out = data.collect(), test.collect()
        classes = sorted(set(train_table[self.label_column].to_list()) | set(held_out[self.label_column].to_list()))
        code = {c: i for i, c in enumerate(classes)}
        x_train = vector_matrix(train_table[self.features], "features", finite=True, file=data.label)
        x_held = vector_matrix(held_out[self.features], "features", finite=True, file=test.label)
        scale = float(np.abs(x_train).max()) or 1.0
        y_train = np.array([code[v] for v in train_table[self.label_column].to_list()], dtype=np.int64)
        y_held = np.array([code[v] for v in held_out[self.label_column].to_list()], dtype=np.int64)
        is_validation = id_uniform(held_out[self.id_column], ctx.seed, "scaling_curve") < self.validation_fraction
        if is_validation.all() or not is_validation.any():
            raise InputDataError("the held-out input is too small to split into validation and test rows",
                                 file=test.label)
        validation = training.as_tensors(x_held[is_validation] / scale, y_held[is_validation])
        test_set = training.as_tensors(x_held[~is_validation] / scale, y_held[~is_validation])
        loss_fn = _loss_function(self.loss, len(classes))
        subsets = train_table.select("subset_index", "subset_size").unique().sort("subset_index")
        index = train_table["subset_index"].to_numpy()
        rows = []
        models = self.models or [self.hidden]
        bar = ctx.progress(total=subsets.height * len(models) * self.repeats, unit="runs")
        for j, size in subsets.iter_rows():
            member = index <= j
            train_set = training.as_tensors(x_train[member] / scale, y_train[member])
            for m, hidden in enumerate(models):
                for repeat in range(self.repeats):
                    seed = (ctx.seed * 1000 + repeat) % (2**62)
                    training.seed_everything(seed)
                    model = training.mlp(x_train.shape[1], hidden, len(classes))
                    result = training.train(model, loss_fn, train_set, validation, self.train_config(), seed)
                    rows.append(self._row(model, loss_fn, train_set, test_set, result, size, repeat, seed)
                                | {"model": m, "hidden": "-".join(map(str, hidden))})
                    # The largest subset is the last index present, not index height - 1: indices need not start at 0.
                    if j == subsets["subset_index"][-1] and m == len(models) - 1 and repeat == 0:
                        self._representation(ctx, model, held_out.filter(pl.Series(~is_validation)), test_set)
                    bar.update(1)
        bar.close()
        result = pl.DataFrame(rows)
        ctx.record("test_loss", {str(s): round(v, 5) for s, v in
                                 result.group_by("subset_size").agg(pl.col("test_loss").mean()).sort("subset_size")
                                 .iter_rows()})
        ctx.record("stopped_by", result["stopped_by"].value_counts().sort("stopped_by").rows())
        return result

    def _row(self, model, loss_fn, train_set, test_set, result, size, repeat, seed) -> dict[str, Any]:
        import torch

        with torch.no_grad():
            model.eval()
            accuracy = float((model(test_set[0]).argmax(dim=1) == test_set[1]).float().mean())
        return {
            "subset_size": int(size), "rows": len(train_set[0]), "repeat": repeat, "seed": seed,
            "params": training.parameter_count(model), "loss": self.loss,
            "test_loss": training.evaluate(model, loss_fn, test_set), "test_accuracy": accuracy,
            "validation_loss": result.best_validation_loss, "train_loss": training.evaluate(model, loss_fn, train_set),
            "steps": result.steps, "best_step": result.best_step, "stopped_by": result.stopped_by,
        }

    def _representation(self, ctx: Context, model, test_rows: pl.DataFrame, test_set) -> None:
        import torch

        with torch.no_grad():
            model.eval()
            hidden = model.features(test_set[0]).numpy()
        ctx.write_side_output("representation", test_rows.select(self.id_column, self.label_column).with_columns(
            vectors_to_series("representation", hidden)))

    @classmethod
    def example(cls) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        from stages.scaling.nested_subsets import NestedSubsets

        rng = np.random.default_rng(0)
        x = rng.standard_normal((160, 4)).astype(np.float32)
        table = pl.DataFrame({"id": np.arange(160), "label": (x[:, 0] > 0).astype(np.int64)}).with_columns(
            vectors_to_series("pixels", x))
        train = NestedSubsets(sizes=[40, 100]).apply(table.head(100))
        return {"hidden": [8], "repeats": 1, "max_steps": 60, "eval_every": 20, "patience": 2}, \
            {"data": train, "test": table.tail(60)}
