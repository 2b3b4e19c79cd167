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

Tokens (`tokens.py`)
    tokenize(texts, stable=False) -> Tokens(words, hashes, counts; .offsets)
        Words = runs of letters, digits and '_' (WORD_REGEX), lower-cased and NFKC-normalised,
        flattened over the batch with a uint64 hash per token. stable=False uses polars' seeded
        hash (fastest; fine within one run); stable=True a project-defined hash that is the same on
        every machine and version (for stored signatures).
    split_words(texts, split) / count_words(texts, split)
        split "word" (WORD_REGEX), "whitespace" (\\S+) or "word_punct" (words and single
        punctuation marks, the synthetic n-gram model's unit).
    token_table(texts, split="word_punct") -> DataFrame(doc, token): tokens as written, one row each.
    token_ids(tokens) -> (dense int64 ids, sorted vocabulary).
    word_offsets(texts, split="word"|"whitespace") -> (starts, ends, counts)
        Code point offsets of every token, vectorised over the batch.
    token_offsets(texts, counts) -> (starts, ends, ok): offsets aligned with `tokenize`.
    code_points(texts) -> (uint32 code points of all texts, per-text starts).

n-gram hashes (`ngrams.py`; the hash is documented in that module)
    ngram_hashes(token_hashes, counts, n) -> (hash, doc, position): every word n-gram of a batch.
    word_shingles(texts, n=5) -> (values uint64, offsets int64)
        Per document, its distinct word-n-gram hashes (stable), sorted; values[offsets[d]:offsets[d+1]].
    char_shingles(texts, k=5, normalization="full") -> (values, offsets): the same over characters.
    text_hash(texts, normalization="full") -> uint64 per text: stable hash of the normalised text.
    per_doc_sets(hashes, doc, n_docs) -> (values, offsets): distinct sorted hashes per document.
    longest_common_run(a, a_len, b, b_len): longest common token run of padded pairs.

Chunks (`chunking.py`)
    windows(counts, size, step, tail="align"|"cover") -> (doc, start, length) token windows.
    token_chunks(tokens, size, step) -> (doc, flat start, length, normalised text) (leakage audit).
    chunk_spans(texts, size, overlap, tokenizer="model"|"whitespace"|"word", model=None) -> ChunkSpans
        Character spans of chunks counted in the embedding model's word pieces or in words.
    model_tokenizer(model=None): the embedding model's fast tokenizer (cached).
"""

from stages.text.chunking import (
    CHUNK_TOKENIZERS,
    ChunkSpans,
    chunk_spans,
    model_tokenizer,
    token_chunks,
    windows,
)
from stages.text.ngrams import (
    MAX_N,
    char_shingles,
    longest_common_run,
    ngram_hashes,
    per_doc_sets,
    text_hash,
    word_shingles,
)
from stages.text.normalize import NORMALIZE_MODES, as_series, normalize
from stages.text.tokens import (
    SPLIT_REGEX,
    WORD_PUNCT_REGEX,
    WORD_REGEX,
    Tokens,
    code_points,
    count_words,
    split_words,
    token_hashes,
    token_ids,
    token_offsets,
    token_table,
    tokenize,
    word_offsets,
    word_spans,
)

__all__ = [
    "CHUNK_TOKENIZERS", "MAX_N", "NORMALIZE_MODES", "SPLIT_REGEX", "WORD_PUNCT_REGEX", "WORD_REGEX", "ChunkSpans", "Tokens",
    "as_series", "char_shingles", "chunk_spans", "code_points", "count_words", "longest_common_run",
    "model_tokenizer", "ngram_hashes", "normalize", "per_doc_sets", "split_words", "text_hash",
    "token_chunks", "token_hashes", "token_ids", "token_offsets", "token_table", "tokenize", "windows", "word_offsets", "word_shingles",
    "word_spans",
]
