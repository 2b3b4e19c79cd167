"""Parameter constraints, declared once on a stage's constructor (pydantic `Annotated` types).

`n: Annotated[int, Field(ge=8, le=50)] = 13` is at once the range check (the constructor raises
ParamError naming `n`), the type shown by `pipeline stages` ("int (>= 8, <= 50)"), and the bound the
catalogue test exercises. Checks that relate two parameters stay in `Stage.validate`.
"""

from __future__ import annotations

import functools
import inspect
import operator
import re
import typing
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any

import annotated_types
import numpy as np
import pydantic
import pydantic.fields
import yaml
from pydantic import Field

from pipeline.errors import ParamError

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Cosine = Annotated[float, Field(ge=-1.0, le=1.0)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]


@dataclass
class ParamSpec:
    name: str
    annotation: Any
    default: Any
    doc: str

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    @property
    def type_name(self) -> str:
        return _type_name(self.annotation)


_CONSTRAINT_TEXT = (("ge", ">= {}"), ("gt", "> {}"), ("le", "<= {}"), ("lt", "< {}"),
                    ("min_length", "at least {} items"), ("max_length", "at most {} items"))


def _constraints(tp: Any) -> list[str]:
    """The declared bounds of an Annotated type, as text ("ge 0", "le 1" -> ">= 0, <= 1")."""
    found = []
    for meta in typing.get_args(tp)[1:]:
        for item in getattr(meta, "metadata", [meta]):
            for attr, text in _CONSTRAINT_TEXT:
                value = getattr(item, attr, None)
                if value is not None:
                    found.append(text.format(value))
    return found


def annotation_description(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Annotated:
        for meta in typing.get_args(tp)[1:]:
            if getattr(meta, "description", None):
                return meta.description
    return ""


def _type_name(tp: Any, bounds: bool = True) -> str:
    """How a parameter type reads in docs and errors ("int (>= 0) | null"; without bounds: "int | null")."""
    if tp is inspect.Parameter.empty or tp is Any:
        return "any"
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base = _type_name(typing.get_args(tp)[0], bounds)
        declared = _constraints(tp) if bounds else []
        return f"{base} ({', '.join(declared)})" if declared else base
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_name(a, bounds) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a, bounds) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


_DOC_PARAM = re.compile(r"^\s{0,8}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


def docstring_param_docs(cls: type) -> dict[str, str]:
    """Read one-line parameter docs from a `Parameters:` block in the class docstring."""
    doc = inspect.getdoc(cls) or ""
    docs: dict[str, str] = {}
    in_block = False
    for line in doc.splitlines():
        if line.strip().lower().rstrip(":") in ("parameters", "params", "args"):
            in_block = True
            continue
        if in_block:
            m = _DOC_PARAM.match(line)
            if m:
                docs[m.group(1)] = m.group(2).strip()
            elif line.strip() and not line.startswith(" "):
                in_block = False
    return docs


def checked_init(init: Any) -> Any:
    """Wrap a stage constructor so that a library call checks its params as a config would."""

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if type(self).__init__ is __init__:  # the outermost constructor only, not super().__init__ calls
            check_params(type(self), args, kwargs)
        init(self, *args, **kwargs)

    return __init__


_ADAPTERS: dict[Any, pydantic.TypeAdapter] = {}
# The exact types a strict check accepts for each plain annotation (an int where a float is expected).
_PLAIN_TYPES = {bool: (bool,), int: (int,), float: (float, int), str: (str,)}
_BOUND_CHECKS = {annotated_types.Ge: operator.ge, annotated_types.Gt: operator.gt,
                 annotated_types.Le: operator.le, annotated_types.Lt: operator.lt}


def _plainly_valid(annotation: Any, value: Any) -> bool:
    """True when `value` certainly passes the strict check of `annotation`, decided without pydantic: a bool, int,
    float or str of exactly that type, within the bounds declared (`Field(ge=...)`), if any, or None where the
    annotation allows it. Building a pydantic adapter costs ~3 ms an annotation, 10-15 ms of every fresh process
    that constructs a stage. Anything else, and every value that fails, goes through pydantic, which words the
    error."""
    if typing.get_origin(annotation) in (typing.Union, UnionType):  # `X | None`: None, or a plain X
        members = typing.get_args(annotation)
        kept = [m for m in members if m is not type(None)]
        return len(kept) == 1 < len(members) and (value is None or _plainly_valid(kept[0], value))
    checks = []
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *extras = typing.get_args(annotation)
        for extra in extras:
            for item in extra.metadata if isinstance(extra, pydantic.fields.FieldInfo) else [extra]:
                check = _BOUND_CHECKS.get(type(item))
                if check is None:
                    return False
                checks.append((check, getattr(item, type(item).__name__.lower())))
    exact = _PLAIN_TYPES.get(annotation) if isinstance(annotation, type) else None
    return (exact is not None and type(value) in exact
            and all(check(value, bound) for check, bound in checks))  # NaN fails every bound: left to pydantic


def _adapter(annotation: Any) -> pydantic.TypeAdapter:
    key = repr(annotation)
    if key not in _ADAPTERS:
        _ADAPTERS[key] = pydantic.TypeAdapter(annotation)
    return _ADAPTERS[key]


def _param_error(spec: ParamSpec, value: Any, error: pydantic.ValidationError) -> ParamError:
    """One readable line: the bound that failed, or the type that was expected."""
    for item in error.errors():
        ctx = item.get("ctx") or {}
        if any(attr in ctx for attr in ("ge", "gt", "le", "lt")):
            return ParamError(spec.name, f"must be {_range_text(ctx, spec.annotation)}, got {value!r}")
        for attr, text in _CONSTRAINT_TEXT:
            if attr in ctx:
                return ParamError(spec.name, f"must be {text.format(ctx[attr])}, got {value!r}")
    hint = next(filter(None, (_number_as_text_hint(item) for item in error.errors())), None)
    return ParamError(spec.name, f"expects {_type_name(spec.annotation, bounds=False)}, got {value!r} "
                                 f"({_builtin_type_name(value)})", hint=hint)


def _builtin_type_name(value: Any) -> str:
    """`dict`, not the config loader's `_LineDict` (a dict that remembers its line); a type built on no builtin
    but `object` (a Path, a NumPy scalar) by its own name."""
    return next((t.__name__ for t in type(value).__mro__ if t.__module__ == "builtins" and t is not object),
                type(value).__name__)


_NUMBER_TEXT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _number_as_text_hint(item: dict) -> str | None:
    """Advice for text that reads as a number where a number is expected (not coerced: strict types).

    YAML 1.1, which PyYAML reads, takes `3e-3` or `1.0e5` as text: a float needs a dot and a signed
    exponent (`3.0e-3`, `1.0e+5`). A number in quotes (`'0.5'`) is text too.
    """
    text = item.get("input")
    if item.get("type") not in ("float_type", "int_type") or not isinstance(text, str):
        return None
    text = text.strip()
    if not _NUMBER_TEXT.fullmatch(text):
        return None
    number = float(text)
    if number != number or number in (float("inf"), float("-inf")):
        return None
    if item["type"] == "int_type":
        if not number.is_integer():
            return None
        written = [str(int(number))]
    else:
        mantissa, _, exponent = text.lower().partition("e")
        written = [np.format_float_positional(number, trim="-")]
        if exponent:
            mantissa += "" if "." in mantissa else ".0"
            written.insert(0, f"{mantissa}e{'' if exponent[0] in '+-' else '+'}{exponent}")
    if "e" in text.lower() and isinstance(yaml.safe_load(text), str):  # YAML 1.1's float needs a dot and a sign
        return f"YAML reads {text} as text, not a number: write {' or '.join(written)}"
    return f"a number in quotes is text: write {written[-1] if item['type'] == 'int_type' else text} without quotes"


def _range_text(ctx: dict, annotation: Any) -> str:
    """The whole declared range ("in [0, 1]", "in (0, 1]", ">= 1"), whichever bound failed."""
    bounds = dict(ctx)
    for tp in [annotation, *typing.get_args(annotation)]:
        if typing.get_origin(tp) is typing.Annotated:
            for meta in typing.get_args(tp)[1:]:
                for item in getattr(meta, "metadata", [meta]):
                    for attr in ("ge", "gt", "le", "lt"):
                        if getattr(item, attr, None) is not None:
                            bounds.setdefault(attr, getattr(item, attr))
    lo = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    hi = (bounds["le"], "]") if "le" in bounds else (bounds["lt"], ")") if "lt" in bounds else None
    if lo and hi:
        return f"in {lo[0]}{lo[1]:g}, {hi[0]:g}{hi[1]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {lo[1]:g}"
    return f"{'<=' if hi[1] == ']' else '<'} {hi[0]:g}"


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return value != value
    if isinstance(value, (list, tuple)):
        return any(_has_nan(v) for v in value)
    return isinstance(value, dict) and any(_has_nan(v) for v in value.values())


def check_seed(seed: Any) -> int:
    """The one rule for a seed, in a config, `Stage.execute` and the array helpers: a non-negative integer below
    2**64 (the bits `Context.rng` keys on), a NumPy integer too; never a bool, float or string (1.5 would be 1)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 1 << 64:
        raise ParamError("seed", f"must be a non-negative integer below 2**64, got {seed!r} ({type(seed).__name__})")
    return int(seed)


def check_params(cls: Any, args: tuple, kwargs: dict[str, Any]) -> None:
    """Names, strict types and declared bounds of constructor arguments; ParamError on the first bad one.

    Strict: a bool is not an int, "5" is not a number, a number is not a string (YAML and Python
    alike); an int is accepted where a float is expected, and NumPy scalars count as Python numbers.
    """
    specs = {s.name: s for s in cls.param_specs()}
    names = list(specs)
    given = dict(zip(names, args))
    for key in kwargs:
        if key not in specs:
            import difflib

            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ParamError(key, f"unknown parameter; {hint}'{cls.name or cls.__name__}' takes: "
                                  f"{', '.join(names) or 'no parameters'}")
        given[key] = kwargs[key]
    for key, value in given.items():
        spec = specs[key]
        if spec.annotation is inspect.Parameter.empty or spec.annotation is Any:
            continue
        if isinstance(value, np.generic):
            value = value.item()
        try:
            if not _plainly_valid(spec.annotation, value):
                _adapter(spec.annotation).validate_python(value, strict=True)
        except pydantic.ValidationError as exc:
            raise _param_error(spec, value, exc) from None
        if _has_nan(value):  # NaN passes an unbounded float and fails every comparison later (min_score: .nan)
            raise ParamError(key, f"must not be NaN, got {value!r}")
    missing = [n for n, s in specs.items() if s.required and n not in given]
    if missing:
        raise ParamError(missing[0], "is required")


__all__ = ["Annotated", "Cosine", "Field", "Fraction", "NonNegativeFloat", "NonNegativeInt", "PositiveInt"]
