"""Bad ids given to `generations` from a config: one line, exit 2, the step, parameter and file named."""

from __future__ import annotations

import polars as pl
from cli_failures import fails_cleanly, refused_by_validate


def _generations(data) -> str:
    return f"""
name: bad
steps:
  - id: gens
    stage: generations
    inputs: {data}
    params: {{generations: 1, max_tokens: 4}}
"""


def test_generations_refuses_null_ids(tmp_path):
    # A null id passed (one null counted as one distinct id): a generation-0 row whose provenance names no document.
    data = tmp_path / "docs.parquet"
    pl.DataFrame({"id": ["a", None, "c"], "text": ["one two three", "four five six", "seven eight"]}).write_parquet(data)
    fails_cleanly(tmp_path, _generations(data), "step 'gens' (stage 'generations'), parameter 'id_column'",
                  f"file '{data}'", "column 'id' has 1 null ids")


def test_generations_refuses_a_list_id_column_at_validate(tmp_path):
    # A List id column failed inside polars' cast to strings (exit 1, 'this looks like a bug').
    data = tmp_path / "docs.parquet"
    pl.DataFrame({"id": [["a"], ["b"]], "text": ["one two three", "four five six"]}).write_parquet(data)
    message = refused_by_validate(tmp_path / "bad.yaml", _generations(data))
    assert f"step 'gens' (stage 'generations'), parameter 'id_column', file '{data}'" in message
    assert "not one value a row" in message


def test_generations_takes_the_text_column_as_its_id_column():
    # id_column = text_column failed in polars selecting the column twice (exit 1).
    from stages.synthetic import Generations

    data = pl.DataFrame({"text": ["one two three", "four five six", "seven eight nine"]})
    out = Generations(generations=1, max_tokens=3, id_column="text").apply(data)
    human = out.filter(pl.col("generation") == 0)
    assert sorted(human["doc_id"].to_list()) == sorted(data["text"].to_list())
