"""The `embed` stage: an embedding column added to every row, through the content-addressed cache."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import polars as pl

from pipeline.columns import is_text
from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.params import PositiveInt
from pipeline.stage import Context, RowwiseStage
from stages._ids import refuse_null_texts
from stages.embedding.encode import encode_with_stats, vectors_to_series
from stages.embedding.models import _check_backend, model_identity, resolve_model_path


class Embed(RowwiseStage):
    """Add an embedding column (fixed-size float32 list) to every row, from the row's text.

    Vectors are cached by content under the pipeline cache directory, so a re-run over a corpus
    that gained a shard, or the next generation of a synthetic-data study, embeds only new texts.

    Parameters:
        text_column: the column holding the text to embed
        output_column: name of the new embedding column
        backend: 'sentence-transformers' (the transformer) or 'static' (distilled static table, far faster on CPU)
        model: local sentence-transformers directory; unset = the packaged all-MiniLM-L6-v2
        batch_size: texts per forward pass of the transformer
        max_seq_length: tokens kept per text (unset = the model's default, 256 for MiniLM)
        normalize: L2-normalise the vectors (needed for inner-product search; a static vector of a text with no known token stays zero)
        cache: reuse and store vectors in the content-addressed cache
    """

    name = "embed"
    batch_rows: ClassVar[int] = 16_384
    # Distributed executors keep the model loaded in an actor pool instead of reloading per task.
    uses_model: ClassVar[bool] = True

    def __init__(
        self,
        text_column: str = "text",
        output_column: str = "embedding",
        backend: Literal["sentence-transformers", "static"] = "sentence-transformers",
        model: str | None = None,
        batch_size: PositiveInt = 64,
        max_seq_length: PositiveInt | None = None,
        normalize: bool = True,
        cache: bool = True,
    ):
        self.text_column = text_column
        self.output_column = output_column
        self.backend = backend
        self.model = model
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.normalize = normalize
        self.cache = cache

    def validate(self) -> None:
        _check_backend(self.backend)
        if self.output_column == self.text_column:
            raise ParamError("output_column", "must differ from text_column")
        resolve_model_path(self.model)

    def fingerprint_extra(self) -> Any:
        return {"model_identity": model_identity(resolve_model_path(self.model))}

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        return {"data": {self.text_column: "text_column"}}

    def output_schema(self, inputs):
        self._refuse_taken_output_column(inputs["data"], None)
        return {**inputs["data"], self.output_column: None}

    def _refuse_taken_output_column(self, columns: Any, label: str | None) -> None:
        """The vectors would silently replace an input column of that name (an `id`, an earlier embedding)."""
        if self.output_column in columns:
            raise ParamError("output_column", f"names column '{self.output_column}', which the input already has; "
                             "the vectors would overwrite it", file=label,
                             hint="pick another output_column, or drop or rename that column first")

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        self._refuse_taken_output_column(inputs["data"].columns, inputs["data"].label)  # an undeclared upstream
        # Counted over the whole input before any text is embedded (a batch's count was the first batch's only,
        # found after every earlier batch was embedded).
        refuse_null_texts(inputs["data"], self.text_column, "a row with no text has no vector")

    def process_batch(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        column = batch[self.text_column]
        if not is_text(column.dtype):
            raise InputDataError(
                f"column '{self.text_column}' is {column.dtype}, not text", param="text_column"
            )
        column = column.cast(pl.String)  # Categorical and Enum hold text too (`pipeline validate` passes them)
        vectors, stats = encode_with_stats(
            column.to_list(), self.backend, self.model, self.batch_size, self.max_seq_length,
            self.normalize, ctx.cache_dir if self.cache else None, on_progress=ctx.report_rows,
        )
        for key, value in stats.items():
            ctx.stats[key] = ctx.stats.get(key, 0) + value
        ctx.stats["dim"] = int(vectors.shape[1])
        ctx.stats["backend"] = self.backend
        return batch.with_columns(vectors_to_series(self.output_column, vectors))

    @classmethod
    def example(cls):
        import pydoc_data.topics as topics

        texts = [text[:300] for _, text in sorted(topics.topics.items())[:6]]
        return {"cache": False}, {"data": pl.DataFrame({"id": range(6), "text": texts})}
