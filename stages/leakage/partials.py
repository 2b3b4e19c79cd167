"""Partial states of the evidence kinds across partitions (see `Evidence.partial_attributes`): what a map starts
from, what it contributes to the merge, and how a merged state becomes a kind again."""

from __future__ import annotations

import copy as _copy
from typing import Any

import numpy as np

from pipeline.arrays import unique_sorted
from pipeline.partitioned import Partition
from stages.leakage.evidence import Evidence


class PartitionView:
    """A partition seen as the small part of a Dataset that `fetch_train_docs` reads (with the audit's text column)."""

    def __init__(self, partition: Partition, read_columns: list[str], text_column: str, to_text):
        self.partition, self.read_columns, self.to_text = partition, read_columns, to_text
        self.columns = [text_column, *read_columns]

    def iter_batches(self, rows: int, columns: list[str] | None = None):
        for batch in self.partition.iter_batches(rows, columns=self.read_columns):
            yield self.to_text(batch)


def fresh(template: Evidence) -> Evidence:
    """A kind ready for one partition: the template's test-side tables, its own empty accumulators."""
    if not template.partial_attributes:
        return template  # not mergeable: the audit runs it over one partition only
    ev = _copy.copy(template)
    for attr in template.partial_attributes:
        setattr(ev, attr, _copy.deepcopy(getattr(template, attr)))
    return ev


def export(ev: Evidence) -> Any:
    """What a partition contributes: the accumulated attributes only (never the test side)."""
    if not ev.partial_attributes:
        return ev
    return {attr: getattr(ev, attr) for attr in ev.partial_attributes}


def restore(template: Evidence, partial: Any, copy: bool) -> Evidence:
    """A kind from a partition's or a merge's contribution (`copy` when the contribution is merged into later)."""
    if not isinstance(partial, dict):
        return partial
    ev = _copy.copy(template)
    for attr, value in partial.items():
        setattr(ev, attr, _copy.deepcopy(value) if copy else value)
    return ev


def wanted_docs(evidences: list[Evidence]) -> np.ndarray:
    """The training rows any kind may point at (the union of their candidates), sorted."""
    docs = [ev.candidate_docs() for ev in evidences]
    return unique_sorted(np.concatenate(docs)).astype(np.int64) if docs else np.empty(0, np.int64)
