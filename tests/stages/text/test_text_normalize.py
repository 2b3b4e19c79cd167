import polars as pl

from stages.text import normalize


def test_full_folds_case_punctuation_whitespace_and_compatibility_forms():
    got = normalize(["Hello,  WORLD!!\tﬁne—ok", None, "ＡＢＣ  x", "  a_b  "], "full").to_list()
    assert got == ["hello world fine ok", "", "abc x", "a b"]


def test_whitespace_mode_only_folds_whitespace():
    assert normalize(pl.Series(["  Hello,\n\n WORLD!! "]), "whitespace").to_list() == ["Hello, WORLD!!"]


def test_none_mode_keeps_text_but_nulls_become_empty():
    assert normalize(["A  b", None], "none").to_list() == ["A  b", ""]


def test_equal_after_full_normalisation():
    a, b = normalize(["The Cat, sat.", "the   CAT sat!"], "full").to_list()
    assert a == b
