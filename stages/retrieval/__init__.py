"""RETRO-style retrieval: chunk documents, index chunk embeddings with FAISS, query k nearest neighbours.

RETRO (Borgeaud et al. 2021) cuts a corpus into 64-token chunks, embeds them, and asks a nearest-
neighbour database for the neighbours of every chunk; the same database answers "is this test chunk
(nearly) in the training set?". Three stages build that database (`chunk`, `index`, `retrieve`, with
`embed` from stages.embedding in between) and `Index` serves it to library code:

    Index.load("data/runs/retrieval/index").search(["how do I open a file?"], k=5)

The index type follows the size of the collection unless a FAISS factory string is given: exact
search while brute force is cheap, IVF-Flat as it grows (nprobe calibrated at build time against
exact search on sampled queries, to a recall target), IVF-PQ when raw vectors no longer fit.

Modules: `chunk.py` (the `chunk` stage and `chunk_texts`, the same cut for a list of texts), `index.py` (FAISS index building, calibration, `Index`),
`build.py` (the `index` stage), `retrieve.py` (the `retrieve` stage).
"""

from stages.retrieval.build import BuildIndex
from stages.retrieval.chunk import Chunk, chunk_texts
from stages.retrieval.index import (
    INDEX_FILE,
    INDEX_IDS_FILE,
    INDEX_META_FILE,
    Index,
    auto_factory,
    build_index,
    calibrate,
    write_index_files,
)
from stages.retrieval.retrieve import Retrieve

__all__ = ["INDEX_FILE", "INDEX_IDS_FILE", "INDEX_META_FILE", "BuildIndex", "Chunk", "Index", "Retrieve",
           "auto_factory", "build_index", "calibrate", "chunk_texts", "write_index_files"]
