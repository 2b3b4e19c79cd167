"""The parameter checks' shortcut: plain values in declared bounds pass without building a pydantic adapter, and the
shortcut never passes a value pydantic's strict check refuses."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pydantic
import pytest
from pydantic import Field

from pipeline import params
from pipeline.errors import ParamError
from pipeline.params import Cosine, Fraction, NonNegativeFloat, NonNegativeInt, PositiveInt

ANNOTATIONS = [bool, int, float, str, Fraction, Cosine, PositiveInt, NonNegativeInt, NonNegativeFloat,
               Annotated[int, Field(ge=8, le=50)], Annotated[float, Field(gt=0.0, lt=1.0)],
               Annotated[str, Field(min_length=2)], Annotated[int, Field(multiple_of=2)], int | None, Cosine | None,
               int | str | None, bool | int,
               Literal["a", "b"], list[int], Path]
VALUES = [True, False, 0, 1, 2, 7, 8, 13, 50, 51, -1, 0.0, 0.5, 1.0, 1.5, -0.5, float("nan"), float("inf"), "a",
          "ab", "5", None, [1], np.int64(3), 2**70]


def test_the_shortcut_passes_only_what_the_strict_check_passes():
    for annotation, value in itertools.product(ANNOTATIONS, VALUES):
        if params._plainly_valid(annotation, value):
            pydantic.TypeAdapter(annotation).validate_python(value, strict=True)  # raises if the shortcut was wrong


def test_plain_valid_params_build_no_adapter_and_bad_ones_are_worded_as_before(monkeypatch):
    from stages.leakage import LeakageAudit

    monkeypatch.setattr(params, "_ADAPTERS", {})
    LeakageAudit(n=13, chunk_overlap=False, semantic=False, report_items=5, batch_rows=20_000, similarity_partial=0.8)
    assert params._ADAPTERS == {}  # ~3 ms each in a fresh process, built for every parameter given
    with pytest.raises(ParamError, match=r"parameter 'n'.*must be in \[8, 50\], got 7"):
        LeakageAudit(n=7)
    with pytest.raises(ParamError, match=r"parameter 'semantic'.*expects bool, got 1 \(int\)"):
        LeakageAudit(semantic=1)
