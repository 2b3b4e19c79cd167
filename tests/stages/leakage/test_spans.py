"""Fetching the matched training rows a second time (`fetch_train_docs`)."""

from __future__ import annotations

import polars as pl

from pipeline.io import Dataset
from stages.leakage.spans import fetch_train_docs


def test_fetched_rows_keep_their_text_id_and_corpus_row_number(tmp_path):
    # The texts are copied out of their batches through Arrow: each row's text whole (a null as ""), with its id
    # and its row number in the whole corpus.
    texts = [f"{i} naïve " + "word " * 2_000 for i in range(40)]
    texts[7] = None
    pl.DataFrame({"id": [f"d{i}" for i in range(40)], "text": texts}).write_parquet(tmp_path / "train.parquet")
    docs = fetch_train_docs(Dataset.from_any(str(tmp_path / "train.parquet")), [3, 7, 31], "text", "id", 10,
                            first_row=1000)
    assert docs["doc"].to_list() == [1003, 1007, 1031] and docs["train_id"].to_list() == ["d3", "d7", "d31"]
    assert docs["text"].to_list() == [texts[3], "", texts[31]] and docs["text"].dtype == pl.String
