"""How an error names where it happened."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.errors import InputDataError


def test_a_library_calls_in_memory_input_is_not_called_a_file_nor_named_twice():
    from stages.noise import LabelNoise

    with pytest.raises(InputDataError) as caught:
        LabelNoise(mode="flip", rate=0.2, label_column="nope").apply(pl.DataFrame({"id": ["a"], "label": [1]}), seed=0)
    assert caught.value.file == "input 'data'"
    # Was "stage 'label_noise', parameter 'label_column', file 'input 'data'': input 'data' has no column 'nope' ...".
    assert str(caught.value).startswith("stage 'label_noise', parameter 'label_column': input 'data' has no column")
    assert str(InputDataError("has no rows", file="input 'data'")) == "input 'data': has no rows"
    assert str(InputDataError("has no rows", file="input 'data'.parquet")) == "file 'input 'data'.parquet': has no rows"
