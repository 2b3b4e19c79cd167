"""The `retrieve` stage: k nearest neighbours of every query row against an `index` step.

Partitioned over the queries (`pipeline.partitioned`): the index is loaded once and broadcast (put
in Ray's object store once); each partition's queries are searched independently and the merged
state is the partitions' neighbour tables in query order, so the rows are the same on any executor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from pipeline.columns import is_text, polars_schema
from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.params import NonNegativeFloat, PositiveInt
from pipeline.partitioned import Partition, PartitionedStage
from pipeline.stage import Context
from stages._ids import refuse_bad_id_column
from stages._vectors import unit_rows
from stages.embedding import (
    resolve_model_path,
    series_to_vectors,
)
from stages.retrieval.index import (
    Index,
    saved_dim,
)

# ---------------------------------------------------------------- retrieval


def refuse_other_doc_kind(queries: Dataset, column: str, index_dtype) -> None:
    """Query doc ids of another kind than the index's (integers against strings) never equal one: every query
    kept its own document's chunks (an integer was cast to a string that matched nothing), or polars failed."""
    query_dtype = polars_schema(queries.schema)[column]
    if is_text(query_dtype) != is_text(index_dtype):
        raise InputDataError(
            f"input 'queries' column '{column}' holds {query_dtype} document ids but the index holds {index_dtype} "
            "ones, so no query's own document could be excluded; cast one to the other's type",
            param="query_doc_column", file=queries.label)


class Retrieve(PartitionedStage):
    """k nearest neighbours of every query row against an `index` step.

    Queries are an embedding column, or a text column embedded with the encoder the index records
    (or the backend/model given here). Output: query_id, rank (0 = nearest), neighbour_id,
    neighbour_doc_id, score (inner product, or minus squared L2 distance: larger is nearer).

    Parameters:
        k: neighbours per query
        query_column: the query column: an embedding column, or a text column to embed
        query_id_column: the query row id reported as query_id
        query_doc_column: the query's document id; with exclude_same_doc, neighbours from it are dropped
        exclude_same_doc: drop neighbours from the query's own document (RETRO's rule)
        min_score: drop neighbours scoring below this floor (null = keep all k)
        backend: encoder for text queries (null = the one the index recorded)
        model: model for text queries (null = the one the index recorded)
        mmap_threshold_mb: memory-map index files larger than this instead of reading them into RAM (0 = always)
        batch_rows: queries searched per batch
        k_factor: with an index built with refine, PQ candidates re-ranked per neighbour (null = the
            index's calibrated one); more finds more of the true neighbours, slower
    """

    name = "retrieve"
    inputs = ("queries", "index")
    requires = ("faiss",)
    partition_input = "queries"

    def __init__(
        self,
        k: PositiveInt = 10,
        query_column: str = "embedding",
        query_id_column: str = "chunk_id",
        query_doc_column: str | None = "doc_id",
        exclude_same_doc: bool = False,
        min_score: float | None = None,
        backend: Literal["sentence-transformers", "static"] | None = None,
        model: str | None = None,
        mmap_threshold_mb: NonNegativeFloat = 1024,
        batch_rows: PositiveInt = 16_384,
        k_factor: PositiveInt | None = None,
    ):
        self.k = k
        self.query_column = query_column
        self.query_id_column = query_id_column
        self.query_doc_column = query_doc_column
        self.exclude_same_doc = exclude_same_doc
        self.min_score = min_score
        self.backend = backend
        self.model = model
        self.mmap_threshold_mb = mmap_threshold_mb
        self.batch_rows = batch_rows
        self.k_factor = k_factor

    def validate(self) -> None:
        if self.exclude_same_doc and not self.query_doc_column:
            raise ParamError("query_doc_column", "exclude_same_doc needs the query's document id column")
        if self.model is not None:
            resolve_model_path(self.model)

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        needed = {self.query_column: "query_column", self.query_id_column: "query_id_column"}
        if self.exclude_same_doc and self.query_doc_column:
            needed[self.query_doc_column] = "query_doc_column"
        return {"queries": needed, "index": {"faiss_id": None}}

    def required_column_types(self) -> dict[str, dict[str, str]]:
        # A list or array doc id cannot be matched against the index's documents (it failed inside polars).
        doc = {self.query_doc_column: "scalar"} if self.exclude_same_doc and self.query_doc_column else {}
        return {"queries": doc}

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        # Each output row names its query by id: a repeated id would merge two queries' neighbours, a null none.
        refuse_bad_id_column(inputs["queries"], self.query_id_column, input_name="queries", param="query_id_column",
                             hint="deduplicate the queries first, or name a unique column with query_id_column")

    def check_input_files(self, inputs: dict, paths: dict[str, str]) -> None:
        """A query column of fixed-width vectors (Array) against a saved index of another width, refused by
        `pipeline validate` from the index's index.json: it was refused only when the step ran, after the steps
        before it (an upstream `index` step's width is known only once it has run)."""
        query = inputs.get("queries", {}).get(self.query_column)
        dim = saved_dim(paths["index"]) if "index" in paths and isinstance(query, pl.Array) else None
        if dim is not None and query.size != dim:
            raise InputDataError(
                f"input 'queries' column '{self.query_column}' holds {query.size}-d vectors ({query}) but the index "
                f"at '{paths['index']}' holds {dim}-d vectors; embed the queries with the same backend and model as "
                "the indexed corpus, or name the matching column with query_column", param="query_column")

    def output_schema(self, inputs):
        return {"query_id": inputs["queries"].get(self.query_id_column), "rank": pl.Int32, "neighbour_id": None,
                "neighbour_doc_id": None, "score": pl.Float32}

    # -- partitioned over the queries; the index is loaded once and broadcast ----------------------

    def broadcast(self, ctx: Context, inputs: dict[str, Dataset]) -> dict:
        index = inputs["index"]
        if index.files is None:
            raise InputDataError("input 'index' must be the output directory of an 'index' step, not an in-memory table",
                                 file=index.label)
        idx = Index.load(Path(index.files[0]).parent, mmap_threshold_mb=self.mmap_threshold_mb)
        if self.backend is not None:
            idx.meta["backend"] = self.backend
        if self.model is not None:
            idx.meta["model"] = self.model
        if self.k_factor is not None:
            idx.set_k_factor(self.k_factor)
        if self.exclude_same_doc and idx._docs is None:
            raise ParamError("exclude_same_doc", "the index was built without doc_column, so documents are unknown")
        if self.exclude_same_doc:
            refuse_other_doc_kind(inputs["queries"], self.query_doc_column, idx._docs.dtype)
        ctx.record("index_factory", idx.meta.get("factory"))
        ctx.record("memory_mapped", idx.meta["memory_mapped"])
        return {"index": idx, "cache_dir": ctx.cache_dir}

    def map(self, partition: Partition, broadcast: dict) -> list[pl.DataFrame]:
        """The neighbours of the partition's queries, batch by batch."""
        idx = broadcast["index"]
        columns = [self.query_column, self.query_id_column]
        if self.exclude_same_doc:
            columns.append(self.query_doc_column)
        found = []
        for batch in partition.iter_batches(self.batch_rows, columns=list(dict.fromkeys(columns))):
            column = batch[self.query_column]
            if column.dtype == pl.String:
                if column.null_count():
                    raise InputDataError(f"query column '{self.query_column}' has null texts", param="query_column")
                vectors = idx.embed(column.to_list(), cache_dir=broadcast["cache_dir"])
            else:
                vectors = series_to_vectors(column, "query_column")
            if vectors.shape[1] != idx.dim:
                raise InputDataError(
                    f"query column '{self.query_column}' has {vectors.shape[1]}-d vectors but the index holds "
                    f"{idx.dim}-d vectors; embed queries with the same backend and model as the indexed corpus",
                    param="query_column",
                )
            found.append(idx.search(
                vectors, self.k, min_score=self.min_score, query_ids=batch[self.query_id_column],
                exclude_doc_ids=batch[self.query_doc_column] if self.exclude_same_doc else None,
            ))
        return found

    def merge(self, a: list[pl.DataFrame], b: list[pl.DataFrame]) -> list[pl.DataFrame]:
        return a + b

    def finish(self, ctx: Context, state: list[pl.DataFrame] | None, broadcast: dict, inputs: dict[str, Dataset]):
        if state:
            yield from state
            return
        idx = broadcast["index"]
        query_ids = inputs["queries"].lazy().select(self.query_id_column).head(0).collect()
        schema = {"query_id": query_ids.dtypes[0], "rank": pl.Int32,
                  "neighbour_id": idx._ids.dtype}
        if idx._docs is not None:
            schema["neighbour_doc_id"] = idx._docs.dtype
        yield pl.DataFrame(schema={**schema, "score": pl.Float32})

    @classmethod
    def example(cls):
        import atexit
        import shutil
        import tempfile

        rng = np.random.default_rng(0)
        vectors = unit_rows(rng.standard_normal((64, 16)))
        ids = [f"d{i // 4}:{i % 4}" for i in range(64)]
        docs = [f"d{i // 4}" for i in range(64)]
        index_dir = Path(tempfile.mkdtemp(prefix="retrieve-example-"))
        atexit.register(shutil.rmtree, index_dir, ignore_errors=True)  # examples leave no folder behind
        Index.build(vectors, ids=ids, doc_ids=docs, index_type="Flat").save(index_dir)
        from stages.embedding import vectors_to_series

        queries = pl.DataFrame({"chunk_id": ids[:8], "doc_id": docs[:8]}).with_columns(
            vectors_to_series("embedding", vectors[:8]))
        return {"k": 3, "exclude_same_doc": True}, {"queries": queries, "index": str(index_dir)}
