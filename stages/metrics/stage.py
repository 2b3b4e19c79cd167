"""The `corpus_metrics` stage: parameters, reference, and the partitioned map / merge / finish."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.params import Annotated, Field, NonNegativeInt
from pipeline.partitioned import Partition, PartitionedStage
from pipeline.stage import Context
from stages._ids import refuse_nans, refuse_nulls
from stages.embedding import resolve_model_path
from stages.metrics import finish as finishing
from stages.metrics.partial import MetricsPartial, measure_partition
from stages.synthetic import NGramLM
from stages.text import token_table

AUTO_GROUPS = ("schedule", "seed", "generation")
METRIC_COLUMNS = (
    "docs", "tokens", "mean_doc_tokens", "vocab_size", "type_token_ratio", "distinct_1", "distinct_2", "distinct_3",
    "unigram_entropy_bits", "tail_mass", "js_divergence", "reference_vocab_coverage", "duplicate_rate",
    "near_duplicate_rate", "self_bleu", "vendi_score", "mean_pairwise_distance", "perplexity_mean",
    "perplexity_median",
)
_INT_COLUMNS = ("docs", "tokens", "vocab_size")


class CorpusMetrics(PartitionedStage):
    """Diversity, tail and drift metrics of a corpus, per group (e.g. per schedule and generation).

    Tail mass is the share of tokens whose word occurs at most `rare_max_count` times in the
    reference (generation 0); it falls when a generator forgets the tails. js_divergence is the
    Jensen-Shannon divergence (bits, 0..1) of the unigram distribution from the reference's.
    duplicate_rate is the share of documents that exactly repeat an earlier one in their group, and
    near_duplicate_rate the share a `dedup_minhash` step would remove (5-word shingles, MinHash).
    distinct_n is distinct n-grams over all n-grams of the group (so distinct_1 equals the
    type-token ratio); both fall with corpus size, so compare groups of similar size. Perplexity is
    under an interpolated n-gram model fit on the reference, per document in the `perplexity` side
    output (for histograms) and as mean and median here. A document whose text is a reference document
    (generation 0 itself, the real documents a schedule keeps, a verbatim copy) is scored leave-one-out,
    by the model fit without it (exact: its counts are taken out of the model's), so the reference is
    held out like every other group rather than scored by a model that memorised it (NaN when the
    reference is that one document).

    Parameters:
        text_column: column holding the text
        group_by: columns to group by (null = whichever of schedule, seed, generation exist; none = one group)
        reference_generation: with no `reference` input, rows of this generation are the reference
        rare_max_count: a word is rare (tail) if it occurs at most this often in the reference
        self_bleu_sample: documents per group sampled for self-BLEU-4 (0 = skip)
        perplexity_order: n-gram order of the reference model for perplexity (0 = skip)
        embedding_backend: none, static or sentence-transformers (via stages.embedding.encode_texts)
        embedding_model: model name or path for the embedding backend (null = its default)
        embedding_sample: documents per group embedded for the Vendi score and pairwise distance
        lowercase: fold case before counting words
        near_duplicate_threshold: MinHash Jaccard threshold of near_duplicate_rate (stages.dedup; 0 = skip)
    """

    name = "corpus_metrics"
    version = "4"  # 4: reference documents' perplexity is leave-one-out, not in-sample; 3: shares of no tokens are NaN
    inputs = ("data", "reference")
    optional_inputs = ("reference",)

    def __init__(
        self,
        text_column: str = "text",
        group_by: list[str] | None = None,
        reference_generation: int = 0,
        rare_max_count: NonNegativeInt = 2,
        self_bleu_sample: NonNegativeInt = 200,
        perplexity_order: NonNegativeInt = 3,
        embedding_backend: Literal["none", "static", "sentence-transformers"] = "static",
        embedding_model: str | None = None,
        embedding_sample: NonNegativeInt = 256,
        lowercase: bool = False,
        near_duplicate_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.8,
    ):
        self.text_column = text_column
        self.group_by = group_by
        self.reference_generation = reference_generation
        self.rare_max_count = rare_max_count
        self.self_bleu_sample = self_bleu_sample
        self.perplexity_order = perplexity_order
        self.embedding_backend = embedding_backend
        self.embedding_model = embedding_model
        self.embedding_sample = embedding_sample
        self.lowercase = lowercase
        self.near_duplicate_threshold = near_duplicate_threshold

    def validate(self) -> None:
        if 0 < self.self_bleu_sample < 2:
            raise ParamError("self_bleu_sample", "needs at least 2 documents (or 0 to skip)")
        if self.embedding_backend != "none" and self.embedding_sample < 2:
            raise ParamError("embedding_sample", "needs at least 2 documents to measure diversity")
        repeated = [c for i, c in enumerate(self.group_by or []) if c in self.group_by[:i]]
        if repeated:  # else polars failed grouping by one column twice (exit 1)
            raise ParamError("group_by", f"lists column '{repeated[0]}' twice; name each column once")
        if self.embedding_backend == "none" and self.embedding_model is not None:
            raise ParamError("embedding_model", "is unused with embedding_backend: none (no embedding diversity is "
                             "measured); leave it out, or set embedding_backend: static or sentence-transformers")
        if self.embedding_backend != "none" and self.embedding_model is not None:
            try:  # a missing model was refused only when the metrics were measured, after every partition
                resolve_model_path(self.embedding_model)
            except ParamError as exc:
                exc.param = "embedding_model"
                raise

    def required_columns(self):
        cols = {"data": {self.text_column: "text_column"}, "reference": {self.text_column: "text_column"}}
        for c in self.group_by or []:
            cols["data"][c] = "group_by"
        return cols

    @classmethod
    def example(cls):
        import pydoc_data.topics

        paragraphs = [p.strip() for k in sorted(pydoc_data.topics.topics)[:8]
                      for p in pydoc_data.topics.topics[k].split("\n\n") if p.strip()]
        half = len(paragraphs) // 2
        df = pl.DataFrame({"generation": [0] * half + [1] * (len(paragraphs) - half), "text": paragraphs})
        return {"self_bleu_sample": 20, "embedding_backend": "none"}, {"data": df}


    # ------------------------------------------------------------ declared columns

    def groups_of(self, columns: Any) -> list[str]:
        return self.group_by if self.group_by is not None else [c for c in AUTO_GROUPS if c in columns]

    def _check_auto_groups(self, schema: dict[str, Any], label: str | None) -> None:
        """The automatic groups (schedule, seed, generation) are keys too: the check `group_by` columns get from
        their declared kind, made here because which of them exist depends on the input."""
        from pipeline.columns import COLUMN_KINDS

        test, what = COLUMN_KINDS["scalar"]
        for column in self.groups_of(schema) if self.group_by is None else []:
            if not test(schema[column]):
                raise InputDataError(f"input 'data' column '{column}' (a group by default) is {schema[column]}, "
                                     f"not {what}", param="group_by", file=label)

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        from pipeline.columns import polars_schema

        data = inputs["data"]
        schema = polars_schema(data.schema)
        self._check_auto_groups(schema, data.label)
        self._check_reference_generation(schema, data.label, "reference" in inputs and inputs["reference"] is not None)
        for name in ("data", "reference"):
            # Null texts count as empty documents; a corpus of nothing but them has no metric to report (and a
            # reference of them no model to fit).
            if inputs.get(name) is not None:
                refuse_nulls(inputs[name], self.text_column, "an input of nothing but empty documents has no metric "
                             "to measure", kind="text", param="text_column", input_name=name, every_row=True)
        # A float key is a key like any other, but NaN equals nothing: partitions' groups would not merge.
        for column in self.groups_of(data.columns):
            refuse_nans(data, column, "NaN equals no other value, so its rows would make one group per partition",
                        param="group_by", input_name="data")

    def _check_reference_generation(self, schema: dict[str, Any], label: str | None, has_reference: bool) -> None:
        """Without a `reference` input, generation `reference_generation` (an integer) is the reference: a
        `generation` column of strings cannot be compared with it."""
        dtype = schema.get("generation")
        if has_reference or "generation" not in self.groups_of(schema) or dtype is None or dtype.is_numeric():
            return
        raise InputDataError(f"input 'data' column 'generation' is {dtype}; the reference is generation "
                             f"{self.reference_generation} (an integer): cast the column to integers, or give a "
                             "`reference` input", param="reference_generation", file=label)

    def output_schema(self, inputs):
        data = inputs["data"]
        self._check_auto_groups(data, None)
        self._check_reference_generation(data, None, inputs.get("reference") is not None)
        group_by = self.groups_of(data)
        if not group_by:
            return {c: pl.Int64 if c in _INT_COLUMNS else pl.Float64 for c in METRIC_COLUMNS}
        out = {c: data.get(c) for c in group_by}
        out.update({c: pl.Int64 if c in _INT_COLUMNS else pl.Float64 for c in METRIC_COLUMNS})
        return out

    def side_output_names(self):
        # Written when a reference model is fit (a `reference` input, or `generation` among the groups): the
        # params allow it, the config and data decide it, so it is declared whenever the params allow it.
        return ("perplexity",) if self.perplexity_order else ()

    def side_output_schemas(self, inputs):
        if not self.perplexity_order:
            return {}
        data = inputs["data"]
        keys = [*self.groups_of(data), *(["doc_id"] if "doc_id" in data else [])]
        return {"perplexity": {**{c: data.get(c) for c in keys}, "perplexity": pl.Float64}}

    # ------------------------------------------------------------ partitioned run

    def broadcast(self, ctx: Context, inputs: dict[str, Dataset]) -> dict[str, Any]:
        """The reference (its word counts and n-gram model) and the seed: what every partition needs."""
        data = inputs["data"]
        group_by = self.groups_of(data.columns)
        ref_texts = self._reference(data, inputs.get("reference"), group_by)
        if ref_texts is not None and self.lowercase:
            ref_texts = ref_texts.str.to_lowercase()
        ref_words = ref_tokens = None
        if ref_texts is not None:
            ref_tokens = token_table(ref_texts)
            ref_words = ref_tokens.group_by("token").agg(pl.len().cast(pl.Int64).alias("ref"))
            ref_words = ref_words.rename({"token": "word"})
        model = None
        if self.perplexity_order and ref_texts is not None:
            model = NGramLM(order=self.perplexity_order).fit(ref_texts, tokens=ref_tokens)
        return {"seed": ctx.seed, "group_by": group_by, "ref_words": ref_words, "model": model,
                "reference_docs": len(ref_texts) if ref_texts is not None else 0}

    def map(self, partition: Partition, broadcast: dict[str, Any]) -> MetricsPartial:
        group_by = broadcast["group_by"]
        keep = [*group_by, self.text_column]
        if partition.frame is not None:
            keep += ["doc_id"] if "doc_id" in partition.frame.columns else []
        else:
            import pyarrow.parquet as pq

            keep += ["doc_id"] if "doc_id" in pq.read_schema(partition.pieces[0][0]).names else []
        frame = pl.concat(list(partition.iter_batches(columns=keep)), how="vertical")
        return measure_partition(self, frame, partition.base, group_by, broadcast)

    def merge(self, a: MetricsPartial, b: MetricsPartial) -> MetricsPartial:
        return a.merge(b, self._sample_size())

    def finish(self, ctx: Context, state: MetricsPartial | None, broadcast: dict[str, Any],
               inputs: dict[str, Dataset]) -> pl.DataFrame:
        group_by = broadcast["group_by"]
        state = state if state is not None else MetricsPartial({}, {}, [])
        groups, parts = finishing.group_table(state, group_by)
        out = finishing.lexical(self, parts, broadcast["ref_words"])
        out["duplicate_rate"] = finishing.duplicate_rate(parts)
        out["near_duplicate_rate"] = finishing.near_duplicate_rate(self, parts)
        out["self_bleu"] = finishing.self_bleu_per_group(self, parts)
        out["vendi_score"] = np.full(len(parts), np.nan)
        out["mean_pairwise_distance"] = np.full(len(parts), np.nan)
        if self.embedding_backend != "none":
            finishing.embedding_diversity(self, ctx, parts, out)
        finishing.perplexity(ctx, state, groups, group_by, out)
        ctx.record("groups", groups.height)
        ctx.record("reference_docs", broadcast["reference_docs"])
        ctx.record("tokens", int(out["tokens"].sum()))
        table = pl.DataFrame({k: pl.Series(k, v) for k, v in out.items()})
        table = table.with_columns(pl.col(*_INT_COLUMNS).cast(pl.Int64))
        return pl.concat([groups, table], how="horizontal") if group_by else table

    def _sample_size(self) -> int:
        return max(self.self_bleu_sample, self.embedding_sample if self.embedding_backend != "none" else 0)

    def _reference(self, data: Dataset, reference: Dataset | None, group_by: list[str]) -> pl.Series | None:
        """The reference texts: the `reference` input, else generation `reference_generation` of the data."""
        if reference is not None:
            return reference.lazy().select(self.text_column).collect()[self.text_column].cast(pl.String).fill_null("")
        if "generation" not in group_by:
            return None
        cols = [c for c in ("schedule", "seed", "generation") if c in group_by]
        ref = data.lazy().select([*cols, self.text_column]).filter(
            pl.col("generation") == self.reference_generation).collect()
        if "schedule" in cols and len(ref):
            # Every schedule shares generation 0; one copy is the reference.
            ref = ref.filter(pl.col("schedule") == ref["schedule"].min())
        if "seed" in cols and len(ref):
            # Replicas of a study share generation 0 too: one copy, or rare words would count thrice.
            ref = ref.filter(pl.col("seed") == ref["seed"].min())
        if len(ref) == 0:
            raise InputDataError(
                f"no rows with generation == {self.reference_generation} to use as the reference; "
                "give a `reference` input or set reference_generation", param="reference_generation", file=data.label)
        return ref[self.text_column].cast(pl.String).fill_null("")
