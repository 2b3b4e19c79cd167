"""Bad configs and bad values: one line (`file:line:col: message` for YAML), exit 2, nothing run.

Part of the bad-input catalogue of issue #17: YAML syntax, tabs, Python tags, `--set` values,
resource bounds (size, alias expansion, depth, integers), split names and ids, library misuse.
"""

from __future__ import annotations

import tracemalloc

import polars as pl
import pytest
from conftest import run_cli, write_config

from pipeline import run_pipeline
from pipeline.config import MAX_CONFIG_BYTES, load_yaml, parse_config
from pipeline.errors import InputDataError, ParamError, PipelineError

GOOD = "name: bad\nseed: 0\nsteps:\n  - id: docs\n    stage: python_docs\n    params: {granularity: topic}\n"

BOMB = "name: bad\nseed: 0\n" + "".join(
    f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9 if i else ['"lol"'] * 9) + "]\n" for i in range(10)
) + "steps:\n  - id: s\n    stage: select\n    params: {columns: *l9}\n"


def _one_line(tmp_path, text: str, *expected: str, args=("validate",), extra=()) -> str:
    cfg = write_config(tmp_path / "c.yaml", text)
    proc = run_cli(*args, str(cfg), *extra)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for piece in expected:
        assert piece in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("text,expected", [
    (GOOD.replace("steps:\n", "steps: [\n"), "c.yaml:4:3: not valid YAML: expected the node content"),
    (GOOD.replace("  - id: docs", "\t- id: docs"), "c.yaml:4:1: not valid YAML: found character '\\t'"),
    (GOOD + "  - id: x\n    stage: !!python/object/apply:os.system ['touch pwned']\n",
     "c.yaml:8:12: not valid YAML: tag '!!python/object/apply:os.system' is not allowed"),
    (GOOD.replace("seed: 0\n", "seed: 0\nseed: 1\n"), "c.yaml:3:1: key 'seed' appears twice"),
    ("name: bad\nseed: 0\nsteps: &s\n  - *s\n", "c.yaml:3:8: a YAML alias refers to itself"),
    ("name: bad\nseed: 0\nsteps:\n" + "  " + "[" * 150 + "]" * 150 + "\n", "nested more than 100 levels deep"),
    (GOOD.replace("{granularity: topic}", "{min_chars: 100000000000000000000000}"),
     "c.yaml:6:25: integer 100000000000000000000000 is beyond 64 bits"),
])
def test_yaml_errors_are_one_line_with_file_line_col(tmp_path, text, expected):
    line = _one_line(tmp_path, text, expected)
    assert "Traceback" not in line
    assert not (tmp_path / "pwned").exists()


def test_tabs_say_what_to_do(tmp_path):
    _one_line(tmp_path, GOOD.replace("  - id: docs", "\t- id: docs"), "indents with spaces, not tabs")


def test_an_alias_bomb_fails_fast_in_one_line(tmp_path):
    _one_line(tmp_path, BOMB, "expands to more than 1,000,000 values", "alias bomb")
    tracemalloc.start()
    with pytest.raises(PipelineError, match="alias bomb"):
        load_yaml(BOMB, "bomb.yaml")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 << 20  # refused while it is still a small graph, never expanded


def test_a_huge_config_is_refused_before_it_is_read(tmp_path):
    text = GOOD + "description: " + "x" * (MAX_CONFIG_BYTES + 1) + "\n"
    _one_line(tmp_path, text, "config is larger than 4 MB")


@pytest.mark.parametrize("value,expected", [
    ("docs.granularity=[1, 2", "--set docs.granularity=[1, 2:1:6: not valid YAML"),
    ("docs.granularity=!!python/name:os.system", "tag '!!python/name:os.system' is not allowed"),
    ("docs.min_chars=99999999999999999999999", "integer 99999999999999999999999 is beyond 64 bits"),
    ("docs.granularity", "--set expects STEP.PARAM=VALUE"),
    ("nostep.x=1", "no step 'nostep'"),
])
def test_bad_set_values_are_one_line(tmp_path, value, expected):
    _one_line(tmp_path, GOOD, expected, extra=("--set", value))


def test_a_huge_size_param_exits_2_naming_where(tmp_path):
    text = GOOD + "  - id: c\n    stage: chunk\n    inputs: docs\n    params: {size: 1000000000000000000000}\n"
    _one_line(tmp_path, text, "c.yaml:10:20: integer 1000000000000000000000 is beyond 64 bits", args=("run",),
              extra=("--workdir", str(tmp_path / "runs")))


def test_a_unicode_split_name_exits_2(tmp_path):
    text = GOOD + "  - id: s\n    stage: split\n    inputs: docs\n    params: {fractions: {träin: 0.5, tést: 0.5}}\n"
    _one_line(tmp_path, text, "step 's' (stage 'split')", "parameter 'fractions'", "'träin'", "ASCII")


def test_split_refuses_duplicate_ids(tmp_path):
    data = tmp_path / "dups.parquet"
    pl.DataFrame({"id": ["a", "b", "a", "c"], "text": ["w", "x", "y", "z"]}).write_parquet(data)
    text = f"name: bad\nseed: 0\nsteps:\n  - id: s\n    stage: split\n    inputs: {data}\n"
    _one_line(tmp_path, text, "step 's' (stage 'split')", "parameter 'id_column'", "column 'id' holds duplicate ids",
              "'a'", str(data), args=("run",), extra=("--workdir", str(tmp_path / "runs")))
    from stages.transforms import Split

    with pytest.raises(InputDataError, match="duplicate ids"):
        Split().apply(pl.read_parquet(data))


@pytest.mark.parametrize("config", [3, None, ["steps"], b"name: x"])
def test_run_pipeline_names_its_config_parameter(config, tmp_path):
    with pytest.raises(ParamError) as caught:
        run_pipeline(config, workdir=tmp_path)
    assert caught.value.param == "config"


def test_set_gives_a_text_param_the_text_as_typed():
    # Parsed as YAML, `glob=*.jsonl` was an alias error, ` #...` a comment silently dropped and `'a: b'` a mapping.
    steps = [{"id": "docs", "stage": "python_docs"}, {"id": "q", "stage": "sql", "inputs": "docs",
                                                      "params": {"query": "SELECT * FROM data"}},
             {"id": "f", "stage": "length_filter", "inputs": "q"}]
    query = """SELECT id, text, text AS "*body" FROM data WHERE text <> 'a: b' AND id <> '#1' -- keep #2"""
    config = parse_config({"name": "s", "seed": 0, "steps": steps},
                          overrides=[f"q.query={query}", "f.text_column=*body", "f.min_words=7"])
    assert config.step("q").params["query"] == query
    assert config.step("f").params == {"text_column": "*body", "min_words": 7}  # an int param still reads YAML
    quoted = parse_config({"name": "s", "seed": 0, "steps": steps}, overrides=["q.query='SELECT * FROM data'"])
    assert quoted.step("q").params["query"] == "SELECT * FROM data"
