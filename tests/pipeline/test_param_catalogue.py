"""The parameter catalogue: every registered stage refuses a wrong-typed value for each of its params,
from a library call (ParamError naming the parameter) and from a config (`pipeline validate`, exit 2)."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import write_config

from pipeline.cli import main
from pipeline.errors import ParamError
from pipeline.registry import STAGES, load_plugins


def _alternatives(type_name: str) -> list[str]:
    """Top-level alternatives of a type as `pipeline stages` prints it ("int | null" -> ["int", "null"])."""
    type_name = type_name.split(" (")[0]  # drop declared bounds: "float (>= 0, <= 1)"
    parts, depth, current = [], 0, ""
    for ch in type_name:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return parts + [current.strip()]


def wrong_value(type_name: str):
    """A value of the wrong type for this parameter (the mistake a person would make), or None to skip."""
    alts = [a for a in _alternatives(type_name) if a != "null"]
    if not alts or alts == ["any"]:
        return None
    first = alts[0]
    if first == "int":
        return "5"
    if first == "float":
        return "0.5"
    if first == "bool":
        return "yes"
    if first == "str" or first.startswith("'"):
        return 5 if first == "str" else "no-such-choice"
    if first.startswith("list"):
        return 5 if "str" in alts else "x"
    if first.startswith("dict"):
        return ["x"]
    return None


def _catalogue(capsys) -> list[dict]:
    assert main(["stages", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _cases(capsys):
    load_plugins()
    for stage in _catalogue(capsys):
        for param in stage["params"]:
            bad = wrong_value(param["type"])
            if bad is not None:
                yield stage, param, bad


def test_every_param_of_every_stage_refuses_a_wrong_type_in_library_calls(capsys):
    checked = 0
    for stage, param, bad in _cases(capsys):
        with pytest.raises(ParamError) as info:
            STAGES[stage["name"]](**{param["name"]: bad})
        assert info.value.param == param["name"], (stage["name"], param, str(info.value))
        checked += 1
    assert checked > 100  # the whole catalogue, not a sample


def test_int_params_refuse_booleans(capsys):
    checked = 0
    for stage in _catalogue(capsys):
        for param in stage["params"]:
            alts = _alternatives(param["type"])
            if "int" in alts and "bool" not in alts:
                with pytest.raises(ParamError, match="bool"):
                    STAGES[stage["name"]](**{param["name"]: True})
                checked += 1
    assert checked > 20


def test_every_stage_config_with_a_wrong_type_exits_2(capsys, tmp_path):
    first_bad = {}
    for stage, param, bad in _cases(capsys):
        first_bad.setdefault(stage["name"], (stage, param, bad))
    assert len(first_bad) >= 20
    for name, (stage, param, bad) in first_bad.items():
        step = {"id": "s", "stage": name, "params": {param["name"]: bad}}
        if stage["inputs"]:
            step["inputs"] = {i: "src" for i in stage["inputs"]}
        config = {"name": "catalogue", "seed": 0,
                  "steps": [{"id": "src", "stage": "test_random_rows", "params": {"n": 3}}, step]}
        path = write_config(tmp_path / f"{name}.yaml", yaml.safe_dump(config))
        assert main(["validate", str(path)]) == 2, name
        err = capsys.readouterr().err
        assert f"parameter '{param['name']}'" in err and "step 's'" in err, (name, err)


def test_misspelled_param_gets_a_suggestion():
    from stages.transforms import LengthFilter

    with pytest.raises(ParamError, match="did you mean 'min_words'"):
        LengthFilter(min_wrds=3)


@pytest.mark.parametrize("params, param, words", [
    ({"k": 3, "min_score": float("nan")}, "min_score", "must not be NaN"),
    ({"k": 3, "mmap_threshold_mb": float("nan")}, "mmap_threshold_mb", "must be >= 0, got nan"),  # bounded: fails it
])
def test_nan_is_refused_even_where_a_float_is_unbounded(params, param, words):
    from stages.retrieval import Retrieve

    with pytest.raises(ParamError, match=words) as err:
        Retrieve.from_params(params)
    assert err.value.param == param
