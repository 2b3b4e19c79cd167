"""The `chunk` stage: documents cut into RETRO's unit of retrieval, counted in model tokens or words."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import polars as pl

from pipeline.columns import is_text
from pipeline.errors import InputDataError, ParamError
from pipeline.params import NonNegativeInt, PositiveInt
from pipeline.stage import Context, RowwiseStage
from stages._args import text_list
from stages._ids import refuse_bad_id_column, refuse_null_texts
from stages.embedding import (
    resolve_model_path,
)
from stages.retrieval.checks import per_row
from stages.text import chunk_spans

# ---------------------------------------------------------------- chunking

OUTPUT_COLUMNS = ("chunk_id", "doc_id", "chunk_index", "char_start", "char_end", "text", "n_tokens")


class Chunk(RowwiseStage):
    """Split each document into chunks of `size` tokens, RETRO's unit of retrieval.

    Output: one row per chunk with chunk_id ("<doc_id>:<chunk_index>"), doc_id, chunk_index,
    char_start, char_end (offsets into the document's text), text and n_tokens.
    A document whose text is empty has no chunks; a null text (a missing one) is refused.

    Parameters:
        size: tokens per chunk (RETRO uses 64)
        overlap: tokens shared by consecutive chunks (0 <= overlap < size)
        tokenizer: 'model' (the embedding model's word pieces) or 'whitespace' (words)
        model: local sentence-transformers directory whose tokenizer counts tokens; unset = packaged MiniLM
        text_column: the document text column
        id_column: the document id column (becomes doc_id)
        keep_columns: other document columns to copy onto every chunk (e.g. split)
    """

    name = "chunk"
    version = "2"  # 2: tokenizer "word" keeps combining marks in their word (the text core's WORD_REGEX)
    allow_empty_input: ClassVar[bool] = False

    def __init__(
        self,
        size: PositiveInt = 64,
        overlap: NonNegativeInt = 0,
        tokenizer: Literal["model", "whitespace"] = "model",
        model: str | None = None,
        text_column: str = "text",
        id_column: str = "id",
        keep_columns: list[str] | None = None,
    ):
        self.size = size
        self.overlap = overlap
        self.tokenizer = tokenizer
        self.model = model
        self.text_column = text_column
        self.id_column = id_column
        self.keep_columns = keep_columns

    def validate(self) -> None:
        if self.overlap >= self.size:
            raise ParamError("overlap", f"must be at least 0 and less than size ({self.size}), got {self.overlap}")
        keep = [c for c in self.keep_columns or [] if c != self.id_column]
        taken = next((c for c in keep if c in OUTPUT_COLUMNS or keep.count(c) > 1), None)
        if taken is not None:
            raise ParamError("keep_columns", f"column '{taken}' is named twice or is one of the chunk's own "
                             f"columns {list(OUTPUT_COLUMNS)}; rename it first (a select step)")
        if self.tokenizer == "model":
            resolve_model_path(self.model)

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        needed = {self.text_column: "text_column", self.id_column: "id_column"}
        needed.update({c: "keep_columns" for c in self.keep_columns or []})
        return {"data": needed}

    def required_column_types(self) -> dict[str, dict[str, str]]:
        # A list or struct doc id failed inside polars making the chunk ids (exit 1).
        kinds = super().required_column_types()
        kinds["data"][self.id_column] = "scalar"
        return kinds

    def check_input_data(self, inputs) -> None:
        # Chunk ids are "<doc_id>:<chunk_index>", the key retrieve and the leakage audit join on.
        refuse_bad_id_column(inputs["data"], self.id_column)
        # An empty text is a document with nothing to chunk; a null one is a missing text (a failed join, the
        # wrong column), which was read as '' and left the index without a word: refused like the embed stage's.
        refuse_null_texts(inputs["data"], self.text_column, "a document with no text would have no chunks and "
                          "drop out of the index without a word")

    def output_schema(self, inputs):
        data = inputs["data"]
        keep = {c: data.get(c) for c in self.keep_columns or [] if c != self.id_column}
        return {"chunk_id": pl.String, "doc_id": data.get(self.id_column), "chunk_index": pl.Int32,
                "char_start": pl.Int64, "char_end": pl.Int64, "text": pl.String, "n_tokens": pl.Int32, **keep}

    def process_batch(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        texts = batch[self.text_column]
        if not is_text(texts.dtype):
            raise InputDataError(f"column '{self.text_column}' is {texts.dtype}, not text", param="text_column")
        texts = texts.cast(pl.String)  # Categorical and Enum hold text too (`pipeline validate` passes them)
        spans = chunk_spans(texts, self.size, self.overlap, self.tokenizer, self.model)
        doc_rows, chunk_index = spans.doc, spans.index
        flat = np.stack([spans.char_start, spans.char_end, spans.n_tokens], axis=1)
        keep = [self.id_column] + [c for c in self.keep_columns or [] if c != self.id_column]
        # Python slices the texts: polars' str.slice walks from the start of the text to a character offset,
        # so cutting one long document was quadratic (a 19 MB document: 49 s; a Python str indexes at once).
        docs = texts.to_list()
        chunk_texts = [docs[d][s:e] for d, s, e in zip(doc_rows.tolist(), flat[:, 0].tolist(), flat[:, 1].tolist())]
        out = (
            batch.select(*keep)[doc_rows]
            .rename({self.id_column: "doc_id"})
            .with_columns(
                pl.Series("chunk_index", chunk_index, pl.Int32),
                pl.Series("char_start", flat[:, 0], pl.Int64),
                pl.Series("char_end", flat[:, 1], pl.Int64),
                pl.Series("n_tokens", flat[:, 2], pl.Int32),
                pl.Series("text", chunk_texts, pl.String),
            )
            .with_columns(pl.format("{}:{}", pl.col("doc_id"), pl.col("chunk_index")).alias("chunk_id"))
        )
        extra = [c for c in keep if c != self.id_column]
        return out.select("chunk_id", "doc_id", "chunk_index", "char_start", "char_end", "text", "n_tokens", *extra)

    @classmethod
    def example(cls):
        import pydoc_data.topics as topics

        docs = sorted(topics.topics.items())[:4]
        return {"size": 32, "overlap": 8}, {"data": pl.DataFrame({"id": [k for k, _ in docs],
                                                                  "text": [v for _, v in docs]})}


def chunk_texts(texts, size: int = 64, overlap: int = 0, tokenizer: str = "model", model: str | None = None,
                ids=None) -> pl.DataFrame:
    """Documents cut into chunks exactly as the `chunk` stage cuts them (the text core's `chunk_spans`).

    `ids` names the documents (default: their positions). One row per chunk: chunk_id ("<doc_id>:<index>"),
    doc_id, chunk_index, char_start, char_end, text, n_tokens; ready for `encode_texts(chunks["text"])` and
    `Index.build(vectors, ids=chunks["chunk_id"], doc_ids=chunks["doc_id"])`.
    """
    stage = Chunk(size=size, overlap=overlap, tokenizer=tokenizer, model=model)
    texts = text_list(texts, "texts")
    doc_ids = per_row(ids, "ids", len(texts), "texts") if ids is not None else pl.Series(np.arange(len(texts)))
    docs = pl.DataFrame({"id": doc_ids, "text": pl.Series(texts, dtype=pl.String)})
    if not len(texts):
        return pl.DataFrame(schema=stage.output_schema({"data": docs.schema}))
    return stage.apply(docs)
