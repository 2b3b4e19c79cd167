"""The text core: the one implementation of normalisation, tokens, n-gram hashes and chunks.

Every stage that reads text (leakage, retrieval, metrics, synthetic, transforms, dedup) goes
through these functions, so "a word", "an n-gram" and "a chunk" mean the same thing everywhere and
are tested and benchmarked once. Everything works on a whole batch at once (a polars Series or a
sequence of strings; nulls count as ""), with polars' Rust string kernels and NumPy: no per-row
Python on the hot path.

Normalisation (`normalize.py`)
    normalize(texts, mode="full") -> pl.Series
        "none" | "whitespace" (fold whitespace, strip) | "full" (GPT-3 / datatrove style: NFKC,
        lower case, punctuation and symbols to spaces, whitespace folded).

Tokens (`tokens.py`; the byte path and `span_hashes` in `byte_spans.py`, offsets in `char_offsets.py`)
    tokenize(texts, stable=False) -> Tokens(words, hashes, counts; .offsets)
        Words = runs of letters, combining marks, digits and '_' (WORD_REGEX), lower-cased and NFKC-normalised,
        flattened over the batch with a uint64 hash per token: `span_hashes` of the token's UTF-8
        bytes, defined in this project and pinned (the same on every machine and version; `stable`
        is accepted for compatibility and changes nothing). Pure-ASCII texts take a NumPy byte path
        (no regex, no string per token; `Tokens.words` is built only when read).
    span_hashes(data, starts, lengths) / token_hashes(words): that token hash, over byte spans or strings.
    split_words(texts, split) / count_words(texts, split)
        split "word" (WORD_REGEX), "whitespace" (\\S+) or "word_punct" (words and single
        punctuation marks, the synthetic n-gram model's unit).
    token_table(texts, split="word_punct") -> DataFrame(doc, token): tokens as written, one row each.
    token_ids(tokens) -> (dense int64 ids, sorted vocabulary).
    word_offsets(texts, split="word"|"whitespace") -> (starts, ends, counts)
        Code point offsets of every token, vectorised over the batch.
    ascii_word_spans(texts) -> (byte starts, lengths, counts, text starts): the same for ASCII-only texts,
        left as spans so a caller reads only the tokens it needs.
    token_offsets(texts, counts) -> (starts, ends, ok): offsets aligned with `tokenize`.
    code_points(texts) -> (uint32 code points of all texts, per-text starts).

n-gram hashes (`ngrams.py`; the hash is documented in that module)
    ngram_hashes(token_hashes, counts, n) -> (hash, doc, position): every word n-gram of a batch.
    window_hashes(token_hashes, n) -> hash of every run of n tokens (document ends ignored), and
    locate_windows(index, counts, n) -> (doc, position, inside one document) for the few kept:
        the n-gram probe hashes everything but locates only its hits.
    word_shingles(texts, n=5) -> (values uint64, offsets int64)
        Per document, its distinct word-n-gram hashes (stable), sorted; values[offsets[d]:offsets[d+1]].
    char_shingles(texts, k=5, normalization="full") -> (values, offsets): the same over characters.
    text_hash(texts, normalization="full") -> uint64 per text: stable hash of the normalised text.
    per_doc_sets(hashes, doc, n_docs) -> (values, offsets): distinct sorted hashes per document.
    longest_common_run(a, a_len, b, b_len): longest common token run of padded pairs.

Chunks (`chunking.py`)
    windows(counts, size, step, tail="align"|"cover") -> (doc, start, length) token windows.
    token_chunks(tokens, size, step) -> (doc, flat start, length, normalised text) (leakage audit).
    token_windows(tokens, size, step) -> the same without the texts; window_texts(words, starts, lengths)
        makes them; WindowTexts makes them when read (all, or a few with `take`); window_tokens(starts,
        lengths) -> (window, flat token position) of every token of the windows.
    chunk_spans(texts, size, overlap, tokenizer="model"|"whitespace"|"word", model=None) -> ChunkSpans
        Character spans of chunks counted in the embedding model's word pieces or in words.
    model_tokenizer(model=None): the embedding model's fast tokenizer (cached).
"""

from stages.text.byte_spans import span_hashes
from stages.text.char_offsets import ascii_word_spans, code_points, token_offsets, word_offsets, word_spans
from stages.text.chunking import (
    CHUNK_TOKENIZERS,
    ChunkSpans,
    WindowTexts,
    chunk_spans,
    model_tokenizer,
    token_chunks,
    token_windows,
    window_texts,
    window_tokens,
    windows,
)
from stages.text.ngrams import (
    MAX_N,
    char_shingles,
    locate_windows,
    longest_common_run,
    ngram_hashes,
    per_doc_sets,
    text_hash,
    window_hashes,
    word_shingles,
)
from stages.text.normalize import NORMALIZE_MODES, as_series, normalize
from stages.text.tokens import (
    SPLIT_REGEX,
    WORD_PUNCT_REGEX,
    WORD_REGEX,
    Tokens,
    count_words,
    split_words,
    token_hashes,
    token_ids,
    token_table,
    tokenize,
)

__all__ = [
    "CHUNK_TOKENIZERS", "MAX_N", "NORMALIZE_MODES", "SPLIT_REGEX", "WORD_PUNCT_REGEX", "WORD_REGEX", "ChunkSpans", "Tokens",
    "as_series", "ascii_word_spans", "char_shingles", "chunk_spans", "code_points", "count_words", "locate_windows", "longest_common_run",
    "model_tokenizer", "ngram_hashes", "normalize", "per_doc_sets", "span_hashes", "split_words", "text_hash",
    "WindowTexts", "token_chunks", "token_windows", "window_texts", "window_tokens", "token_hashes", "token_ids", "token_offsets", "token_table", "tokenize", "window_hashes", "windows", "word_offsets", "word_shingles",
    "word_spans",
]
