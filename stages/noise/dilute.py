"""Dilute mode's rows: every data row as it is, then alpha * N added rows, cycle by cycle over the pool.

Each added row's label is a function of (seed, the pool row's id digest, the cycle) only, drawn
chunk by chunk (see `stages.noise.counts`); the pool is read once (`stages.noise.pool`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl

import stages.noise.counts as counts
from pipeline.io import Dataset
from pipeline.stage import Context
from stages._hashing import _MIX1, _MIX2, _S11, mix64, stream_key, unit_interval
from stages.noise.counts import json_value, keyed_words, uniform_index
from stages.noise.dilute_plan import Dilution
from stages.noise.params import MATRIX_CONVENTION
from stages.noise.pool import PoolReplay
from stages.noise.rows import as_id_dtype, class_labels, decorate, source_ids, transitions

_S53 = np.uint64(53)


def _draw_chunk(stage: Any, h: np.ndarray, true_idx: np.ndarray, confusing: np.ndarray | None, k: int,
                conf_cdf: np.ndarray | None) -> np.ndarray:
    """Noisy label index per added row from its keyed hash `h` (`true_idx` is -1 out of distribution)."""
    known = true_idx >= 0
    all_known = bool(known.all())
    if stage.exclude_true and all_known:
        j = uniform_index(h, k - 1)
        j += j >= true_idx
    elif stage.exclude_true:  # out-of-distribution rows have no true class to exclude
        others = uniform_index(h, k - 1)
        others += others >= true_idx
        j = np.where(known, others, uniform_index(h, k))
    else:
        j = uniform_index(h, k)
    if stage.noise_kind == "structured":
        h2 = mix64(h ^ _MIX2)
        take = unit_interval(h2) < stage.delta
        u3 = unit_interval(mix64(h2 ^ _MIX1))
        row = np.where(known, true_idx, 0)
        # Inverse-CDF draw from row `row` of C, vectorised: rows are laid end to end as row + cdf.
        drawn = np.searchsorted(conf_cdf, row + u3, side="right") - row * k
        drawn = np.clip(drawn, 0, k - 1)
        if confusing is not None:
            drawn = np.where(known, drawn, confusing)
        j = np.where(take, drawn, j)
    return j


def draw(stage: Any, run: Dilution, digest: np.ndarray, true_idx: np.ndarray, confusing: np.ndarray | None,
         key: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy label index per added row, and whether it differs from the true class (always, out of
    distribution); counts the realised transitions into `run` as it goes, chunk by chunk."""
    k = run.k
    drawn = np.empty(digest.size, dtype=np.int64)
    is_noisy = np.ones(digest.size, dtype=bool) if run.ood else np.empty(digest.size, dtype=bool)  # set per chunk
    key64 = np.uint64(key & ((1 << 64) - 1))
    # Uniform over all k classes (the common case): `uniform_index` computed in place, straight into `drawn`.
    plain = stage.noise_kind != "structured" and not stage.exclude_true and k < 1 << 11

    def chunk(s: int, e: int) -> np.ndarray:
        h = keyed_words(digest[s:e], key64, run.words)  # `keyed(digest, key)`, one cache-sized chunk at a time
        j = drawn[s:e]
        if plain:
            h >>= _S11
            h *= np.uint64(k)
            np.right_shift(h, _S53, out=j.view(np.uint64))
        else:
            near = confusing[s:e] if confusing is not None else None
            j[:] = _draw_chunk(stage, h, true_idx[s:e], near, k, run.conf_cdf)
        if run.ood:
            return np.bincount(j, minlength=k)
        true = true_idx[s:e]
        np.not_equal(j, true, out=is_noisy[s:e])
        cell = h.view(np.int64)  # the hashes are spent: their buffer takes each row's (true, drawn) cell
        np.multiply(true, k, out=cell)
        cell += j
        return np.bincount(cell, minlength=k * k)

    # Integer counts: their sum does not depend on which thread ran which chunk.
    for found in counts.over_chunks(chunk, digest.size):
        if run.ood:
            run.ood_counts += found
        else:
            run.counts += found.reshape(k, k)
    return drawn, is_noisy


def added_rows(stage: Any, run: Dilution, batch: pl.DataFrame, off: int, keep: np.ndarray | None, key: int,
               cycle: int) -> pl.DataFrame | None:
    """The added rows drawn from one pool batch in one cycle (`keep`: the partial cycle's picks)."""
    end = off + batch.height
    dig, tru = run.digest[off:end], run.true_idx[off:end]
    near = run.confusing[off:end] if run.confusing is not None else None
    src_ids = source_ids(stage, batch, off)
    if keep is not None:
        batch, dig, tru, src_ids = batch.filter(keep), dig[keep], tru[keep], src_ids.filter(keep)
        near = near[keep] if near is not None else None
    if batch.height == 0:
        return None
    schema, out_columns, label = run.schema, run.data.columns, stage.label_column
    drawn, is_noisy = draw(stage, run, dig, tru, near, key)
    noisy = class_labels(run.classes, drawn)
    if run.ood:
        clean = pl.Series(label, [None] * batch.height, dtype=schema[label])
        # The id is replaced by a fresh one below (its source's, converted by `as_id_dtype`, is kept in source_id).
        body = batch.select([pl.col(c) if c == stage.id_column else pl.col(c).cast(schema[c])
                             for c in out_columns if c != label])
        body = body.with_columns(clean.alias(label)).select(out_columns)
    else:
        clean = batch[label]  # the pool is the data: its label is the truth
        body = batch.select(out_columns)
    if stage.id_column:
        if run.next_int_id is not None:
            # polars' allocator reuses its memory; a fresh NumPy array of this size costs page faults.
            new_ids = pl.int_range(run.next_int_id, run.next_int_id + batch.height, dtype=pl.Int64,
                                   eager=True).cast(schema[stage.id_column])
            run.next_int_id += batch.height
        else:
            new_ids = _suffixed(src_ids, f"{'~s' if run.ood else '~n'}{cycle}")
        body = body.with_columns(new_ids.alias(stage.id_column))
    # An added row is 'added' even when its drawn label happens to be the true one.
    return decorate(label, body, noisy, clean, is_noisy, "added", as_id_dtype(stage, src_ids, schema, run.pool.label))


def _suffixed(ids: pl.Series, suffix: str) -> pl.Series:
    """An added row's id: its source's id with the cycle's suffix, as text, or as bytes for a Binary id column
    (whose ids need not be UTF-8, so a cast to text is refused)."""
    if ids.dtype != pl.Binary:
        return ids.cast(pl.String) + suffix
    import pyarrow as pa
    import pyarrow.compute as pc

    large = pa.large_binary()
    joined = pc.binary_join_element_wise(pc.cast(ids.to_arrow(), large), pa.scalar(suffix.encode(), large),
                                         pa.scalar(b"", large))
    return pl.Series(ids.name, joined, dtype=pl.Binary)


def dilute_rows(stage: Any, ctx: Context, data: Dataset, source: Dataset | None, broadcast: dict,
                class_idx: np.ndarray, digest: np.ndarray, max_id: int | None) -> Any:
    """The step's output: a frame for in-memory inputs, else a generator of batches (bounded memory)."""
    run = Dilution(stage, ctx, data, source, broadcast, class_idx, digest, max_id)
    pool = PoolReplay(run.pool, run.pool_rows)
    if run.ood:  # the source is read (and spilled) once here: its digests decide the partial cycle
        run.scan_source(stage, pool.first_pass())
    run.choose_partial_cycle(stage)
    batches = _batches(stage, run, pool)
    if data.frame is not None and run.pool.frame is not None:
        return pl.concat(list(batches), how="vertical", rechunk=False)
    return batches


def _batches(stage: Any, run: Dilution, pool: PoolReplay) -> Iterator[pl.DataFrame]:
    """Every data row as it is ('clean'), then the added rows, cycle by cycle over the pool."""
    try:
        off = 0
        data_batches = run.data.iter_batches(run.rows) if run.ood else pool.first_pass()
        for batch in data_batches:
            lab = batch[stage.label_column]
            yield decorate(stage.label_column, batch, lab, lab, pl.repeat(False, batch.height, eager=True), "clean",
                           source_ids(stage, batch, off))
            off += batch.height
        for cycle in range(run.cycles):
            key = stream_key(run.ctx.seed, "label_noise", "dilute", cycle)
            off = 0
            for batch in pool.replay():
                keep = run.pick[off : off + batch.height] if cycle == run.full_cycles else None  # partial cycle
                out = added_rows(stage, run, batch, off, keep, key, cycle)
                off += batch.height
                if out is not None:
                    yield out
            run.count_classes()
        record(stage, run)
    finally:
        pool.close()


def record(stage: Any, run: Dilution) -> None:
    """The transitions side output and the realised-noise record, once every row is out."""
    counts, n, added = run.counts, run.n, run.added
    run.ctx.write_side_output("transitions", transitions(run.classes, counts, None,
                                                         run.ood_counts if run.ood else None))
    realised_noisy = int(counts.sum() - np.trace(counts) + run.ood_counts.sum())
    in_dist_added = int(counts.sum() - run.class_rows.sum())
    stats = {
        "mode": "dilute", "noise": stage.noise_kind, "classes": [json_value(c) for c in run.classes.to_list()],
        "clean_rows": n, "pool_rows": run.p, "source": "source input (out of distribution)" if run.ood else "data",
        "alpha_requested": float(stage.alpha), "added_rows_requested": float(stage.alpha * n),
        "added_rows_realised": added, "alpha_realised": added / n,
        "uses_per_pool_row": [run.full_cycles, run.full_cycles + (1 if run.remainder else 0)],
        "exclude_true": bool(stage.exclude_true),
        "noisy_fraction_realised": realised_noisy / (n + added) if n + added else 0.0,
    }
    if not run.ood and in_dist_added:
        stats["added_label_equals_true_fraction"] = float((np.trace(counts) - run.class_rows.sum()) / in_dist_added)
    if run.structured:
        stats["delta"] = float(stage.delta)
        stats["confusion_matrix"] = run.conf.round(12).tolist()
        stats["matrix_convention"] = MATRIX_CONVENTION
    run.ctx.record("label_noise", stats)
