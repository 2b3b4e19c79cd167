"""The refine tier: IVF-PQ candidates re-ranked against scalar-quantised copies of the vectors.

PQ codes alone cap recall@10 however many lists are probed (about 0.84 at PQ192 on the bench's
embedding-like mixture): the quantisation error ranks near neighbours wrongly. faiss `IndexRefine`
keeps a second, finer code per row (8-bit: one byte per dimension; fp16: two) and re-scores the
k x k_factor best PQ candidates with it. Both codes of a row come out of one `sa_encode` of the
refined index (base code, then refine code), so partitions ship and merge them as they do base codes
alone, and `add_codes` appends each half to its own index in row order: the same bytes as one
sequential `add` of every row.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import ParamError

REFINE_KINDS = {"sq8": "QT_8bit", "fp16": "QT_fp16"}
# PQ candidates re-ranked per neighbour asked for: calibration takes the first of these that reaches
# the recall target (nprobe calibrated at each), unless `retrieve` sets its own k_factor.
REFINE_K_FACTORS = (4, 8, 16, 32, 64)


def _faiss():
    import faiss

    return faiss


def refine_for(index_type: str, factory: str, refine: str | None) -> str | None:
    """The refine kind to build: none where 'auto' chose an index that already stores whole vectors."""
    if refine is None or (index_type == "auto" and ",PQ" not in factory):
        return None
    return refine


def with_refine(base, kind: str, factory: str, dim: int, metric_code: int):
    """`base` (untrained) wrapped in an IndexRefine with a `kind` scalar quantiser of the same metric."""
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(base)
    if ivf is None or ivf.code_size >= 4 * dim or is_refined(base):
        raise nothing_to_refine(factory)
    refine = faiss.IndexScalarQuantizer(dim, getattr(faiss.ScalarQuantizer, REFINE_KINDS[kind]), metric_code)
    index = faiss.IndexRefine(base, refine)
    base.this.disown()
    refine.this.disown()
    index.own_fields = True
    index.k_factor = REFINE_K_FACTORS[0]
    return index


def nothing_to_refine(factory: str) -> ParamError:
    """The error for `refine` on a factory without compressed IVF codes (checked in `validate` and at build)."""
    return ParamError("refine", f"re-ranks compressed IVF codes; {factory!r} has none to refine; "
                                "use an IVF-PQ factory such as 'IVF4096,PQ48x8', or refine: null")


def is_refined(index) -> bool:
    faiss = _faiss()
    return isinstance(faiss.downcast_index(index), faiss.IndexRefine)


def add_codes(index, codes: np.ndarray, first: int) -> None:
    """Append rows' `sa_encode` codes to `index` under row numbers from `first` on."""
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(index) is not None
    ids = np.arange(first, first + len(codes), dtype=np.int64)
    if not is_refined(index):
        index.add_sa_codes(codes, ids if ivf else None)
        return
    index = faiss.downcast_index(index)
    base, refine = faiss.downcast_index(index.base_index), faiss.downcast_index(index.refine_index)
    split = base.sa_code_size()
    base.add_sa_codes(np.ascontiguousarray(codes[:, :split]), ids)
    refine.add_sa_codes(np.ascontiguousarray(codes[:, split:]), None)
    index.ntotal = base.ntotal
