"""One contract test over every registered stage (scikit-learn's check_estimator idea).

For each stage: its params survive a YAML round trip, `pipeline stages` can describe it, its
example runs and gives identical output twice under a seed, and an empty input is refused clearly
unless the stage declares it can take one. A stage that declares its output columns (what
`pipeline validate` checks the column flow with) must produce exactly those, in that order, and
exactly the side outputs it declares (what `pipeline validate` checks `step:side` inputs with).
"""

from __future__ import annotations

import inspect

import polars as pl
import pytest
import yaml
from conftest import check_side_outputs_declared

from pipeline.errors import InputDataError, PipelineError
from pipeline.registry import STAGES, load_plugins, stage_class

load_plugins()
LIBRARY = sorted(n for n, cls in STAGES.items() if not cls.__module__.startswith("plugin_stages"))


def test_library_has_stages():
    assert {"python_docs", "read_parquet", "split", "sample", "select"} <= set(LIBRARY)


@pytest.mark.parametrize("name", LIBRARY)
def test_stage_contract(name):
    cls = STAGES[name]
    assert inspect.getdoc(cls), f"{name} needs a docstring: `pipeline stages` prints its first line"
    try:
        example = cls.example()
    except PipelineError as exc:
        if "apt-get install" in str(exc):  # real data from a Debian package that is not installed here
            pytest.skip(str(exc))
        raise
    assert example is not None, f"{name} needs an example() for the conformance test"
    params, inputs = example
    stage = cls.from_params(params)
    # Constructor arguments are the config: get_params -> YAML -> from_params gives the same stage.
    dumped = yaml.safe_dump(stage.get_params())
    assert cls.from_params(yaml.safe_load(dumped)) == stage
    first = stage.execute(**inputs, seed=11)
    second = cls.from_params(params).execute(**inputs, seed=11)
    assert first.table.equals(second.table), f"{name} is not deterministic under a fixed seed"
    check_side_outputs_declared(stage, first)
    _check_declared_outputs(stage, inputs, first)
    assert first.side_outputs.keys() == second.side_outputs.keys()
    for key in first.side_outputs:
        assert first.side_outputs[key].equals(second.side_outputs[key])
    empty = {k: v.head(0) if isinstance(v, pl.DataFrame) else v for k, v in inputs.items()}
    if inputs and not cls.allow_empty_input:
        with pytest.raises(InputDataError, match="has no rows"):
            cls.from_params(params).execute(**empty, seed=11)
    elif inputs:
        # An input of no rows still gives the declared columns (a step of none was refused downstream).
        _check_declared_outputs(stage, empty, cls.from_params(params).execute(**empty, seed=11))


def _check_declared_outputs(stage, inputs, result) -> None:
    """Declared columns (and dtypes, where declared) are what the example's run produced."""
    schemas = {k: dict(v.schema) for k, v in inputs.items() if isinstance(v, pl.DataFrame)}
    if len(schemas) != len(inputs):
        return  # an input given as a path or an index: no schema to declare from here
    declared = stage.output_schema(schemas)
    if declared is not None and result.table is not None:
        produced = dict(result.table.schema)
        assert list(declared) == list(produced), f"{stage.name} declares {list(declared)}, produced {list(produced)}"
        for column, dtype in declared.items():
            assert dtype is None or produced[column] == dtype, f"{stage.name}.{column}: {dtype} != {produced[column]}"
    for side, columns in stage.side_output_schemas(schemas).items():
        assert side in result.side_outputs, f"{stage.name} declares columns of side output '{side}', not written"
        assert list(columns) == result.side_outputs[side].columns, f"{stage.name} side output '{side}'"


def test_stage_class_refuses_a_name_that_is_not_text():
    with pytest.raises(PipelineError, match=r"a stage name is text, got 5 \(int\)"):
        stage_class(5)
