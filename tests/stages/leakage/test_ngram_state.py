"""The n-gram kind's partial state: sparse document frequencies that follow the hits, not the test set."""

from __future__ import annotations

import pickle
from pydoc_data.topics import topics

import numpy as np
import polars as pl

from pipeline.io import Dataset
from pipeline.partitioned import plan_partitions
from pipeline.stage import Context
from stages.leakage import LeakageAudit
from stages.text import tokenize

TOPICS = sorted(topics)


def _words(topic: str, start: int, count: int) -> str:
    return " ".join(topics[topic].split()[start:start + count])


def _map_state(tmp_path, train: pl.DataFrame, test: pl.DataFrame, **params) -> tuple[dict, object]:
    stage = LeakageAudit(chunk_overlap=False, semantic=False, **params)
    inputs = {"train": Dataset.from_any(train), "test": Dataset.from_any(test)}
    broadcast = stage.broadcast(Context(step_id="audit", seed=0, out_dir=tmp_path), inputs)
    part, = plan_partitions(inputs["train"], 1 << 40)
    return stage.map(part, broadcast)["evidence"][0], broadcast["templates"][0]


def test_a_partitions_state_follows_its_hits_not_the_test_set(tmp_path):
    train = pl.DataFrame({"id": [f"d{i}" for i in range(20)], "text": [topics[t] for t in TOPICS[:20]]})
    leaked = [_words(t, 10, 40) for t in TOPICS[:5]]
    # Windows of the topics the corpus does not hold: distinct test n-grams that (almost) never occur in it.
    unrelated = [_words(t, start, 60) for t in TOPICS[20:] for start in range(0, len(topics[t].split()) - 60, 60)]
    small, small_template = _map_state(tmp_path / "a", train, pl.DataFrame({"id": [f"q{i}" for i in range(5)], "text": leaked}))
    big_test = pl.DataFrame({"id": [f"q{i}" for i in range(5 + len(unrelated))], "text": leaked + unrelated})
    big, big_template = _map_state(tmp_path / "b", train, big_test)
    assert big_template.unique.size > 20 * small_template.unique.size  # far more test n-grams...
    assert 0 < small["stored"] <= big["stored"]
    # ...but a state holds what its partition matched: per hit (test n-gram, row, position: 24 B) and per
    # distinct matched n-gram (its index and document count: 16 B), whatever the test set's size.
    for state in (small, big):
        assert len(pickle.dumps(state)) <= 1000 + 40 * state["stored"]
    assert len(pickle.dumps(big)) < 8 * big_template.unique.size / 2  # a dense count alone: 8 B per test n-gram

def test_document_frequencies_count_documents_across_batches(tmp_path):
    phrase = _words(TOPICS[0], 0, 20)
    docs = [f"{phrase} {_words(t, 30, 20)} {phrase}" for t in TOPICS[1:8]]  # the phrase twice in each of 7 docs
    train = pl.DataFrame({"id": [f"d{i}" for i in range(7)], "text": docs})
    test = pl.DataFrame({"id": ["q"], "text": [phrase]})
    state, template = _map_state(tmp_path, train, test, n=8, max_doc_freq=50, batch_rows=2)
    evidence = template.__class__.__new__(template.__class__)
    evidence.__dict__.update(template.__dict__, **state)
    keys, counts = evidence.doc_freq()
    n_grams = tokenize(pl.Series([phrase])).counts[0] - 8 + 1
    assert keys.size == np.unique(keys).size == template.unique.size  # every distinct test n-gram was seen
    assert np.all(counts == 7) and n_grams >= keys.size  # once per document, not per occurrence or batch


def test_windows_probed_in_small_blocks_give_the_same_state(tmp_path, monkeypatch):
    # The kind hashes and probes a batch's windows block by block (no batch-sized array of window hashes);
    # windows straddling a block edge, and hits in every block, must come out as in one pass.
    train = pl.DataFrame({"id": [f"d{i}" for i in range(12)], "text": [topics[t] for t in TOPICS[:12]]})
    test = pl.DataFrame({"id": [f"q{i}" for i in range(6)], "text": [_words(t, 5, 30) for t in TOPICS[:6]]})
    whole, _ = _map_state(tmp_path / "a", train, test, n=8)
    monkeypatch.setattr("stages.leakage.ngram._PROBE_BLOCK", 5)
    blocks, _ = _map_state(tmp_path / "b", train, test, n=8)
    assert whole["stored"] > 100 and blocks["stored"] == whole["stored"]
    for a, b in zip(whole["hits"], blocks["hits"], strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(np.array_equal(x, y) for fa, fb in zip(whole["freq"], blocks["freq"], strict=True) for x, y in zip(fa, fb))


def test_keys_sorted_packed_or_by_lexsort_are_lexsorts_order():
    # Keys whose ranges fit 63 bits are packed into one integer and sorted; wider ones (and negative
    # diagonals, train - test positions) must still come out in np.lexsort's order.
    from stages.leakage.ngram import _sorted

    rng = np.random.default_rng(3)
    narrow = [rng.integers(0, 50, 2000), rng.integers(-300, 300, 2000), rng.integers(0, 7, 2000)]
    wide = [rng.integers(0, 2**40, 2000), rng.integers(-(2**30), 2**30, 2000)]
    for keys in (narrow, wide, [k[:0] for k in narrow], [np.full(5, 4)]):
        order = np.lexsort(keys[::-1])
        got = _sorted(*keys)
        assert [g.tolist() for g in got] == [k[order].tolist() for k in keys]
        assert all(g.dtype == k.dtype for g, k in zip(got, keys))
