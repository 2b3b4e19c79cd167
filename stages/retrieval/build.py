"""The `index` stage: a FAISS index over an embedding column, beside the FAISS-row -> id table.

On the partitioned contract (`pipeline.partitioned`): the quantiser is trained once, on a seeded
sample, and broadcast; each partition's vectors are encoded by it (list number + code per row, the
heavy part: assignment to the nearest centroid and PQ encoding); merges concatenate the code arrays
in row order; `finish` appends them to the inverted lists under their corpus-wide row numbers, so the
index holds the same lists, in the same order (and bytes), as one sequential build, on any executor
and partitioning. The state is plain arrays of the index's own size (no faiss index per partition,
no serialise copy when it is pickled for a checkpoint or a Ray transfer).
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError
from pipeline.io import Dataset
from pipeline.params import Annotated, Field, PositiveInt
from pipeline.partitioned import Partition, PartitionedStage
from pipeline.stage import Context
from stages._ids import refuse_bad_id_column, refuse_nulls
from stages._vectors import unit_rows
from stages.embedding import (
    resolve_model_path,
    series_to_vectors,
)
from stages.exact_topk import ExactTopK
from stages.retrieval.index import (
    INDEX_FILE,
    _iter_vectors,
    add_vectors,
    auto_factory,
    encode_vectors,
    fill_from_codes,
    finish_index,
    mergeable_factory,
    prepare_index,
    write_index_files,
)
from stages.retrieval.refine import nothing_to_refine, refine_for


class BuildIndex(PartitionedStage):
    """Build a FAISS index over an embedding column; the step's table maps FAISS rows to ids.

    Writes index.faiss and index.json beside the Parquet; `retrieve` and `Index.load` read them.
    With index_type 'auto' the type follows the collection: exact ('Flat') up to 65,536 vectors,
    'IVF<nlist>,Flat' up to 4M, 'IVF<nlist>,PQ<m>x8' beyond; nprobe (or HNSW efSearch) is set to the
    smallest value reaching `recall_target` recall@10 against exact search on 512 sampled vectors.

    Parameters:
        embedding_column: the embedding column to index
        id_column: the row id reported as neighbour_id (e.g. chunk_id)
        doc_column: document id reported as neighbour_doc_id, used to exclude a query's own document (null = none)
        index_type: 'auto' or a FAISS factory string ('Flat', 'HNSW32', 'IVF4096,Flat', 'IVF4096,PQ48x8', ...)
        metric: 'auto' (inner product when every vector is unit length or all zero, else L2), 'inner_product' or 'l2'
        train_size: vectors sampled (with the pipeline seed) to train IVF/PQ indexes
        recall_target: recall@10 against exact search that calibration aims for
        refine: re-rank an IVF-PQ index's candidates against 8-bit ('sq8', 1 byte per dimension) or
            half-precision ('fp16', 2 bytes) copies of the vectors (faiss IndexRefine; null = none;
            not added where 'auto' picks an index that stores whole vectors)
        keep_columns: extra columns stored in the mapping table (e.g. text, to read neighbours back)
        backend: how Index.search embeds text queries; must match the embed step that made the vectors
        model: the model of that embed step (unset = packaged all-MiniLM-L6-v2)
    """

    name = "index"
    requires = ("faiss",)
    partition_input = "data"

    def __init__(
        self,
        embedding_column: str = "embedding",
        id_column: str = "chunk_id",
        doc_column: str | None = "doc_id",
        index_type: str = "auto",
        metric: Literal["auto", "inner_product", "l2"] = "auto",
        train_size: PositiveInt = 100_000,
        recall_target: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95,
        keep_columns: list[str] | None = None,
        backend: Literal["sentence-transformers", "static"] = "sentence-transformers",
        model: str | None = None,
        refine: Literal["sq8", "fp16"] | None = None,
    ):
        self.embedding_column = embedding_column
        self.id_column = id_column
        self.doc_column = doc_column
        self.index_type = index_type
        self.metric = metric
        self.train_size = train_size
        self.recall_target = recall_target
        self.keep_columns = keep_columns
        self.backend = backend
        self.model = model
        self.refine = refine

    def validate(self) -> None:
        if not self.index_type.strip():
            raise ParamError("index_type", "is empty; use 'auto' or a FAISS factory string")
        parts = [p.strip() for p in self.index_type.split(",")]
        # FAISS aborts the whole process (an assertion, not an exception) filling an HNSW graph with < 2 links.
        links = [int(m) for m in re.findall(r"HNSW(\d+)", self.index_type)]
        if any(m < 2 for m in links):
            raise ParamError("index_type", f"HNSW needs at least 2 links per vector, got {self.index_type!r}; "
                             "use e.g. 'HNSW32'")
        if self.refine is not None and ("Flat" in parts or any(p.startswith("HNSW") for p in parts)):
            # Caught before any embedding is read (the build refuses every other non-PQ factory too).
            raise nothing_to_refine(self.index_type)
        if self.doc_column == self.id_column:  # the saved index could not be loaded (one column renamed twice)
            raise ParamError("doc_column", f"names the id column '{self.id_column}' too; for rows that are their own "
                             "documents set doc_column: null")
        if self.model is not None:  # as `retrieve` checks it: else recorded, and only text queries failed on it
            resolve_model_path(self.model)

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        needed = {self.embedding_column: "embedding_column", self.id_column: "id_column"}
        if self.doc_column:
            needed[self.doc_column] = "doc_column"
        needed.update({c: "keep_columns" for c in self.keep_columns or []})
        return {"data": needed}

    def required_column_types(self) -> dict[str, dict[str, str]]:
        # A list id was refused as a repeated id over many lines (its repr); a list doc id cannot be excluded.
        ids = [self.id_column] + ([self.doc_column] if self.doc_column else [])
        return {"data": {c: "scalar" for c in ids}}

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        # Each vector is reported by its id: a repeated id would name two vectors as one neighbour, a null none.
        refuse_bad_id_column(inputs["data"], self.id_column)
        # Counted over the whole input from the footers: a null first vector failed inside polars (exit 1).
        refuse_nulls(inputs["data"], self.embedding_column, "a row with no vector cannot be indexed", kind="vector",
                     param="embedding_column")

    def output_schema(self, inputs):
        data = inputs["data"]
        keep = [self.id_column] + ([self.doc_column] if self.doc_column else []) + list(self.keep_columns or [])
        return {"faiss_id": pl.Int64, **{c: data.get(c) for c in keep}}

    # -- partitioned: train once on a sample, fill per partition, merge the inverted lists ------------

    def partitionable(self) -> bool:
        """Exact and IVF indexes merge (faiss `merge_from`); graph indexes (HNSW) are filled in one partition."""
        return mergeable_factory(self.index_type)

    def broadcast(self, ctx: Context, inputs: dict[str, Dataset]) -> dict:
        """The empty index trained on a seeded sample, and the calibration queries (one pass over the vectors)."""
        data = inputs["data"]
        n = data.num_rows
        first = next(data.iter_batches(1, columns=[self.embedding_column]))
        dim = series_to_vectors(first[self.embedding_column], "embedding_column", data.label).shape[1]
        if dim == 0:
            raise InputDataError(f"column '{self.embedding_column}' holds empty vectors", param="embedding_column")
        factory = auto_factory(n, dim) if self.index_type == "auto" else self.index_type
        refine = refine_for(self.index_type, factory, self.refine)
        index, calib, metric = prepare_index(lambda: _iter_vectors(data, self.embedding_column), n, dim, factory,
                                             self.metric, ctx.rng("index"), self.train_size, refine)
        return {"index": index, "calib": calib, "n": n, "dim": dim, "factory": factory, "metric": metric,
                "refine": refine}

    def map(self, partition: Partition, broadcast: dict) -> dict:
        """The partition's vectors encoded by the trained index (faiss `sa_encode`: list number + code per row).

        Plain uint8 arrays, not a filled index: they pickle without faiss's serialise copy, merge by
        list concatenation, and `finish` appends them to the index's inverted lists in row order
        (`add_sa_codes`), which gives the very lists (and bytes) of one sequential `add`.
        Indexes that cannot be filled from codes (HNSW, refine) are filled here, in their one partition.
        """
        import faiss

        exact = ExactTopK(broadcast["calib"], min(10, broadcast["n"]), broadcast["metric"])
        vectors = (series_to_vectors(b[self.embedding_column], "embedding_column")
                   for b in partition.iter_batches(65_536, columns=[self.embedding_column]))
        if not mergeable_factory(broadcast["factory"]):
            index = faiss.clone_index(broadcast["index"])
            add_vectors(index, vectors, broadcast["dim"], partition.base, exact)
            return {"index": index, "exact": exact}
        codes = encode_vectors(broadcast["index"], vectors, broadcast["dim"], partition.base, exact)
        return {"codes": codes, "first": partition.base, "rows": sum(len(c) for c in codes), "exact": exact}

    def merge(self, a: dict, b: dict) -> dict:
        """`b`'s encoded rows after `a`'s (consumes both; no copy of the codes)."""
        if a["first"] + a["rows"] != b["first"]:
            raise InputDataError(f"index partitions merged out of order (rows {a['first']}+{a['rows']} then "
                                 f"{b['first']}); this is an executor bug")
        a["codes"].extend(b["codes"])
        a["rows"] += b["rows"]
        a["exact"].merge(b["exact"])
        return a

    def finish(self, ctx: Context, state: dict | None, broadcast: dict, inputs: dict[str, Dataset]) -> pl.DataFrame:
        data = inputs["data"]
        n, dim, factory, metric = (broadcast[k] for k in ("n", "dim", "factory", "metric"))
        if state is None:
            raise InputDataError("the input has no vectors", param="embedding_column")
        index = state["index"] if "index" in state else fill_from_codes(broadcast["index"], state)
        info = finish_index(index, factory, metric, dim, n, state["exact"], self.recall_target, broadcast["refine"])
        info.update({"id_column": self.id_column, "doc_column": self.doc_column, "backend": self.backend,
                     "model": self.model, "embedding_column": self.embedding_column})
        # Each column once: one named twice (keep_columns [text, text] or [chunk_id]) failed in polars.
        keep = list(dict.fromkeys([self.id_column] + ([self.doc_column] if self.doc_column else [])
                                  + list(self.keep_columns or [])))
        mapping = (
            data.lazy().select(*keep).with_row_index("faiss_id")
            .with_columns(pl.col("faiss_id").cast(pl.Int64)).collect()
        )
        write_index_files(ctx.artefact_path(INDEX_FILE).parent, index, info, mapping)
        for key in ("factory", "metric", "dim", "vectors", "search_params", "calibrated_recall_at_10", "refine"):
            if key in info:
                ctx.record(key, info[key])
        ctx.record("index_bytes", ctx.artefact_path(INDEX_FILE).stat().st_size)
        return mapping

    @classmethod
    def example(cls):
        rng = np.random.default_rng(0)
        vectors = unit_rows(rng.standard_normal((64, 16)))
        from stages.embedding import vectors_to_series

        df = pl.DataFrame({"chunk_id": [f"d{i // 4}:{i % 4}" for i in range(64)],
                           "doc_id": [f"d{i // 4}" for i in range(64)]}).with_columns(
            vectors_to_series("embedding", vectors))
        return {}, {"data": df}
