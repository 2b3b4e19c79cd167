"""`Context.join_rows` on Ray: a function of row pairs computed where the rows' values meet, on the workers.

Dedup verifies each candidate pair on both rows' shingle sets. `gather_rows` brings the sets to the
driver, which then holds and compares every candidate row's set: at 1 TB with 10% near-copies about
5e7 rows, the step's serial part (docs/scaling.md, "what breaks first", item 1). Here the sets never
reach the driver. One task per partition holding a named row makes those rows' values once (`rows_fn`)
and returns one part per group of pairs that needs some (`pipeline.row_pass.plan_join`); one task per
group takes its parts as arguments, so they go worker to worker, and runs `pair_fn` on its pairs. The
driver sends row numbers and receives `pair_fn`'s values, one per pair.

The driver waits on the partition tasks' statuses first, so a refusal there is the error the user sees;
a group task whose part is missing (its source failed) skips. Each partition's values made so far stay in
the object store (until `finish` ends) for the next join with the same function, which reads a partition
again only for the rows they lack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import ray

from pipeline.executors.ray_tasks import RETURNED_ERRORS, _enter, _get, _pack_error, _unpack_error
from pipeline.row_pass import join_group, plan_join, source_parts, source_values

# Groups of pairs: two per CPU, at most 64. Each partition task has one return per group it feeds, so the
# driver owns up to partitions x groups refs (256 K for a 1 TB corpus in 4,000 partitions); at 1 TB with 10%
# near-copies a group then holds the sets of ~1/64 of 5e7 rows, ~1.6 GB.
GROUPS_PER_CPU, MAX_GROUPS = 2, 64


def _rows_task(rows_fn: Callable, source, extra: Any, cwd: str, cached: tuple | None) -> tuple:
    """(status, the values of every row of the partition made so far, then one part per group the source feeds)."""
    _enter(cwd)
    try:
        values = source_values(rows_fn, source, extra, cached)
        return (("ok", None), values, *source_parts(values, source))
    except RETURNED_ERRORS as exc:
        return (("error", _pack_error(exc)), None, *(None for _ in source.dests))


def _group_task(pair_fn: Callable, pairs: np.ndarray, extra: Any, cwd: str, *parts) -> tuple:
    if any(part is None for part in parts):
        return ("skipped", None)  # a source failed: the driver reports its error
    _enter(cwd)
    try:
        return ("ok", join_group(pair_fn, pairs, list(parts), extra))
    except RETURNED_ERRORS as exc:
        return ("error", _pack_error(exc))


def ray_join(executor: Any, partitions: list, options: dict) -> Callable:
    """`Context.join_rows(rows_fn, pairs, pair_fn, extra)`: `pair_fn(flat, offsets, index_pairs, extra)` of the
    corpus-wide row `pairs`, one value per pair in their order, where `rows_fn(partition, local_rows, extra)`
    gives the sorted local rows' values as a list of ragged pieces (flat values, offsets)."""
    common = {"scheduling_strategy": "SPREAD", "max_retries": executor.max_retries,
              "num_cpus": options.get("num_cpus", 1)}
    rows_task, group_task = ray.remote(_rows_task), ray.remote(_group_task).options(**common)
    # Per (rows_fn, extra): each partition's values made so far, left in the object store. A later join with
    # the same function takes them from there and reads the partition again only for rows it lacks (dedup's
    # similarity column pairs rows its verification already shingled).
    made: dict[tuple, dict[int, Any]] = {}

    def join_rows(rows_fn: Callable, pairs: np.ndarray, pair_fn: Callable, extra: Any = None) -> np.ndarray:
        pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
        if not len(pairs):
            return np.empty(0, np.float64)
        plan = plan_join(partitions, pairs, min(GROUPS_PER_CPU * executor.cluster_cpus(), MAX_GROUPS))
        rows_ref, pair_ref, extra_ref = ray.put(rows_fn), ray.put(pair_fn), ray.put(extra)
        statuses, parts = [], []
        cache = made.setdefault((rows_fn, repr(extra)), {})
        for source in plan.sources:
            refs = rows_task.options(num_returns=2 + len(source.dests), **common).remote(rows_ref, source, extra_ref, executor._cwd, cache.get(source.partition.index))
            statuses.append(refs[0])
            cache[source.partition.index] = refs[1]
            parts.append(dict(zip((g for g, _ in source.dests), refs[2:])))
        groups = [g for g in range(len(plan.feeds)) if plan.bounds[g + 1] > plan.bounds[g]]
        results = [group_task.remote(pair_ref, pairs[plan.order[plan.bounds[g]:plan.bounds[g + 1]]], extra_ref,
                                     executor._cwd, *(parts[s][g] for s in plan.feeds[g])) for g in groups]
        del parts
        try:
            for status in statuses:
                kind, error = _get(status)
                if kind == "error":
                    raise _unpack_error(error)
            values = []
            for ref in results:
                kind, value = _get(ref)
                if kind == "error":
                    raise _unpack_error(value)
                values.append(value)
        except BaseException:
            ray.wait(results, num_returns=len(results), fetch_local=False)  # nothing of a failed join left running
            raise
        out = np.empty(len(pairs), values[0].dtype)
        for g, value in zip(groups, values):
            out[plan.order[plan.bounds[g]:plan.bounds[g + 1]]] = value
        return out

    return join_rows
