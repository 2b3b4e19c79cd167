"""The `plant_leakage` stage: contaminate a training corpus on purpose, with truth labels, to measure an audit.

A leakage audit's thresholds are only as good as the data they were judged on. This stage lets anyone
measure recall and false-positive rate of their own audit configuration on their own corpora: it
plants part of a test set into the training corpus in the ways leaks happen (`planting.plant`, plus
user-given paraphrases such as an LLM's rephrasings) and writes which item was planted how.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.params import Fraction
from pipeline.stage import Context, Stage
from stages._ids import refuse_bad_id_column, refuse_null_texts
from stages.leakage.planting import HEAVY_KINDS, PLANT_KINDS, plant

PAIR_KIND = "paraphrase"


def planted_count(rate: float, items: int) -> int:
    """rate x items rounded to the nearest whole item, a half up, as written: Python's round (half to even)
    planted 2 of 5 at rate 0.5 but 4 of 7, and binary floats put 0.15 x 10 a hair under 1.5."""
    return int((Decimal(str(float(rate))) * items).to_integral_value(rounding=ROUND_HALF_UP))
TRUTH_SCHEMA = {"test_id": pl.String, "planted": pl.Boolean, "plant_kind": pl.String, "train_id": pl.String}


class PlantLeakage(Stage):
    """Plant part of a test set into a training corpus (copies, edits, rewrites, paraphrases); write truth labels.

    Output: the training rows followed by one new row per planted item (id `planted-<test id>`,
    column `planted_from` = the test id, null for original rows). The training id column comes out
    as strings (an integer id 7 becomes '7'), since planted ids are strings and one column holds both.
    Test ids must be unique and not null (each names one planted row and one truth row), so must training ids
    (an audit names the training document a match is in by its id; a planted one is checked by it), and test
    texts not null (a missing item would be planted as an empty document). A `partial` plant is a 40-word
    span of the item inside a randomly chosen training document. Side output `truth`: one row per
    test item (test_id, planted, plant_kind, train_id: the planted row's id, or its row number when
    the training corpus has no id column), which the leakage report and the benchmark
    read to compute recall and false-positive rate. Items are chosen and kinds assigned (in turn,
    in `kinds` order) from the seed alone, so a run is reproducible.

    Parameters:
        text_column: column holding the text, in both train and test
        id_column: column holding row ids, in both (row numbers when absent from the test set); test ids must be unique
        kinds: how planted items are changed: verbatim, surface, partial, edited, reordered, rewritten, heavy, paraphrase
        rate: fraction of test items planted (the rest are clean controls): rate x items, a half rounded up (0.5 of
            5 plants 3, of 7 plants 4); stats `planted_rate` is the share planted
        paraphrase_column: test column holding a paraphrase of each item (the 'paraphrase' kind plants it); null = none. An item whose paraphrase is null or empty stays a clean control; a column with none at all is refused
    """

    name = "plant_leakage"
    version = "3"  # 3: rate x items rounds a half up (Python's round made 0.5 of 5 plant 2, of 7 plant 4)
    # 2: without a training id column, truth's train_id is the plant's row number (it named no row)
    inputs = ("train", "test")

    def __init__(
        self,
        text_column: str = "text",
        id_column: str = "id",
        kinds: list[str] | None = None,
        rate: Fraction = 0.5,
        paraphrase_column: str | None = None,
    ):
        self.text_column = text_column
        self.id_column = id_column
        self.kinds = kinds
        self.rate = rate
        self.paraphrase_column = paraphrase_column

    @property
    def plant_kinds(self) -> list[str]:
        if self.kinds is not None:
            return list(self.kinds)
        return list(PLANT_KINDS + HEAVY_KINDS) + ([PAIR_KIND] if self.paraphrase_column else [])

    def validate(self) -> None:
        known = PLANT_KINDS + HEAVY_KINDS + (PAIR_KIND,)
        bad = [k for k in self.plant_kinds if k not in known]
        if bad:
            raise ParamError("kinds", f"unknown kind {bad[0]!r}; choose from {', '.join(known)}")
        if not self.plant_kinds:
            raise ParamError("kinds", "is empty; name at least one kind")
        if PAIR_KIND in self.plant_kinds and not self.paraphrase_column:
            raise ParamError("kinds", "'paraphrase' needs paraphrase_column (the test column with each item's paraphrase)")

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        test = {self.text_column: "text_column"}
        if self.paraphrase_column:
            test[self.paraphrase_column] = "paraphrase_column"
        return {"train": {self.text_column: "text_column"}, "test": test}

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        test = inputs["test"]
        if self.id_column in test.columns:
            refuse_bad_id_column(test, self.id_column, input_name="test",
                                 hint="planted rows are named 'planted-<test id>' and truth is keyed by it; "
                                      "deduplicate the test set first")
        train = inputs["train"]
        if self.id_column in train.columns:  # the audit names the training document a match is in by its id
            refuse_bad_id_column(train, self.id_column, input_name="train",
                                 hint="an audit could not tell which of the rows sharing one matched; deduplicate "
                                      "the training corpus first")
        refuse_null_texts(test, self.text_column, "a null item would be planted as an empty document",
                          input_name="test")
        if self.paraphrase_column and PAIR_KIND in self.plant_kinds:
            # Some items without a paraphrase is fine (they stay controls); none at all is a wrong or empty column.
            paraphrase = pl.col(self.paraphrase_column).cast(pl.String)
            given = test.lazy().select(paraphrase.str.len_chars().gt(0).sum()).collect().item()
            if not given:
                raise InputDataError(
                    f"input 'test' column '{self.paraphrase_column}' has no paraphrase in any row (all null or empty), "
                    "so the 'paraphrase' kind would plant nothing; fill the column, or drop 'paraphrase' from kinds",
                    param="paraphrase_column", file=test.label)

    def output_schema(self, inputs):
        train = dict(inputs["train"])
        if self.id_column in train:
            train[self.id_column] = pl.String  # planted ids are strings: see the class docstring
        return {**train, "planted_from": pl.String}

    def side_output_names(self):
        return ("truth",)

    def side_output_schemas(self, inputs):
        return {"truth": TRUTH_SCHEMA}

    def run(self, ctx: Context, train: Dataset, test: Dataset) -> pl.DataFrame:
        train_df, test_df = train.collect(), test.collect()
        if train_df.height == 0:
            raise InputDataError(f"{self.name}: input 'train' is empty; plants need training documents to sit among")
        test_ids = (test_df.get_column(self.id_column).cast(pl.String) if self.id_column in test_df.columns
                    else pl.Series([str(i) for i in range(test_df.height)]))
        texts = test_df.get_column(self.text_column).cast(pl.String).fill_null("").to_list()
        pairs = (test_df.get_column(self.paraphrase_column).cast(pl.String).to_list() if self.paraphrase_column
                 else [None] * test_df.height)
        train_texts = train_df.get_column(self.text_column).cast(pl.String).fill_null("").to_list()
        rng = ctx.rng("plant_leakage")
        chosen = np.sort(rng.permutation(test_df.height)[: planted_count(self.rate, test_df.height)])
        kinds = self.plant_kinds
        planted_text, kind_of = {}, {}
        for turn, item in enumerate(chosen.tolist()):
            kind = kinds[turn % len(kinds)]
            if kind == PAIR_KIND and not pairs[item]:
                continue  # no paraphrase given for this item: it stays a clean control
            host = train_texts[int(rng.integers(0, len(train_texts)))]
            planted_text[item] = pairs[item] if kind == PAIR_KIND else plant(texts[item], kind, rng, host=host)
            kind_of[item] = kind
        new_ids = [f"planted-{test_ids[i]}" for i in planted_text]
        train_id = (train_df.get_column(self.id_column).cast(pl.String) if self.id_column in train_df.columns else None)
        if train_id is not None:
            train_df = train_df.with_columns(train_id)  # string ids, like the planted rows' (see the docstring)
        if train_id is not None and set(new_ids) & set(train_id.to_list()):
            raise InputDataError(f"{self.name}: the training corpus already has ids like 'planted-<test id>'; rename them")
        rows = {self.text_column: list(planted_text.values()), "planted_from": [test_ids[i] for i in planted_text]}
        if train_id is not None:
            rows[self.id_column] = new_ids
        out = pl.concat([train_df.with_columns(planted_from=pl.lit(None, pl.String)),
                         pl.DataFrame(rows).cast({c: train_df.schema[c] for c in rows if c in train_df.columns})],
                        how="diagonal_relaxed")
        # Where each plant sits: its id, or without an id column its row number (the audit's name for such a row).
        where = dict(zip(planted_text, new_ids if train_id is not None
                         else [str(train_df.height + n) for n in range(len(planted_text))]))
        truth = pl.DataFrame({
            "test_id": test_ids,
            "planted": [i in kind_of for i in range(test_df.height)],
            "plant_kind": [kind_of.get(i) for i in range(test_df.height)],
            "train_id": [where.get(i) for i in range(test_df.height)],
        }, schema=TRUTH_SCHEMA)
        ctx.write_side_output("truth", truth)
        ctx.record("planted", {k: sum(1 for v in kind_of.values() if v == k) for k in kinds})
        ctx.record("controls", test_df.height - len(kind_of))
        # The share actually planted: rate x items rounded, less paraphrase items that had no paraphrase.
        ctx.record("planted_rate", round(len(kind_of) / test_df.height, 6) if test_df.height else None)
        return out

    @classmethod
    def example(cls):
        from pydoc_data.topics import topics

        names = sorted(topics)
        train = pl.DataFrame({"id": names[:20], "text": [topics[t] for t in names[:20]]})
        test = pl.DataFrame({"id": [f"q{i}" for i in range(8)],
                             "text": [" ".join(topics[t].split()[:60]) for t in names[40:48]]})
        return {"kinds": ["verbatim", "heavy"], "rate": 0.5}, {"train": train, "test": test}
