"""The `transfer_curve` stage: pre-train, then fine-tune and train from scratch on nested subsets.

Hernandez et al. (2021), "Scaling Laws for Transfer": a model pre-trained on one distribution and
fine-tuned on D_F tokens of another reaches some loss; the same-size model trained from scratch needs
D_E = D_F + D_T tokens for it. This stage produces both curves, for several model sizes N, on the
same nested subsets (input `data`, from `nested_subsets`); `scaling_fit` with `law: transfer` then
fits D_T = k D_F^alpha N^beta. The model is `language_model.ngram_lm`; every run is early-stopped on
a validation half of the held-out input (see `training`), and the loss reported is on the other half.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.params import Annotated, Field
from pipeline.stage import Context, Stage
from stages._hashing import id_uniform
from stages._ids import refuse_bad_id_column
from stages.scaling import language_model as lm
from stages.scaling import training


class TransferCurve(Stage):
    """Test loss of small language models trained from scratch and fine-tuned on each nested subset.

    Input `pretrain`: the source corpus (text); `data`: nested subsets of the target corpus (with
    subset_index, subset_size); `test`: held-out target documents, split by id hash into validation
    (early stopping) and test. One row per (model size, regime, subset): regime 'scratch' or
    'finetuned' (plus one 'pretrained' row per model at 0 tokens: the zero-shot loss), params (N),
    tokens (the target tokens trained on: D or D_F), test and validation loss, steps, stopping rule.

    Parameters:
        models: model sizes, each {embedding: width, hidden: width}
        context: tokens of context the model sees
        vocabulary: vocabulary size, shared by both corpora (from the pre-training corpus and the largest subset)
        text_column: the text column of all three inputs
        pretrain_steps: most optimiser steps of pre-training (early-stopped on 5% of the source documents)
        learning_rate: AdamW learning rate for pre-training and from-scratch runs
        finetune_learning_rate: AdamW learning rate for fine-tuning
        batch_size: minibatch positions
        max_steps: most optimiser steps per fine-tuning or from-scratch run
        eval_every: steps between validation evaluations
        patience: evaluations without improvement before stopping
        validation_tokens: positions of the held-out input used for early stopping (at most)
        test_tokens: positions of the held-out input the test loss is measured on (at most)
        id_column: unique document id (splits the held-out and source inputs)
    """

    name = "transfer_curve"
    inputs: ClassVar[tuple[str, ...]] = ("pretrain", "data", "test")
    requires: ClassVar[tuple[str, ...]] = ("torch",)

    def __init__(
        self,
        models: list[dict[str, int]] = [{"embedding": 16, "hidden": 64}, {"embedding": 32, "hidden": 192}],  # noqa: B006
        context: int = 3,
        vocabulary: int = 2000,
        text_column: str = "text",
        pretrain_steps: int = 3000,
        learning_rate: Annotated[float, Field(gt=0.0)] = 3e-3,
        finetune_learning_rate: Annotated[float, Field(gt=0.0)] = 1e-3,
        batch_size: int = 128,
        max_steps: int = 3000,
        eval_every: int = 100,
        patience: int = 4,
        validation_tokens: int = 10_000,
        test_tokens: int = 30_000,
        id_column: str = "id",
    ):
        self.models = models
        self.context = context
        self.vocabulary = vocabulary
        self.text_column = text_column
        self.pretrain_steps = pretrain_steps
        self.learning_rate = learning_rate
        self.finetune_learning_rate = finetune_learning_rate
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.eval_every = eval_every
        self.patience = patience
        self.validation_tokens = validation_tokens
        self.test_tokens = test_tokens
        self.id_column = id_column

    def validate(self) -> None:
        if not self.models:
            raise ParamError("models", "name at least one model size, e.g. [{embedding: 16, hidden: 64}]")
        for m in self.models:
            if set(m) != {"embedding", "hidden"} or min(m.values()) < 1:
                raise ParamError("models", f"each model is {{embedding: >=1, hidden: >=1}}, got {m}")
        for name in ("context", "pretrain_steps", "batch_size", "max_steps", "eval_every", "patience",
                     "validation_tokens", "test_tokens"):
            if getattr(self, name) < 1:
                raise ParamError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.vocabulary < 3:
            raise ParamError("vocabulary", f"must be >= 3 (two ids are reserved), got {self.vocabulary}")

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        text = {self.text_column: "text_column", self.id_column: "id_column"}
        return {"pretrain": text, "data": text | {"subset_index": None, "subset_size": None}, "test": text}

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        # The source and held-out inputs are split by id hash: a repeated id sends every copy to one side, and
        # only ids repeated throughout were refused, as "too few documents to split off a validation set".
        for name in self.inputs:
            refuse_bad_id_column(inputs[name], self.id_column, input_name=name)

    def _config(self, learning_rate: float, steps: int) -> training.TrainConfig:
        return training.TrainConfig(learning_rate=learning_rate, batch_size=self.batch_size, max_steps=steps,
                                    eval_every=self.eval_every, patience=self.patience)

    def _texts(self, table: pl.DataFrame, label: str) -> list[str]:
        column = table[self.text_column]
        if column.dtype != pl.String or column.null_count():
            raise InputDataError(f"column '{self.text_column}' must hold text without nulls", param="text_column",
                                 file=label)
        return column.to_list()

    def _held_out(self, table: pl.DataFrame, seed: int, salt: str, share: float, label: str):
        draw = id_uniform(table[self.id_column], seed, salt)
        first = draw < share
        if first.all() or not first.any():
            raise InputDataError(f"too few documents ({table.height}) to split off a validation set",
                                 file=label)
        # Documents in hash order, so a token cap takes a random sample of documents, not the first files.
        shuffled = table.with_columns(pl.Series("_draw", draw), pl.Series("_first", first)).sort("_draw")
        return (shuffled.filter(pl.col("_first")).drop("_draw", "_first"),
                shuffled.filter(~pl.col("_first")).drop("_draw", "_first"))

    def run(self, ctx: Context, pretrain: Dataset, data: Dataset, test: Dataset) -> pl.DataFrame:
        with training.one_thread():
            return self._run(ctx, pretrain, data, test)

    def _run(self, ctx: Context, pretrain: Dataset, data: Dataset, test: Dataset) -> pl.DataFrame:
        source, target, held = pretrain.collect(), data.collect(), test.collect()
        source_val, source_train = self._held_out(source, ctx.seed, "transfer_source", 0.05, pretrain.label)
        target_val, target_test = self._held_out(held, ctx.seed, "transfer_test", 0.5, test.label)
        source_tokens = [lm.tokenize(t) for t in self._texts(source_train, pretrain.label)]
        target_tokens = [lm.tokenize(t) for t in self._texts(target, data.label)]
        vocab = lm.build_vocabulary(source_tokens + target_tokens, self.vocabulary)
        size = len(vocab) + 2

        def positions(tokens_or_texts, limit=None, tokenized=False):
            docs = ([np.array([vocab.get(t, lm.UNK) for t in toks], dtype=np.int64) for toks in tokens_or_texts]
                    if tokenized else lm.encode(tokens_or_texts, vocab))
            return training.as_tensors(*lm.contexts(docs, self.context, limit))

        pre_train = positions(source_tokens, tokenized=True)
        pre_val = positions(self._texts(source_val, pretrain.label), self.validation_tokens)
        validation = positions(self._texts(target_val, test.label), self.validation_tokens)
        test_set = positions(self._texts(target_test, test.label), self.test_tokens)
        index = target["subset_index"].to_numpy()
        subsets = target.select("subset_index", "subset_size").unique().sort("subset_index").rows()
        by_subset = [positions([t for t, i in zip(target_tokens, index) if i <= j], tokenized=True)
                     for j, _ in subsets]
        rows: list[dict[str, Any]] = []
        bar = ctx.progress(total=len(self.models) * (1 + 2 * len(subsets)), unit="runs")
        for m, spec in enumerate(self.models):
            seed = (ctx.seed * 100 + m) % (2**62)
            training.seed_everything(seed)
            pretrained = lm.ngram_lm(size, self.context, spec["embedding"], spec["hidden"])
            done = training.train(pretrained, lm.next_token_loss, pre_train, pre_val,
                                  self._config(self.learning_rate, self.pretrain_steps), seed)
            n = training.parameter_count(pretrained)
            ctx.record(f"pretrain_validation_loss@{n}", round(done.best_validation_loss, 4))
            rows.append(self._row("pretrained", n, spec, 0, 0, pretrained, test_set, done))
            bar.update(1)
            for (j, subset_size), train_set in zip(subsets, by_subset):
                for regime in ("scratch", "finetuned"):
                    training.seed_everything(seed + 1 + j)
                    model = lm.ngram_lm(size, self.context, spec["embedding"], spec["hidden"])
                    if regime == "finetuned":
                        model.load_state_dict({k: v.clone() for k, v in pretrained.state_dict().items()})
                    rate = self.finetune_learning_rate if regime == "finetuned" else self.learning_rate
                    result = training.train(model, lm.next_token_loss, train_set, validation,
                                            self._config(rate, self.max_steps), seed + 1 + j)
                    rows.append(self._row(regime, n, spec, subset_size, len(train_set[0]), model, test_set, result))
                    bar.update(1)
        bar.close()
        ctx.record("vocabulary", size)
        ctx.record("test_positions", len(test_set[0]))
        return pl.DataFrame(rows)

    def _row(self, regime, n, spec, subset_size, tokens, model, test_set, result) -> dict[str, Any]:
        return {"regime": regime, "params": n, "model": f"e{spec['embedding']}-h{spec['hidden']}",
                "subset_size": int(subset_size), "tokens": int(tokens),
                "test_loss": training.evaluate(model, lm.next_token_loss, test_set),
                "validation_loss": result.best_validation_loss, "steps": result.steps,
                "best_step": result.best_step, "stopped_by": result.stopped_by}

    @classmethod
    def example(cls) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        from stages.scaling.nested_subsets import NestedSubsets

        words = "def load ( path ) : return open ( path ) . read ( ) \n".split(" ")
        docs = [" ".join(words[i % 5:] + words[: i % 5]) * 3 for i in range(40)]
        target = pl.DataFrame({"id": [f"t{i}" for i in range(40)], "text": docs})
        source = pl.DataFrame({"id": [f"s{i}" for i in range(40)], "text": [d.upper() for d in docs]})
        subsets = NestedSubsets(sizes=[10, 20]).apply(target.head(20))
        params = {"models": [{"embedding": 4, "hidden": 8}], "vocabulary": 30, "pretrain_steps": 20,
                  "max_steps": 20, "eval_every": 10, "patience": 1, "batch_size": 16}
        return params, {"pretrain": source, "data": subsets, "test": target.tail(20)}
