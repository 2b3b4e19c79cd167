"""Flip mode: relabel rows in place at an exact rate, from the merged label pass; then stream the rows out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl

from pipeline.io import Dataset
from pipeline.stage import Context
from stages.noise.counts import choose_flips, json_value
from stages.noise.params import MATRIX_CONVENTION, check_stochastic
from stages.noise.rows import batch_rows, class_labels, class_positions, decorate, source_ids, transitions


def flip_matrix(stage: Any, classes: pl.Series, file: str | None) -> np.ndarray:
    """The requested transition matrix T (rows = clean class, each row sums to 1); `file`, the data's, is named
    where a parameter does not fit its classes."""
    k = classes.len()
    kind = stage.noise_kind
    if kind == "matrix":
        return check_stochastic("matrix", stage.matrix, k, file)
    rates = np.zeros(k)
    if isinstance(stage.rate, dict):
        rates[class_positions(classes, list(stage.rate), "rate", file)] = list(stage.rate.values())
    else:
        rates[:] = float(stage.rate)
    t = np.diag(1.0 - rates)
    idx = np.arange(k)
    if kind == "symmetric":
        t += (rates / (k - 1))[:, None] * (1.0 - np.eye(k))
    elif kind == "pairflip":
        t[idx, (idx + 1) % k] += rates
    else:  # mapping
        src = class_positions(classes, list(stage.mapping), "mapping", file)
        dst = class_positions(classes, list(stage.mapping.values()), "mapping", file)
        unmapped = np.setdiff1d(idx, src)
        t[unmapped, unmapped] = 1.0
        t[src, dst] += rates[src]
    return t


def flip_rows(stage: Any, ctx: Context, data: Dataset, broadcast: dict, clean_idx: np.ndarray,
              hashes: np.ndarray) -> Any:
    """Choose the flips, record them, and return the relabelled rows (a frame in memory, else batches)."""
    classes, class_rows, t = broadcast["classes"], broadcast["class_rows"], broadcast["matrix"]
    noisy_idx, cells = choose_flips(hashes, clean_idx, t, class_rows, ctx.seed, stage.id_column,
                                   broadcast["label"])
    del hashes
    _record(stage, ctx, classes, class_rows, t, cells)
    rows = batch_rows(data)

    def batches() -> Iterator[pl.DataFrame]:
        off = 0
        for batch in data.iter_batches(rows):
            end = off + batch.height
            noisy = noisy_idx[off:end]
            flipped = noisy != clean_idx[off:end]
            yield decorate(stage.label_column, batch, class_labels(classes, noisy), batch[stage.label_column],
                           flipped, "flipped", source_ids(stage, batch, off))
            off = end

    if data.frame is not None:
        parts = list(batches())
        return parts[0] if len(parts) == 1 else pl.concat(parts)
    return batches()


def _record(stage: Any, ctx: Context, classes: pl.Series, class_rows: np.ndarray, t: np.ndarray,
            cells: np.ndarray) -> None:
    requested = class_rows[:, None] * t
    flips_requested = class_rows * (1.0 - np.diag(t))
    flips_realised = cells.sum(axis=1) - np.diag(cells)
    ctx.write_side_output("transitions", transitions(classes, cells, requested))
    class_list = [json_value(c) for c in classes.to_list()]
    n = int(class_rows.sum())
    ctx.record("label_noise", {
        "mode": "flip", "noise": stage.noise_kind, "classes": class_list, "matrix_convention": MATRIX_CONVENTION,
        "requested_matrix": t.round(12).tolist(),
        "rows": n,
        "requested_noise_rate": float(flips_requested.sum() / n),
        "realised_noise_rate": float(flips_realised.sum() / n),
        "per_class": [
            {"class": c, "rows": int(class_rows[i]), "requested_rate": float(1.0 - t[i, i]),
             "requested_flips": float(flips_requested[i]), "realised_flips": int(flips_realised[i])}
            for i, c in enumerate(class_list)
        ],
    })
