"""The label_noise parameters: what each mode accepts, checked before any data is read."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.errors import ParamError
from pipeline.params import Annotated, Field

DILUTE_NOISE = ("uniform", "structured")
FLIP_NOISE = ("symmetric", "pairflip", "mapping", "matrix")
MATRIX_CONVENTION = "rows = clean class, columns = noisy label, rows sum to 1: T[i, j] = P(noisy=j | clean=i)"
_STOCHASTIC_TOL = 1e-6
# Noisy rows per clean row, at most: Rolnick et al. went to 100; 10^4 already turns MNIST into 6e8 rows, and a
# typo such as 1e12 would otherwise write until the disk is full.
MAX_ALPHA = 10_000
Alpha = Annotated[float, Field(ge=0.0, le=MAX_ALPHA)]  # for a stage that declares alphas as a parameter type
# The parameters only one mode reads: given to the other mode they would be ignored without a word.
MODE_ONLY = {"flip": ("rate", "mapping", "matrix"),
             "dilute": ("alpha", "exclude_true", "delta", "confusion", "feature_column")}
# The dilute parameters only structured noise reads (uniform noise draws every added label uniformly).
STRUCTURED_ONLY = ("delta", "confusion", "feature_column")


def validate_params(self: Any) -> None:
    """Every check that needs only the params (the data-dependent ones run with the data)."""
    if self.mode not in ("flip", "dilute"):
        raise ParamError("mode", f"must be 'flip' or 'dilute', got {self.mode!r}")
    allowed = DILUTE_NOISE if self.mode == "dilute" else FLIP_NOISE
    if self.noise_kind not in allowed:
        raise ParamError("noise", f"mode '{self.mode}' takes noise {' | '.join(allowed)}, got {self.noise!r}")
    if self.classes is not None:
        if len(self.classes) < 2:
            raise ParamError("classes", "needs at least 2 classes for label noise")
        if len(set(self.classes)) != len(self.classes):
            raise ParamError("classes", f"lists a class twice: {self.classes}")
    refuse_other_mode_params(self)
    if self.mode == "flip":
        _validate_flip(self)
    else:
        _validate_dilute(self)


def structured_params(noise: str, **params: Any) -> dict[str, Any]:
    """`params` (some of STRUCTURED_ONLY) for a dilute run of `noise`: all of them for structured noise, none
    for uniform, which reads none of them and is refused them (the studies sweep both kinds with one set)."""
    unknown = set(params) - set(STRUCTURED_ONLY)
    if unknown:
        raise TypeError(f"not structured-noise parameters: {sorted(unknown)}")
    return params if noise == "structured" else {}


def _set_params(self: Any, names: tuple[str, ...]) -> list[str]:
    defaults = {spec.name: spec.default for spec in type(self).param_specs()}
    return [name for name in names if _is_set(getattr(self, name), defaults[name])]


def refuse_other_mode_params(self: Any) -> None:
    """The parameters of the other mode that are set (not at their defaults), refused together: e.g. `alpha: 3`
    with `mode: flip` would relabel at `rate` and add no rows, the alpha silently dropped."""
    other = "dilute" if self.mode == "flip" else "flip"
    _refuse_unused(_set_params(self, MODE_ONLY[other]), f"{other}-mode",
                   f"mode '{self.mode}' (which takes noise, {', '.join(MODE_ONLY[self.mode])})", f"set mode: {other}")


def _refuse_unused(given: list[str], kind: str, unused_by: str, advice: str) -> None:
    """One line naming every parameter given that nothing will read."""
    if not given:
        return
    several = len(given) > 1
    raise ParamError(given[0], f"{', '.join(given)} {'are' if several else 'is a'} {kind} parameter"
                               f"{'s' if several else ''}, unused by {unused_by}; leave {'them' if several else 'it'} "
                               f"out or {advice}")


def _is_set(value: Any, default: Any) -> bool:
    """Does a parameter differ from its default (`is not None` for a None default; a matrix or an array given for a
    text default such as confusion's 'derangement' differs whatever its values)?"""
    if default is None:
        return value is not None
    if isinstance(default, str) and not isinstance(value, str):
        return True
    return bool(value != default)

def _validate_flip(self: Any) -> None:
    kind = self.noise_kind
    if kind == "matrix":
        if self.rate is not None:
            raise ParamError("rate", "is implied by the matrix diagonal (1 - T[i, i]); leave it out")
        if self.matrix is None:
            raise ParamError("matrix", f"is required for noise 'matrix' ({MATRIX_CONVENTION})")
        check_stochastic("matrix", self.matrix, None if self.classes is None else len(self.classes))
    else:
        if self.rate is None:
            raise ParamError("rate", f"is required for noise '{kind}': a number in [0, 1] or a {{class: rate}} dict")
        rates = self.rate.values() if isinstance(self.rate, dict) else [self.rate]
        for r in rates:
            if not (isinstance(r, (int, float)) and 0.0 <= r <= 1.0):
                raise ParamError("rate", f"must lie in [0, 1], got {r!r}")
        if isinstance(self.rate, dict) and self.classes is not None:
            check_known("rate", self.rate.keys(), self.classes)
    if kind == "mapping":
        if not self.mapping:
            raise ParamError("mapping", "is required for noise 'mapping': {class: target class}")
        for a, b in self.mapping.items():
            if a == b:
                raise ParamError("mapping", f"maps class {a!r} to itself; a flip must change the label")
        if self.classes is not None:
            check_known("mapping", list(self.mapping) + list(self.mapping.values()), self.classes)
    elif self.mapping is not None:
        raise ParamError("mapping", f"is only used with noise 'mapping', not '{kind}'")
    if kind != "matrix" and self.matrix is not None:
        raise ParamError("matrix", f"is only used with noise 'matrix', not '{kind}'")

def _validate_dilute(self: Any) -> None:
    if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and 0 <= self.alpha <= MAX_ALPHA):
        raise ParamError("alpha", f"must be a number in [0, {MAX_ALPHA:,}] (noisy rows per clean row), "
                                  f"got {self.alpha!r}")
    if not (0.0 <= self.delta <= 1.0):
        raise ParamError("delta", f"must lie in [0, 1], got {self.delta!r}")
    if self.noise_kind != "structured":
        _refuse_unused(_set_params(self, STRUCTURED_ONLY), "structured-noise",
                       f"noise '{self.noise_kind}' (every added label is drawn uniformly)", "set noise: structured")
        return
    c = self.confusion
    if isinstance(c, str):
        if c not in ("derangement", "centroid"):
            raise ParamError("confusion", f"must be 'derangement', 'centroid', a mapping or a matrix, got {c!r}")
        if c == "centroid" and not self.feature_column:
            raise ParamError("feature_column", "is required by confusion 'centroid' (a numeric vector column)")
    elif isinstance(c, dict):
        if self.classes is not None:
            check_known("confusion", list(c) + list(c.values()), self.classes)
    else:
        check_stochastic("confusion", c, None if self.classes is None else len(self.classes))

def check_known(param: str, names: Any, classes: list[Any]) -> None:
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise ParamError(param, f"names unknown class(es) {unknown}; the classes are {list(classes)}")

def check_stochastic(param: str, matrix: Any, k: int | None, file: str | None = None) -> np.ndarray:
    """The matrix as an array, refused unless K x K and row-stochastic; `file` names the data when K was counted
    from its labels (when running), not from `classes`."""
    try:
        t = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParamError(param, "must be a K x K list of lists of numbers") from None
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ParamError(param, f"must be square (K x K), got shape {t.shape}")
    if k is not None and t.shape[0] != k:
        raise ParamError(param, f"is {t.shape[0]} x {t.shape[0]} but there are {k} classes; it must be {k} x {k}",
                         file=file)
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ParamError(param, "entries must be finite and >= 0")
    sums = t.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _STOCHASTIC_TOL)
    if bad.size:
        raise ParamError(
            param, f"row {int(bad[0])} sums to {sums[bad[0]]:.6g}; every row must sum to 1 ({MATRIX_CONVENTION})"
        )
    return t
