import re

import numpy as np
import polars as pl

import stages.text.byte_spans as byte_spans
from stages.text import token_hashes, tokenize


def test_span_strings_are_the_spans_text_sparse_or_dense():
    # Sparse spans (a few words holding non-ASCII characters) are copied out; dense ones (every word of a
    # batch) are cut from the batch's bytes: both give each span's text.
    text = "ab café x " * 50 + "naïve"
    data = np.frombuffer(text.encode(), np.uint8)
    words = [(m.start(), m.end()) for m in re.finditer(rb"\S+", text.encode())]
    for chosen in (words, [w for w in words if not data[w[0]:w[1]].tobytes().isascii()][::7], words[-1:]):
        starts = np.array([s for s, _ in chosen], np.int32)
        lengths = np.array([e - s for s, e in chosen], np.int32)
        got = byte_spans._span_strings(data, starts, lengths).to_list()
        assert got == [text.encode()[s:e].decode() for s, e in chosen]
    assert byte_spans._span_strings(data, np.zeros(0, np.int32), np.zeros(0, np.int32)).to_list() == []


def test_span_hashes_in_blocks_equal_one_pass(monkeypatch):
    # A batch of more spans than one block is hashed block by block (the working memory stays one
    # block's); every span must hash as it does alone, long spans (several 8-byte words) included.
    words = [f"w{i}" * (1 + i % 7) for i in range(3000)]
    text = " ".join(words)
    data = np.frombuffer(text.encode(), np.uint8)
    lengths = np.array([len(w) for w in words], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    one_pass = byte_spans._span_block_hashes(data, starts, lengths, False)
    monkeypatch.setattr(byte_spans, "_SPAN_BLOCK", 64)
    assert byte_spans.span_hashes(data, starts, lengths).tolist() == one_pass.tolist()
    assert tokenize([text]).hashes.tolist() == token_hashes(pl.Series(words).str.to_lowercase()).tolist()
    assert (lengths > 8).sum() > 1000 and len(set(one_pass.tolist())) == len(set(words))
