"""Parameter constraints, declared once on a stage's constructor (pydantic `Annotated` types).

`n: Annotated[int, Field(ge=8, le=50)] = 13` is at once the range check (the constructor raises
ParamError naming `n`), the type shown by `pipeline stages` ("int (>= 8, <= 50)"), and the bound the
catalogue test exercises. Checks that relate two parameters stay in `Stage.validate`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Cosine = Annotated[float, Field(ge=-1.0, le=1.0)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]

__all__ = ["Annotated", "Cosine", "Field", "Fraction", "NonNegativeFloat", "NonNegativeInt", "PositiveInt"]
