import numpy as np
import polars as pl

from stages.text import chunk_spans, token_chunks, tokenize, windows


def _cover_reference(n, size, overlap):
    step = size - overlap
    starts = [s for s in range(0, n, step) if s == 0 or s + overlap < n]
    return [(s, min(s + size, n) - s) for s in starts] if n else []


def test_cover_windows_match_reference():
    for size in (1, 3, 4, 8):
        for overlap in range(size):
            counts = np.array([0, 1, 2, 3, 5, 8, 9, 17])
            doc, start, length = windows(counts, size, size - overlap, "cover")
            for d, n in enumerate(counts):
                got = list(zip(start[doc == d].tolist(), length[doc == d].tolist()))
                assert got == _cover_reference(int(n), size, overlap)


def test_align_windows_are_full_length_and_end_at_the_end():
    doc, start, length = windows(np.array([10, 3, 0]), 4, 2, "align")
    assert doc.tolist() == [0, 0, 0, 0, 1]
    assert start.tolist() == [0, 2, 4, 6, 0] and length.tolist() == [4, 4, 4, 4, 3]


def test_token_chunks_texts_are_normalised_tokens():
    tok = tokenize(["A b, C d e", "x"])
    doc, starts, lengths, texts = token_chunks(tok, 3, 2)
    assert texts == ["a b c", "c d e", "x"] and doc.tolist() == [0, 0, 1]


def test_chunk_spans_whitespace_and_model():
    texts = ["one two three four five six seven", "", "solo"]
    spans = chunk_spans(texts, 3, 1, "whitespace")
    got = [texts[d][s:e] for d, s, e in zip(spans.doc, spans.char_start, spans.char_end)]
    assert got == ["one two three", "three four five", "five six seven", "solo"]
    assert spans.index.tolist() == [0, 1, 2, 0] and spans.n_tokens.tolist() == [3, 3, 3, 1]
    model = chunk_spans(texts, 4, 0, "model")
    assert model.doc.max() == 2 and (model.n_tokens <= 4).all()
    assert texts[0][model.char_start[0] : model.char_end[-2]].startswith("one")


def test_window_texts_made_when_read_equal_the_chunk_texts():
    from pydoc_data.topics import topics

    from stages.text import WindowTexts, token_chunks, token_windows, tokenize

    tok = tokenize(pl.Series([topics[k] for k in sorted(topics)[:20]] + ["", "one two"]))
    doc, starts, lengths, texts = token_chunks(tok, 16, 8)
    assert all(np.array_equal(a, b) for a, b in zip((doc, starts, lengths), token_windows(tok, 16, 8)))
    lazy = WindowTexts(tok.words, starts, lengths)
    assert len(lazy) == len(texts) and texts[-1] == "one two"
    rows = np.array([[3, 0, 3], [len(texts) - 1, 5, 0]])
    assert lazy.take(rows).tolist() == [[texts[3], texts[0], texts[3]], [texts[-1], texts[5], texts[0]]]
    assert lazy.all() == texts and lazy.take(rows).tolist() == np.asarray(texts, object)[rows].tolist()
