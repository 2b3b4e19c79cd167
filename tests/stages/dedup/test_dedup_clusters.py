"""Union-find clusters, the kept row of each, and the figures every dedup step records."""

from __future__ import annotations

import numpy as np

from stages.dedup.clusters import components, members_of, resolve, size_histogram, summary


def test_components_are_labelled_by_their_lowest_row():
    pairs = np.array([[3, 5], [5, 8], [1, 2]])
    assert components(9, pairs).tolist() == [0, 1, 1, 3, 4, 3, 6, 7, 3]
    assert components(3, np.empty((0, 2), np.int64)).tolist() == [0, 1, 2]


def test_keep_priority_then_position_and_reference_first():
    pairs = np.array([[0, 1], [1, 2], [3, 4]])
    length = np.array([5, 9, 9, 1, 1])
    res = resolve(0, 5, members_of(pairs), [-length])
    assert res.kept.tolist() == [1, 1, 1, 3, 3]  # longest, ties by position
    assert res.removed.tolist() == [True, False, True, False, True]
    # With row 0 a reference row, its cluster keeps it whatever the priority, and it is never "removed".
    res = resolve(1, 4, members_of(pairs), [-length])
    assert res.kept[:3].tolist() == [0, 0, 0]
    assert res.removed.tolist() == [False, True, True, False, True]
    stats = summary(res)
    assert stats["rows_in"] == 4 and stats["rows_removed"] == 3
    assert stats["removed_as_reference_duplicates"] == 2


def test_only_rows_in_pairs_are_listed_and_priorities_follow_them():
    # 10 rows, two clusters; rows 0, 2, 5, 6 and 9 are in no pair and appear nowhere.
    pairs = np.array([[7, 3], [1, 8], [8, 4]])
    members = members_of(pairs).rows
    assert members.tolist() == [1, 3, 4, 7, 8]
    length = np.array([1, 2, 9, 3, 8])  # per member: row 4 is the longest of {1, 4, 8}
    res = resolve(0, 10, members_of(pairs), [-length])
    assert res.members.tolist() == members.tolist()
    assert res.cluster.tolist() == [1, 3, 1, 3, 1]
    assert res.kept.tolist() == [4, 7, 4, 7, 4]
    assert res.size.tolist() == [3, 2, 3, 2, 3]
    assert res.removed.tolist() == [True, True, False, False, True]
    stats = summary(res)
    assert (stats["rows_in"], stats["rows_removed"], stats["clusters"], stats["rows_in_clusters"]) == (10, 3, 2, 5)
    empty = resolve(0, 4, members_of(np.empty((0, 2), np.int64)), [])
    assert empty.members.size == 0 and summary(empty)["rows_kept"] == 4


def test_histogram_bins():
    pairs = np.array([[0, 1], [2, 3], [3, 4], [5, 6], [6, 7], [7, 8], [8, 9]])
    res = resolve(0, 12, members_of(pairs), [])
    assert size_histogram(res) == {"2": 1, "3-4": 1, "5-8": 1}
    stats = summary(res)
    assert stats["duplicate_rate"] == round(7 / 12, 6)
    assert stats["clusters"] == 3 and stats["rows_in_clusters"] == 10


def _plain_resolve(n_reference, pairs, priority):
    """Union-find by hand and a sort per cluster: what `resolve` must agree with."""
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    members = sorted(parent)
    key = {row: (row >= n_reference, *(int(p[i]) for p in priority), row) for i, row in enumerate(members)}
    groups = {}
    for row in members:
        groups.setdefault(find(row), []).append(row)
    kept = {root: min(rows, key=key.__getitem__) for root, rows in groups.items()}
    return (members, [min(groups[find(r)]) for r in members], [kept[find(r)] for r in members],
            [len(groups[find(r)]) for r in members])


def test_resolve_equals_a_plain_union_find_on_random_graphs():
    rng = np.random.default_rng(7)
    for trial in range(30):
        n = int(rng.integers(2, 400))
        pairs = rng.integers(0, n, size=(int(rng.integers(1, 3 * n)), 2))
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        if not len(pairs):
            continue
        n_reference = int(rng.integers(0, n // 4 + 1))
        members = members_of(pairs).rows
        priority = [rng.integers(0, 3, members.size), -rng.integers(0, 5, members.size)]
        res = resolve(n_reference, n - n_reference, members_of(pairs), priority)
        want = _plain_resolve(n_reference, pairs, priority)
        got = (res.members.tolist(), res.cluster.tolist(), res.kept.tolist(), res.size.tolist())
        assert got == want, trial
        sizes = [s for r, s in zip(want[0], want[3]) if r == want[1][want[0].index(r)]]
        assert sum(size_histogram(res).values()) == len(sizes)
