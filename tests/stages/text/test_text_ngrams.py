import numpy as np

from stages.text import (
    char_shingles,
    longest_common_run,
    ngram_hashes,
    per_doc_sets,
    text_hash,
    tokenize,
    word_shingles,
)


def _naive_ngrams(tokens, n):
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def test_ngram_hashes_match_naive_ngrams_and_never_straddle_documents():
    texts = ["a b c d e f", "a b c", "x y", "d e f a b"]
    tok = tokenize(texts)
    hashes, doc, pos = ngram_hashes(tok.hashes, tok.counts, 3)
    words = [t.split() for t in texts]
    expected = [(d, i) for d, w in enumerate(words) for i, _ in enumerate(_naive_ngrams(w, 3))]
    assert list(zip(doc.tolist(), pos.tolist())) == expected
    # equal n-grams hash equal, different ones differ
    by_gram = {}
    for d, i, h in zip(doc.tolist(), pos.tolist(), hashes.tolist()):
        by_gram.setdefault(tuple(words[d][i : i + 3]), set()).add(h)
    assert all(len(v) == 1 for v in by_gram.values())
    assert len({next(iter(v)) for v in by_gram.values()}) == len(by_gram)


def test_ngram_hash_is_order_sensitive():
    tok = tokenize(["a b c", "c b a"])
    hashes, _, _ = ngram_hashes(tok.hashes, tok.counts, 3)
    assert hashes[0] != hashes[1]


def test_word_shingles_are_per_document_sorted_sets():
    values, offsets = word_shingles(["a b c a b c", "A, b. C!", "x y", "", None], n=3)
    assert offsets.tolist() == [0, 3, 4, 5, 5, 5]
    first = values[offsets[0] : offsets[1]]
    assert np.all(np.diff(first.astype(np.float64)) > 0) or first.size == 1
    assert values[offsets[1]] in first  # "a b c" shared after normalisation
    assert values.dtype == np.uint64


def test_word_shingles_are_stable_values():
    a, _ = word_shingles(["the quick brown fox"], n=2)
    b, _ = word_shingles(["THE quick, brown fox!"], n=2)
    assert a.tolist() == b.tolist()


def test_stable_hashes_are_pinned():
    # Recorded once: stored dedup signatures depend on these values never changing.
    assert word_shingles(["a b c"], n=2)[0].tolist() == [14333672075084874764, 15139816283192958137]
    assert char_shingles(["abcd"], k=3)[0].tolist() == [11710061434640611106, 14965112599955538916]
    assert int(text_hash(["Alpha beta"])[0]) == 8834580424881392771


def test_char_shingles_after_normalisation():
    values, offsets = char_shingles(["abcd", "ABC D!", "ab", ""], k=3)
    assert offsets.tolist() == [0, 2, 5, 6, 6]
    assert set(values[0:2].tolist()) & set(values[2:5].tolist())  # "abc" in both
    none_values, _ = char_shingles(["abcd", "ABCD"], k=3, normalization="none")
    assert len(set(none_values.tolist())) == 4


def test_text_hash_equal_for_equal_normalised_texts():
    h = text_hash(["Hello, World", "hello world!", "hello there", None])
    assert h[0] == h[1] and h[0] != h[2] and h.dtype == np.uint64
    raw = text_hash(["Hello, World", "hello world!"], normalization="none")
    assert raw[0] != raw[1]


def test_per_doc_sets_handles_empty_documents():
    values, offsets = per_doc_sets(np.array([5, 3, 5, 1], np.uint64), np.array([0, 0, 0, 2]), 4)
    assert values.tolist() == [3, 5, 1] and offsets.tolist() == [0, 2, 2, 3, 3]


def test_longest_common_run():
    a = np.array([[1, 2, 3, 4, 0]], np.uint64)
    b = np.array([[9, 2, 3, 4, 7]], np.uint64)
    assert longest_common_run(a, np.array([4]), b, np.array([5])).tolist() == [3]
