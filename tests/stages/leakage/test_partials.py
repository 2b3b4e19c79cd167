"""stages.leakage.partials: a kind's partial state is its accumulators only, copied per map, restored whole."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from stages.leakage.evidence import Evidence
from stages.leakage.partials import export, fresh, restore, wanted_docs


class Counting(Evidence):
    """A kind that accumulates `seen` (its partial state) beside a large test-side table it never merges."""

    kind = "counting"
    partial_attributes: ClassVar[tuple[str, ...]] = ("seen",)

    def __init__(self, docs):
        self.test_side, self.seen, self.docs = list(range(1000)), [], np.asarray(docs, np.int64)

    def candidate_docs(self):
        return self.docs


def test_each_map_gets_its_own_accumulators_and_shares_the_test_side():
    template = Counting([3, 1])
    a, b = fresh(template), fresh(template)
    a.seen.append("x")
    assert template.seen == [] and b.seen == [] and a.test_side is template.test_side


def test_a_contribution_is_the_accumulators_only_and_restores_on_the_template():
    template, ev = Counting([3, 1]), Counting([3, 1])
    ev.seen = ["x", "y"]
    part = export(ev)
    assert part == {"seen": ["x", "y"]}  # never the test side
    copied, shared = restore(template, part, copy=True), restore(template, part, copy=False)
    copied.seen.append("z")
    assert part["seen"] == ["x", "y"] and shared.seen is part["seen"] and copied.test_side is template.test_side


def test_wanted_docs_is_the_sorted_union_of_every_kinds_candidates():
    assert wanted_docs([Counting([5, 1]), Counting([1, 9])]).tolist() == [1, 5, 9]
    assert wanted_docs([]).tolist() == []
