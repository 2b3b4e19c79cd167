"""Training chunks as the chunk and semantic evidence see them: the normalised text of token windows."""

from __future__ import annotations

import numpy as np
import polars as pl

from stages.text import Tokens


def chunk_texts(tok: Tokens, starts: np.ndarray, lengths: np.ndarray) -> list[str]:
    """The normalised text of chunks (first token in the flat array, length): tokens joined by spaces."""
    chunk_of_token = np.repeat(np.arange(starts.size), lengths)
    token_index = starts[chunk_of_token] + (np.arange(chunk_of_token.size) - (np.cumsum(lengths) - lengths)[chunk_of_token])
    return (
        pl.DataFrame({"chunk": chunk_of_token, "word": tok.words.gather(token_index)})
        .group_by("chunk", maintain_order=True)
        .agg(pl.col("word").str.join(" "))
        .get_column("word")
        .to_list()
    )
