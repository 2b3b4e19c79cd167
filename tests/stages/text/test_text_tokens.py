import re
import unicodedata

import numpy as np
import polars as pl
import pytest

import stages.text.byte_spans as byte_spans
import stages.text.tokens as tokens_module
from stages.text import (
    count_words,
    split_words,
    token_hashes,
    token_offsets,
    tokenize,
    word_offsets,
    word_spans,
)

TEXTS = ["Héllo wörld_1, x", "", None, "  a  bb ", "Ｆｕｌｌ width and ﬁ ligature", "日本語 テキスト 42"]


def test_tokenize_lowercases_nfkc_and_counts_per_document():
    tok = tokenize(TEXTS)
    assert tok.counts.tolist() == [3, 0, 0, 2, 5, 3]
    assert tok.words.to_list()[:5] == ["héllo", "wörld_1", "x", "a", "bb"]
    assert tok.words.to_list()[5:7] == ["full", "width"]
    assert tok.offsets.tolist() == [0, 3, 3, 3, 5, 10, 13]
    assert tok.hashes.dtype == np.uint64 and tok.hashes.size == 13


def test_equal_tokens_hash_equal_in_both_modes():
    for stable in (False, True):
        tok = tokenize(["Alpha beta", "ALPHA, Beta!"], stable=stable)
        assert tok.hashes[:2].tolist() == tok.hashes[2:].tolist()
        assert tok.hashes[0] != tok.hashes[1]


def test_stable_token_hash_is_pinned():
    # Stored signatures depend on these values never changing.
    assert tokenize(["alpha"], stable=True).hashes.tolist() == [tokenize(["ALPHA"], stable=True).hashes[0]]
    assert tokenize(["alpha"], stable=True).hashes[0] == np.uint64(PINNED_ALPHA)
    assert tokenize(["A_much_longer_token_than_eight"]).hashes[0] == np.uint64(PINNED_LONG)


# Recorded once (span_hashes, wave 3); a change here silently invalidates every stored signature.
PINNED_ALPHA = 14258966718189063859
PINNED_LONG = 7748384753932590159


def test_byte_path_gives_the_regex_tokens_and_hashes():
    # Pure-ASCII rows take the NumPy byte path, the others the polars regex path: mixed batches,
    # words running into the next text, empty texts and long tokens must all agree with the regex.
    texts = ["abc", "def", "", "g", "h ", "i", "x1_Y2", "Ab é Cd", "ΟΔΟΣ'A İstanbul", None, "z" * 40 + " q",
             "tail", "ﬁ ligature"]
    tok = tokenize(texts)
    expected = [[w.lower() for w in re.findall(r"[^\W]+", t or "")] for t in texts]
    assert tok.counts.tolist() == [len(e) for e in expected]
    assert tok.words.to_list()[:9] == ["abc", "def", "g", "h", "i", "x1_y2", "ab", "é", "cd"]
    regex = split_words(pl.Series(texts), "word").explode().drop_nulls().str.to_lowercase()
    assert tok.words.len() == regex.len()
    # A token hashes the same on either path and in any batch.
    assert token_hashes(tok.words).tolist() == tok.hashes.tolist()
    assert tokenize(["x1_y2 cd ab"]).hashes.tolist() == tok.hashes[[5, 8, 6]].tolist()
    assert len(set(tok.hashes.tolist())) == len(set(tok.words.to_list()))


MIXED = ["foo—bar don’t «quoted» naïve café", "ＦＵＬＬ width ﬁne", "İstanbul ΟΔΟΣ x_ÿ_z", "a😀b e\u0301cole",
         "zero\u200dwidth tab\tsep\u00a0nbsp", "end é", "é", "ß STRASSE Ⅻ ½ ²", "ǅ Ǆ " + "ﬀ" * 5, "", None,
         "plain ascii words_1 and MORE", "日本語のテキスト、です。 mixed ascii"]


def _defining_tokens(texts):
    flat, counts = tokens_module._unicode_words(pl.Series(texts, dtype=pl.String).fill_null(""))
    return flat.to_list(), counts.tolist()


def test_non_ascii_words_inside_mostly_ascii_text_match_the_defining_regex_path():
    # In a mostly-ASCII batch only the spans holding non-ASCII bytes are cut by the regex; a span may give
    # no word, one, or several ("foo—bar", "don’t"): tokens, counts and hashes must be the whole-text path's.
    texts = MIXED + ["ascii filler text " * 50] * 20
    assert (pl.Series(texts).str.len_bytes().sum() - pl.Series(texts).str.len_chars().sum()
            < byte_spans._WHOLE_TEXT_SHARE * pl.Series(texts).str.len_bytes().sum())
    tok = tokenize(texts)
    words, counts = _defining_tokens(texts)
    assert tok.words.to_list() == words and tok.counts.tolist() == counts
    assert tok.hashes.tolist() == token_hashes(pl.Series(words)).tolist()
    assert "don" in words and "t" in words and "foo" in words and "bar" in words and "full" in words


def test_a_text_tokenizes_the_same_in_an_ascii_batch_and_in_another_script_batch():
    # A batch mostly in another script takes the whole-text regex path: the result may not depend on it.
    cjk = "日本語のテキストです、これは長い文章。" * 40
    batch = pl.Series(MIXED + [cjk] * 5).fill_null("")
    assert batch.str.len_bytes().sum() - batch.str.len_chars().sum() > 0.2 * batch.str.len_bytes().sum()
    alone = tokenize(MIXED)
    among = tokenize(MIXED + [cjk] * 5)
    assert among.hashes[: alone.hashes.size].tolist() == alone.hashes.tolist()
    assert among.counts[: len(MIXED)].tolist() == alone.counts.tolist()
    assert among.words.to_list() == _defining_tokens(MIXED + [cjk] * 5)[0]


def test_bytes_classified_in_small_blocks_give_the_same_tokens(monkeypatch):
    # Bytes are classified block by block; words and non-ASCII characters straddling a block edge, and
    # texts whose words run into the next text's, must give the one-pass tokens.
    texts = MIXED + ["abc", "def", "g" * 30, "h é" * 7, "naïve" * 9, None, "tail_"] + ["ascii filler text " * 50] * 20
    batch = pl.Series(texts).fill_null("")
    assert batch.str.len_bytes().sum() - batch.str.len_chars().sum() < 0.2 * batch.str.len_bytes().sum()  # byte path
    whole = tokenize(texts)
    monkeypatch.setattr(byte_spans, "_CLASSIFY_BYTES", 3)
    blocks = tokenize(texts)
    assert blocks.counts.tolist() == whole.counts.tolist() and blocks.hashes.tolist() == whole.hashes.tolist()
    assert blocks.words.to_list() == whole.words.to_list() == _defining_tokens(texts)[0]


def test_wide_spans_spliced_by_runs_or_by_masks_give_the_same_tokens(monkeypatch):
    # A few spans holding non-ASCII characters are replaced by their words run by run, many of them through
    # np.insert/np.delete: a span may give no word ("—"), one or several ("foo—bar"); tokens, counts, hashes
    # and character offsets must not depend on the way.
    texts = MIXED + ["x — y foo—bar don’t café ½ " * 40, "ascii filler text " * 50, "é"]
    batch = pl.Series(texts).fill_null("")
    assert batch.str.len_bytes().sum() - batch.str.len_chars().sum() < 0.2 * batch.str.len_bytes().sum()  # byte path
    results = []
    for few in (0, 10**6):
        monkeypatch.setattr(byte_spans, "_FEW_WIDE", few)
        tok = tokenize(texts)
        results.append((tok.hashes.tolist(), tok.counts.tolist(), tok.words.to_list(),
                        [a.tolist() for a in word_offsets(texts, "word")]))
    assert results[0] == results[1]
    assert results[0][2] == _defining_tokens(texts)[0]
    expected = [_word_runs(t or "") for t in texts]
    starts, ends, counts = results[0][3]
    assert list(zip(starts, ends)) == [span for e in expected for span in e]


def _word_runs(text: str) -> list[tuple[int, int]]:
    """(start, end) of each run of word characters by the definition: a letter, digit, '_' or combining mark."""
    inside = [c.isalnum() or c == "_" or unicodedata.category(c).startswith("M") for c in text]
    edges = [i for i in range(len(text) + 1) if (i < len(text) and inside[i]) != (i > 0 and inside[i - 1])]
    return list(zip(edges[0::2], edges[1::2]))


def test_combining_marks_belong_to_their_word():
    # Marks (Unicode M*) split words: Hindi's vowel signs left its consonants as words ("हिन्दी" -> ह, न, द), an
    # Arabic word with its vowel marks came apart, and a decomposed accent (e + U+0301) cut "école" into "e",
    # "cole", so a text and its NFD form (as macOS and some PDF extractors write it) shared no n-gram.
    texts = ["हिन्दी भाषा", "مُحَمَّد", "école résumé", "e\u0301cole re\u0301sume\u0301", "Tiê\u0301ng Viê\u0323t"]
    for batch in (texts, texts + ["ascii filler text " * 200]):  # the whole-text path and the byte path
        tok = tokenize(batch)
        assert tok.words.to_list()[:9] == ["हिन्दी", "भाषा", "مُحَمَّد", "école", "résumé", "école", "résumé",
                                           "tiếng", "việt"]
        assert tok.hashes[3:5].tolist() == tok.hashes[5:7].tolist()
        starts, ends, _ = word_offsets(batch, "word")
        assert [t[a:b] for t, a, b in zip([batch[0]] * 2 + [batch[1]], starts[:3], ends[:3])] == ["हिन्दी", "भाषा", "مُحَمَّد"]


def test_arrow_texts_tokenize_as_their_polars_series():
    # Large strings as read from Parquet are tokenized in their own buffers (a slice of an array too); other
    # Arrow texts (with nulls, 32-bit offsets, another script) go through polars: the same tokens every way.
    import pyarrow as pa

    texts = MIXED + ["ascii filler text " * 50] * 5
    for arrow in (pa.array([t or "" for t in texts], pa.large_string())[1:], pa.array(texts, pa.large_string()),
                  pa.array(texts, pa.string()), pa.array(["日本語のテキスト" * 9, "x"], pa.large_string())):
        expected = tokenize(pl.Series(arrow.to_pylist(), dtype=pl.String))
        got = tokenize(arrow)
        assert got.hashes.tolist() == expected.hashes.tolist() and got.counts.tolist() == expected.counts.tolist()
        assert got.words.to_list() == expected.words.to_list()


def test_word_offsets_match_python_regex():
    texts = [t or "" for t in TEXTS] + ["tab\tsep\nline", "émoji 🙂 ok"]
    starts, ends, counts = word_offsets(texts)
    expected = [[m.span() for m in re.finditer(r"\w+", t)] for t in texts]
    assert counts.tolist() == [len(e) for e in expected]
    assert list(zip(starts.tolist(), ends.tolist())) == [s for e in expected for s in e]
    ws, we, wc = word_offsets(texts, "whitespace")
    expected = [[m.span() for m in re.finditer(r"\S+", t)] for t in texts]
    assert wc.tolist() == [len(e) for e in expected]
    assert list(zip(ws.tolist(), we.tolist())) == [s for e in expected for s in e]


def test_word_offsets_of_a_mixed_batch_match_python_regex():
    """ASCII texts are split on their UTF-8 bytes (no UTF-32 copy), the others on code points, in one
    batch; the offsets come back in text order, as Python's regex finds them."""
    from pydoc_data.topics import topics

    # Words that touch the end of one text and the start of the next ("end", "start") stay two words.
    ascii_texts = [t for t in topics.values() if t.isascii()][:40] + ["", " _x9 a\tb\n", "__ 42;", "end", "start"]
    mixed = ascii_texts[:20] + ["émoji 🙂 ok_é", "", "naïve café"] + ascii_texts[20:]
    # Both batches take tokenize's byte path for "word" (`_span_word_offsets`): few non-ASCII bytes.
    for texts in (ascii_texts, mixed):
        size = sum(len(t.encode()) for t in texts)
        assert size - sum(len(t) for t in texts) <= byte_spans._WHOLE_TEXT_SHARE * size
        for split, pattern in (("word", r"\w+"), ("whitespace", r"\S+")):
            starts, ends, counts = word_offsets(texts, split)
            expected = [[m.span() for m in re.finditer(pattern, t)] for t in texts]
            assert counts.tolist() == [len(e) for e in expected] and counts.sum() > 1000
            assert list(zip(starts.tolist(), ends.tolist())) == [span for e in expected for span in e]


def test_token_offsets_align_with_tokenize():
    tok = tokenize(TEXTS)
    starts, ends, ok = token_offsets(pl.Series(TEXTS), tok.counts)
    assert ok.all()
    texts = [t or "" for t in TEXTS]
    doc = np.repeat(np.arange(len(texts)), tok.counts)
    spans = [texts[d][s:e].lower() for d, s, e in zip(doc, starts, ends)]
    assert spans[:5] == ["héllo", "wörld_1", "x", "a", "bb"]
    assert word_spans("a bb").tolist() == [[0, 1], [2, 4]]


def test_split_and_count_words():
    assert split_words(["a, b!"], "word_punct").to_list() == [["a", ",", "b", "!"]]
    assert split_words(["a, b!"], "whitespace").to_list() == [["a,", "b!"]]
    assert count_words(["a, b!  c", None], "whitespace").to_list() == [3, 0]


def test_ascii_word_spans_are_word_offsets_of_ascii_texts():
    from stages.text import ascii_word_spans

    texts = pl.Series(["", "a bb  c_1", "__x__ y", None, "no-words?!", "  lead and trail  ", "x" * 20])
    starts, lengths, counts, text_starts = ascii_word_spans(texts)
    s, e, c = word_offsets(texts, "word")
    text = np.repeat(np.arange(counts.size), counts)
    assert counts.tolist() == c.tolist()
    assert (starts - text_starts[text]).tolist() == s.tolist()
    assert (starts + lengths - text_starts[text]).tolist() == e.tolist()


@pytest.mark.parametrize("texts", [
    ["Héllo wörld, Hello WORLD straße STRASSE ﬁne fine Ⅻ ½", "plain ascii text text", "", None, "ÀB àb x"],  # mixed
    ["plain ascii text text", "Text PLAIN"],  # ASCII spans only
    ["日本語 テキスト 日本語", "テキスト"],  # another script: regex words
])
def test_distinct_words_index_every_token_and_make_each_word_once(texts):
    tok = tokenize(pl.Series(texts, dtype=pl.String))
    index, distinct = tok.distinct_words()  # before `words`: only the distinct strings are made
    words = tok.words
    assert distinct.n_unique() == distinct.len()
    assert distinct.gather(index).to_list() == words.to_list()
    assert distinct.to_list() == list(dict.fromkeys(words.to_list()))  # first-seen order
    positions = np.array([0, 2, words.len() - 1])
    fresh = tokenize(pl.Series(texts, dtype=pl.String))
    assert fresh.words_at(positions).to_list() == words.gather(positions).to_list()
