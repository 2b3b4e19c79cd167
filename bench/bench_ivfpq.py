"""IVF-PQ at 2M x 384 (issue #12): the partitioned `index` stage vs one faiss process, and recall@10.

The partitioned `index` stage builds an IVF-PQ index from Parquet; the baseline is one faiss process
(index_factory + train + add on the matrix read whole). Both sides alternate in fresh processes:
time, CPU seconds, peak RSS, and recall@10 against exact search on held-out queries after nprobe
calibration. Vectors: a seeded, documented mixture with the structure of text embeddings (see
`_mixture`). About 20 minutes at full scale on a quiet 2-core machine, so it is a module of its
own: `python -m bench.run_all --only ivfpq`, or `python -m bench.bench_ivfpq [quick|medium|full]`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_retrieval import _row
from bench.common import in_fresh_process, print_rows

SCALES = {"quick": 20_000, "medium": 200_000, "full": 2_000_000}

MIXTURE = dict(topics=2_000, centre_rank=64, local_rank=16, local_scale=0.35, noise=0.08)
IVFPQ_ROW_GROUP = 50_000


def _mixture(dim: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    k, r, q = MIXTURE["topics"], MIXTURE["centre_rank"], MIXTURE["local_rank"]
    spectrum = (np.arange(1, r + 1) ** -0.5).astype(np.float32)
    centres = (rng.standard_normal((k, r)).astype(np.float32) * spectrum) @ rng.standard_normal((r, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bases = np.linalg.qr(rng.standard_normal((k, dim, q)))[0].astype(np.float32)  # (k, dim, q) orthonormal
    weights = 1.0 / np.arange(1, k + 1) ** 0.8
    return {"centres": centres, "bases": bases, "weights": weights / weights.sum()}


def _mixture_draw(mix: dict, m: int, rng: np.random.Generator) -> np.ndarray:
    dim, q = mix["bases"].shape[1:]
    topic = rng.choice(len(mix["weights"]), m, p=mix["weights"])
    local = rng.standard_normal((m, q)).astype(np.float32) * (MIXTURE["local_scale"] / np.sqrt(q))
    v = mix["centres"][topic] + np.einsum("mdq,mq->md", mix["bases"][topic], local)
    v += rng.standard_normal((m, dim), dtype=np.float32) * (MIXTURE["noise"] / np.sqrt(dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _ivfpq_data(n: int, dim: int, folder: str, queries: int, seed: int = 0) -> dict:
    """The Parquet collection, held-out queries (fresh draws, not indexed) and their exact top 10."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    mix = _mixture(dim, seed)
    rng = np.random.default_rng(seed + 1)
    path, writer = f"{folder}/vectors.parquet", None
    for start in range(0, n, IVFPQ_ROW_GROUP):
        m = min(IVFPQ_ROW_GROUP, n - start)
        ids = np.arange(start, start + m)
        table = pa.table({"chunk_id": pa.array(ids.astype(str)), "doc_id": pa.array((ids // 8).astype(str)),
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(_mixture_draw(mix, m, rng).reshape(-1)), dim)})
        writer = writer or pq.ParquetWriter(path, table.schema, compression="none")
        writer.write_table(table)
    writer.close()
    q = _mixture_draw(mix, queries, np.random.default_rng(seed + 2))
    np.save(f"{folder}/queries.npy", q)
    np.save(f"{folder}/truth.npy", _exact_top10(path, q))
    return {"path": path}


def _read_matrix(path: str, limit: int | None = None) -> np.ndarray:
    """The embedding column as one float32 matrix, filled row group by row group (no Arrow copy of it all)."""
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    n = min(f.metadata.num_rows, limit or f.metadata.num_rows)
    out, at = None, 0
    for g in range(f.num_row_groups):
        if at >= n:
            break
        col = f.read_row_group(g, columns=["embedding"]).column(0).combine_chunks()
        v = col.flatten().to_numpy().reshape(len(col), -1)[: n - at]
        out = np.empty((n, v.shape[1]), np.float32) if out is None else out
        out[at : at + len(v)] = v
        at += len(v)
    return out


def _exact_top10(path: str, queries: np.ndarray, limit: int | None = None) -> np.ndarray:
    import faiss
    import pyarrow.parquet as pq

    heap = faiss.ResultHeap(len(queries), 10, keep_max=True)
    offset = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=IVFPQ_ROW_GROUP, columns=["embedding"]):
        v = batch.column(0).flatten().to_numpy().reshape(len(batch), -1)[: None if limit is None else max(0, limit - offset)]
        if not len(v):
            break
        heap.add_result(queries @ v.T, np.arange(offset, offset + len(v), dtype=np.int64)[None, :].repeat(len(queries), 0))
        offset += len(v)
    heap.finalize()
    return heap.I


def _recall10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(found, truth)]))


def _nprobe_for(index, queries: np.ndarray, truth: np.ndarray, target: float) -> tuple[int, float]:
    import faiss

    nprobe = 1
    while True:
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
        recall = _recall10(index.search(queries, 10)[1], truth)
        if recall >= target or nprobe >= faiss.extract_index_ivf(index).nlist:
            return nprobe, recall
        nprobe *= 2


# The refine tier (issue #12): the same IVF-PQ index re-ranking its candidates on 8-bit copies.
REFINE = "sq8"
REFINE_FACTORY = ",Refine(SQ8)"  # faiss's own spelling of the same index, for the baseline


def _ivfpq_stage(path: str, out_dir: str, factory: str, train_size: int, refine: str | None = None) -> dict:
    from stages.retrieval import BuildIndex

    t0, c0 = time.perf_counter(), time.process_time()
    result = BuildIndex(index_type=factory, train_size=train_size, refine=refine).execute(path, workdir=out_dir)
    return {"s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "stats": result.stats}


def _ivfpq_direct(path: str, factory: str, train_size: int, seed: int) -> dict:
    """The tightest one-process build: the matrix read whole (3 GB at 2M x 384), train on a sample, add."""
    import faiss

    t0, c0 = time.perf_counter(), time.process_time()
    vectors = _read_matrix(path)
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), min(train_size, len(vectors)), replace=False))
    index.train(np.ascontiguousarray(vectors[rows]))
    index.add(vectors)
    return {"s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "ntotal": index.ntotal}


def _ivfpq_judge(index_dir: str, queries_path: str, truth_path: str, target: float) -> dict:
    """nprobe calibrated on half the held-out queries, recall judged on the other half; also at the stage's own nprobe.

    A refined index keeps the stage's k_factor throughout (only nprobe is re-calibrated here).
    """
    import json

    import faiss

    index = faiss.read_index(f"{index_dir}/index.faiss")
    q, truth = np.load(queries_path), np.load(truth_path)
    half = len(q) // 2
    params = json.loads(Path(f"{index_dir}/index.json").read_text())["search_params"]
    for key, value in params.items():
        faiss.ParameterSpace().set_index_parameter(index, key, value)
    own = params.get("nprobe", 1)
    own_recall = _recall10(index.search(q[half:], 10)[1], truth[half:])
    nprobe, calib_recall = _nprobe_for(index, q[:half], truth[:half], target)
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    return {"nprobe": nprobe, "calibration_recall": calib_recall, "own_nprobe": own, "own_recall": own_recall,
            "k_factor": params.get("k_factor_rf"),
            "held_out_recall": _recall10(index.search(q[half:], 10)[1], truth[half:])}


def _pair(folder: str, path: str, factory: str, train_size: int, runs: int, refine: str | None,
          target: float) -> tuple:
    """Ours and faiss alternated in fresh processes, then ours judged on the held-out queries."""
    tag = refine or "pq"
    ours, theirs = [], []
    for i in range(runs):
        ours.append(in_fresh_process(_ivfpq_stage, path, f"{folder}/ours-{tag}-{i}", factory, train_size, refine))
        theirs.append(in_fresh_process(_ivfpq_direct, path, factory + (REFINE_FACTORY if refine else ""), train_size, 0))
    judged = in_fresh_process(_ivfpq_judge, f"{folder}/ours-{tag}-0", f"{folder}/queries.npy", f"{folder}/truth.npy",
                              target)[2]
    return ours, theirs, judged


def _pair_row(n: int, dim: int, factory: str, refine: str | None, pair: tuple, queries: int, notes: str) -> dict:
    ours, theirs, judged = pair
    o_s, t_s = [o[2]["s"] for o in ours], [t[2]["s"] for t in theirs]
    o_cpu, t_cpu = [o[2]["cpu_s"] for o in ours], [t[2]["cpu_s"] for t in theirs]
    stats = ours[0][2]["stats"]
    cpu_ratio = float(np.median(o_cpu) / np.median(t_cpu))
    tier = f", refine {refine} (k_factor {judged['k_factor']})" if refine else ""
    base = "faiss index_factory" + (f" '{factory}{REFINE_FACTORY}'" if refine else "")
    return _row("retrieval", f"index build {n:,} x {dim} ({factory}{tier}), partitioned stage from Parquet", "s",
                float(np.median(o_s)), f"{base} + train + add, one process, matrix read whole",
                float(np.median(t_s)), "ours/baseline time (lower is better)", max(o[1] for o in ours),
                max(t[1] for t in theirs),
                f"{len(ours)} alternated fresh-process runs: ours {[round(x, 1) for x in o_s]} s / "
                f"{[round(x, 1) for x in o_cpu]} CPU-s, faiss {[round(x, 1) for x in t_s]} s / "
                f"{[round(x, 1) for x in t_cpu]} CPU-s (CPU ratio {cpu_ratio:.3f}); {stats.get('partitions')} "
                f"partitions; recall@10 vs exact, held-out queries (fresh draws, not indexed): "
                f"{judged['held_out_recall']:.3f} at nprobe {judged['nprobe']} (calibrated on {queries // 2} other "
                f"queries: {judged['calibration_recall']:.3f}), {judged['own_recall']:.3f} at the stage's own nprobe "
                f"{judged['own_nprobe']}; {notes}", held_out_recall_at_10=round(judged["held_out_recall"], 4),
                own_recall_at_10=round(judged["own_recall"], 4), nprobe=judged["nprobe"],
                cpu_time_ratio=round(cpu_ratio, 3), stage_stats=stats)


def run_ivfpq(n: int, dim: int = 384, target: float = 0.9) -> list[dict]:
    """Partitioned `index` build vs one faiss process, same IVF-PQ factory, alternated in fresh processes;
    then the same with the refine tier (ours: refine 'sq8'; faiss: the same factory + Refine(SQ8))."""
    big = n >= 200_000  # the smoke scale runs each side once and trains on less
    queries, runs = (2_000, 2) if big else (400, 1)
    with tempfile.TemporaryDirectory(prefix="bench-ivfpq-") as folder:
        t0 = time.perf_counter()
        data = in_fresh_process(_ivfpq_data, n, dim, folder, queries)[2]
        data_s = time.perf_counter() - t0
        nlist = max(16, int(2 ** round(np.log2(np.sqrt(n)))))  # ~sqrt(n): 2048 at 2M (faiss: 1-16 sqrt(n))
        # One fixed code, no search over code sizes: with the refine tier the PQ codes only nominate candidates
        # (k_factor x k of them) and the 8-bit copies rank them, so a small code reaches the target; the PQ-only
        # row shows what the same code gives without refine. (A ladder PQ48/96/192 trained on 50k rows each took
        # 15-35 minutes before any build and was dropped.)
        m = 48 if big else 16
        factory, train_size = f"IVF{nlist},PQ{m}x8", min(100_000, n) if big else 5_000
        plain = _pair(folder, data["path"], factory, train_size, runs, None, target)
        refined = _pair(folder, data["path"], factory, train_size, runs, REFINE, target)
    notes = (f"PQ{m}x8 fixed (no code-size search); vectors: seeded mixture {MIXTURE}, made in {data_s:.0f}s")
    return [_pair_row(n, dim, factory, None, plain, queries, notes),
            _pair_row(n, dim, factory, REFINE, refined, queries, notes)]


def run(scale: str = "full") -> list[dict]:
    return run_ivfpq(SCALES[scale])


if __name__ == "__main__":
    print_rows(run(sys.argv[1] if len(sys.argv) > 1 else "full"))
