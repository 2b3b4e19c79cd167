"""Exact counts for label noise: rounding, largest remainder, keyed draws, and who flips.

Pure NumPy over per-row hashes and class indices; nothing here reads a table. The hash-heavy loops
run in cache-sized chunks (SplitMix64 over 10M rows is memory-bound as whole-array temporaries and
about twice as fast in 256k-row pieces), with results identical to the whole-array formulas.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from pipeline.errors import InputDataError
from stages._hashing import _GOLDEN, _S11, mix64, stream_key, unit_interval

# Rows per chunk of the hash loops: a few MB of uint64 temporaries, which stay in cache.
CHUNK_ROWS = 1 << 18
# NumPy releases the GIL in these loops: chunks run on a few threads (each writes only its own slice).
THREADS = max(1, min(4, os.cpu_count() or 1))
_POOL: ThreadPoolExecutor | None = None


def over_chunks(fn: Callable[[int, int], Any], n: int) -> list[Any]:
    """fn(start, end) for every chunk of range(n), on a few threads; results in chunk order."""
    global _POOL
    bounds = [(s, min(s + CHUNK_ROWS, n)) for s in range(0, n, CHUNK_ROWS)]
    if len(bounds) < 2 or THREADS == 1:
        return [fn(s, e) for s, e in bounds]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(THREADS, thread_name_prefix="label-noise")
    return list(_POOL.map(lambda b: fn(*b), bounds))


def dense_counts(values: np.ndarray, lo: int, span: int) -> np.ndarray:
    """np.bincount(values - lo, minlength=span) for integers in [lo, lo + span), in cache-sized chunks
    on the hash loops' threads: np.bincount of a whole column held by polars (read-only) would
    first copy it, and run on one core."""
    wide = np.uint64 if values.dtype == np.uint64 else np.int64  # holds every value and `lo`

    def count(s: int, e: int) -> np.ndarray:
        part = values[s:e].astype(wide, copy=False)
        if lo:
            part = part - wide(lo)
        return np.bincount(part.astype(np.int64, copy=False), minlength=span)

    found = over_chunks(count, values.size)
    return np.sum(found, axis=0) if found else np.zeros(span, dtype=np.int64)


def json_value(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def uniform_index(h: np.ndarray, k: int) -> np.ndarray:
    """floor(u * k) for u = the top 53 bits of `h` as a fraction; integer arithmetic, exact, no float pass."""
    if k >= 1 << 11:
        return np.minimum((unit_interval(h) * k).astype(np.int64), k - 1)
    top = h >> _S11
    top *= np.uint64(k)
    top >>= np.uint64(53)
    return top.view(np.int64)


def keyed_words(ids: np.ndarray, key64: np.uint64, words: bool, out: np.ndarray | None = None) -> np.ndarray:
    """`stages._hashing.keyed(digest, key)` (SplitMix64 of digest + key) of one chunk of ids.

    `ids` holds digests, or with `words` the integer ids' words (`stages._hashing.id_words`), whose
    digest is word * _GOLDEN: the multiply happens here, in cache, instead of in a pass of its own.
    """
    if words:
        out = np.multiply(ids, _GOLDEN, out=out)
        out += key64
    else:
        out = np.add(ids, key64, out=out)
    return mix64(out, inplace=True)


def keyed_chunked(digest: np.ndarray, key: int, out: np.ndarray | None = None, words: bool = False) -> np.ndarray:
    """`stages._hashing.keyed(digest, key)` over a whole array, computed chunk by chunk (see `keyed_words`)."""
    out = np.empty(digest.size, dtype=np.uint64) if out is None else out
    k = np.uint64(key & ((1 << 64) - 1))
    over_chunks(lambda s, e: keyed_words(digest[s:e], k, words, out=out[s:e]), digest.size)
    return out


def round_half_up(x: float) -> int:
    """floor(x + 0.5): the rounding every count here uses (Python's round() rounds half to even)."""
    return math.floor(x + 0.5)


def largest_remainder(total: int, weights: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Integers summing to `total`, each within one of total * w / sum(w); ties broken by `tiebreak`."""
    weights = np.asarray(weights, dtype=np.float64)
    out = np.zeros(weights.size, dtype=np.int64)
    if total == 0 or weights.sum() <= 0:
        return out
    exact = total * weights / weights.sum()
    out = np.floor(exact).astype(np.int64)
    left = total - int(out.sum())
    if left > 0:
        order = np.lexsort((tiebreak, -(exact - out)))
        out[order[:left]] += 1
    return out


def hash_collision(id_column: str | None, rows: np.ndarray, file: str | None, input_name: str = "data") -> InputDataError:
    """Two rows whose keyed hashes are equal where the draw must order them. `LabelNoise.check_input_data` refused
    repeated ids before any draw, and an id's digest is unique for integer ids and row positions, so this is two
    distinct (non-integer) ids whose 64-bit digests collide: blaming repeated ids would send the user looking for
    repeats that are not there. The digest does not depend on the seed, so another seed would not help."""
    first, second = (int(r) for r in np.sort(rows)[:2])
    return InputDataError(
        f"input '{input_name}' column '{id_column}' holds two distinct ids whose 64-bit digests collide (rows "
        f"{first:,} and {second:,}, counting from 0; about one chance in 1.8e19 a pair), so the draws keyed by id "
        "cannot order them", param="id_column", file=file,
        hint="change one of those two ids, or set id_column: null to key by row position",
    )


def tied_rows(rows: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Two of `rows` whose hashes `h` are equal (there must be such a pair), for `hash_collision`."""
    order = np.argsort(h, kind="stable")
    at = int(np.flatnonzero(h[order][1:] == h[order][:-1])[0])
    return rows[order[at : at + 2]]


def flip_plan(t: np.ndarray, class_rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: flips, and flips per target class (largest remainder, seeded tie-break); both exact."""
    k = t.shape[0]
    tiebreak = mix64(np.arange(k * k, dtype=np.uint64) ^ np.uint64(stream_key(seed, "label_noise", "cells")))
    n_flip = np.zeros(k, dtype=np.int64)
    per_target = np.zeros((k, k), dtype=np.int64)
    for i in range(k):
        n_i = int(class_rows[i])
        off_diag = t[i].copy()
        off_diag[i] = 0.0
        n_flip[i] = min(n_i, round_half_up(n_i * off_diag.sum()))
        per_target[i] = largest_remainder(int(n_flip[i]), off_diag, tiebreak[i * k : (i + 1) * k])
    return n_flip, per_target


def _candidates(hashes: np.ndarray, fraction: float) -> np.ndarray:
    """Rows whose hash is below the `fraction` quantile of the hash range (a superset to choose within)."""
    if fraction >= 1.0:
        return np.arange(hashes.size)
    return np.flatnonzero(hashes < np.uint64(min(int(fraction * 2.0**64), (1 << 64) - 1)))


def choose_flips(hashes: np.ndarray, clean_idx: np.ndarray, t: np.ndarray, class_rows: np.ndarray, seed: int,
                 id_column: str | None, file: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Noisy class per row, and the realised K x K cell counts (exact, see the package docstring).

    Within class i the n_i flips are the rows with the smallest hashes, and in hash order they fill
    the target cells in class order. Hashes are uniform, so those rows lie below a hash threshold a
    little above the largest flip fraction: only the rows below it are grouped and ranked. When a
    class has too few rows below the threshold (bad luck, or rates near 1), it is redone on all rows,
    so the threshold changes the cost, never the result.
    """
    k = t.shape[0]
    noisy = clean_idx.copy()
    cells = np.diag(class_rows).astype(np.int64)
    n_flip, per_target = flip_plan(t, class_rows, seed)
    if not n_flip.any():
        return noisy, cells
    share = n_flip / np.maximum(class_rows, 1)
    # Six standard deviations of a class's count below the threshold, plus a little: almost never short.
    slack = 6.0 * np.sqrt(share * (1 - share) / np.maximum(class_rows, 1)) + 1e-3
    fraction = float((share + slack)[n_flip > 0].max())
    todo = [i for i in range(k) if n_flip[i]]
    short = _assign_flips(hashes, clean_idx, _candidates(hashes, fraction), todo, n_flip, per_target, noisy,
                          complete=fraction >= 1.0, where=(id_column, file))
    if short:
        rows = np.flatnonzero(np.isin(clean_idx, sorted(short)))
        _assign_flips(hashes, clean_idx, rows, sorted(short), n_flip, per_target, noisy, complete=True,
                      where=(id_column, file))
    cells += per_target
    cells[np.arange(k), np.arange(k)] -= n_flip
    return noisy, cells


def _assign_flips(hashes: np.ndarray, clean_idx: np.ndarray, rows: np.ndarray, todo: list[int], n_flip: np.ndarray,
                  per_target: np.ndarray, noisy: np.ndarray, complete: bool,
                  where: tuple[str | None, str | None]) -> set[int]:
    """Flip the chosen rows of each class in `todo` among `rows` (all of the class's rows when `complete`,
    else those below a hash threshold); return the classes `rows` held too few of to decide. `where` is the
    (id column, file) a hash collision is reported in."""
    k = per_target.shape[0]
    cls = clean_idx[rows]
    # Class indices fit in 16 bits for any realistic K, where NumPy's stable sort is a radix sort.
    order = np.argsort(cls.astype(np.uint16) if k < 65536 else cls, kind="stable")
    rows, h = rows[order], hashes[rows[order]]
    bounds = np.searchsorted(cls[order], np.arange(k + 1), side="left")
    short: set[int] = set()
    for i in todo:
        rows_i, h_i = rows[bounds[i] : bounds[i + 1]], h[bounds[i] : bounds[i + 1]]
        n_i, flips = h_i.size, int(n_flip[i])
        if not complete and n_i <= flips:  # the threshold left too few of this class: redo on all rows
            short.add(i)
            continue
        # Only the cut points of the hash order matter (who flips, and where one target cell ends and
        # the next begins), so partitions around those points replace a full sort. Equal hashes across a
        # cut would leave the order to decide: refused (repeated ids are refused before, by
        # `LabelNoise.check_input_data`, so only a collision of two ids' 64-bit digests gets here).
        tie = False
        if flips < n_i:
            chosen = np.argpartition(h_i, [flips - 1, flips])
            tie = h_i[chosen[flips - 1]] == h_i[chosen[flips]]
            chosen = chosen[:flips]
        else:
            chosen = np.arange(n_i)
        cuts = np.cumsum(per_target[i])[:-1]
        cuts = np.unique(cuts[(cuts > 0) & (cuts < flips)])
        if cuts.size:
            chosen = chosen[np.argpartition(h_i[chosen], np.unique(np.concatenate([cuts - 1, cuts])))]
            ranked = h_i[chosen]
            tie = tie or bool(np.any(ranked[cuts - 1] == ranked[cuts]))
        if tie:
            raise hash_collision(where[0], tied_rows(rows_i, h_i), where[1])
        noisy[rows_i[chosen]] = np.repeat(np.arange(k, dtype=noisy.dtype), per_target[i])
    return short
