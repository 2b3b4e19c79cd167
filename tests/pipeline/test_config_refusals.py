"""Bad configs (pipeline/config.py) get one clear line naming step, key and file, exit code 2, no traceback."""

from __future__ import annotations

import os

import pytest
from cli_failures import BASE, fails_cleanly, refused_by_validate
from conftest import run_cli, write_config

from pipeline.config import parse_config
from pipeline.errors import PipelineError


def test_unknown_stage_suggests_the_right_one(tmp_path):
    fails_cleanly(tmp_path, BASE + "  - id: s\n    stage: splt\n    inputs: docs\n",
           "step 's'", "unknown stage 'splt'", "did you mean 'split'", "c.yaml",
           in_process=False)  # exit 2 and one line from a real `python -m pipeline.cli`; the others run in process


def test_unknown_param(tmp_path):
    fails_cleanly(tmp_path, BASE + "  - id: s\n    stage: sample\n    inputs: docs\n    params: {count: 3}\n",
           "step 's' (stage 'sample')", "parameter 'count'", "unknown parameter", "takes: n, fraction")


def test_wrong_type(tmp_path):
    fails_cleanly(tmp_path, BASE + "  - id: s\n    stage: sample\n    inputs: docs\n    params: {n: lots}\n",
           "parameter 'n'", "expects int | null, got 'lots'")


@pytest.mark.parametrize("stage, params, advice", [
    ("sample", "{fraction: 3e-3}", "(YAML reads 3e-3 as text, not a number: write 3.0e-3 or 0.003)"),
    ("sample", "{fraction: 1E5}", "(YAML reads 1E5 as text, not a number: write 1.0e+5 or 100000)"),  # needs e+5
    ("split", "{fractions: {train: 8e-1, test: 0.2}}", "write 8.0e-1 or 0.8)"),  # inside a mapping too
    ("sample", "{n: 1e2}", "(YAML reads 1e2 as text, not a number: write 100)"),
    ("sample", "{n: '7'}", "(a number in quotes is text: write 7 without quotes)"),
    # YAML would read 3.0e-3 as a float: the quotes are the trouble, not the form (it advised "write 3.0e-3").
    ("sample", "{fraction: '3.0e-3'}", "(a number in quotes is text: write 3.0e-3 without quotes)"),
])
def test_text_that_reads_as_a_number_gets_advice_not_a_silent_cast(tmp_path, stage, params, advice):
    """YAML 1.1 reads `3e-3` (no dot, no exponent sign) as a string: the refusal said only "expects float"."""
    text = BASE + f"  - id: s\n    stage: {stage}\n    inputs: docs\n    params: {params}\n"
    message = refused_by_validate(tmp_path / "c.yaml", text)
    assert "step 's'" in message and message.endswith(advice), message


def test_a_value_of_no_builtin_type_is_named_by_its_own_type():
    # A Path given from Python read "(object)": the first cut of the loader-dict naming stopped at object.
    from pathlib import Path

    from pipeline.errors import ParamError
    from stages.transforms import Sample

    with pytest.raises(ParamError, match=r"got PosixPath\('x'\) \(PosixPath\)"):
        Sample.from_params({"n": Path("x")})


def test_invalid_value(tmp_path):
    fails_cleanly(tmp_path, BASE + "  - id: s\n    stage: sample\n    inputs: docs\n    params: {fraction: 1.5}\n",
           "parameter 'fraction'", "must be in [0, 1]")


def test_missing_column(tmp_path):
    fails_cleanly(tmp_path, BASE + "  - id: f\n    stage: length_filter\n    inputs: docs\n    params: {text_column: body}\n",
           "step 'f' (stage 'length_filter')", "no column 'body'", "parameter 'text_column'", "columns are")


def test_cycle_and_duplicate_ids(tmp_path):
    cyc = BASE + "  - id: a\n    stage: select\n    inputs: b\n  - id: b\n    stage: select\n    inputs: a\n"
    fails_cleanly(tmp_path, cyc, "cycle", "a -> b -> a")
    dup = BASE + "  - id: docs\n    stage: python_docs\n"
    fails_cleanly(tmp_path, dup, "duplicate step id 'docs'", "c.yaml")


def test_step_id_cannot_escape_the_workdir(tmp_path):
    fails_cleanly(tmp_path, BASE + "  - id: ../../evil\n    stage: select\n    inputs: docs\n", "'id' must be", "run folder")
    assert not (tmp_path / "evil").exists()


def test_yaml_cannot_run_code(tmp_path):
    text = BASE + "  - id: s\n    stage: !!python/object/apply:os.system ['touch pwned']\n"
    fails_cleanly(tmp_path, text, "not valid YAML", "c.yaml")
    assert not (tmp_path / "pwned").exists()


def test_bad_set_override_and_missing_config(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", BASE)
    proc = run_cli("run", str(cfg), "--set", "docs.granularity=chapter", "--workdir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "parameter 'granularity'" in proc.stderr and "'topic' | 'paragraph'" in proc.stderr
    proc = run_cli("run", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "config file not found" in proc.stderr


def test_run_name_cannot_take_the_workdir_index_page():
    steps = [{"id": "docs", "stage": "python_docs"}]
    for name in ("index.html", "INDEX.html"):  # a case-insensitive file system clashes too
        with pytest.raises(PipelineError, match="'name' .* is taken by the workdir's own page"):
            parse_config({"name": name, "seed": 0, "steps": steps})


@pytest.mark.parametrize("seed", [1.5, True, "0", -1, 1 << 64])
def test_config_seed_follows_the_one_seed_rule(seed):
    steps = [{"id": "docs", "stage": "python_docs"}]
    with pytest.raises(PipelineError, match=r"'seed' must be a non-negative integer below 2\*\*64, got "):
        parse_config({"name": "s", "seed": seed, "steps": steps})


def test_a_run_folder_as_an_input_path_is_refused(tmp_path):
    # docs -> length_filter share a schema: read as one input path, the run folder gave both steps' rows.
    run_cli("run", str(write_config(tmp_path / "first.yaml", BASE)), "--workdir", str(tmp_path / "runs"))
    text = BASE.replace("name: bad", "name: reader") + f"  - id: f\n    stage: length_filter\n    inputs: {tmp_path / 'runs' / 'bad'}\n"
    message = refused_by_validate(tmp_path / "reader.yaml", text)
    assert "step 'f'" in message and "is a run folder, not a step: name one of its steps (docs)" in message


def test_inputs_given_to_a_source_say_it_takes_none():
    # It read "stage 'python_docs' takes named inputs []; write inputs as a mapping": a mapping of nothing.
    steps = [{"id": "docs", "stage": "python_docs"}, {"id": "more", "stage": "python_docs", "inputs": "docs"}]
    with pytest.raises(PipelineError, match="stage 'python_docs' is a source and takes no inputs; remove 'inputs'"):
        parse_config({"name": "s", "seed": 0, "steps": steps})


@pytest.mark.parametrize("bad", ["_tmp", "-x", "a" * 129])
def test_an_id_or_name_of_allowed_characters_says_what_else_it_needs(bad):
    # `_tmp` is letters and '_', which the refusal listed as allowed: it did not say why it was refused.
    for config in ({"name": bad, "seed": 0, "steps": [{"id": "docs", "stage": "python_docs"}]},
                   {"name": "s", "seed": 0, "steps": [{"id": bad, "stage": "python_docs"}]}):
        with pytest.raises(PipelineError, match=r"starting with a letter or digit, at most 128"):
            parse_config(config)


def test_a_run_folder_named_from_home_is_refused_too(tmp_path, monkeypatch):
    # Paths a config names read '~' as home (find_files); the run-folder check read it literally and let it by.
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "runs" / "bad" / "docs").mkdir(parents=True)
    (tmp_path / "runs" / "bad" / "_run.json").write_text("{}")
    steps = [{"id": "f", "stage": "length_filter", "inputs": "~/runs/bad"}]
    with pytest.raises(PipelineError, match="is a run folder, not a step"):
        parse_config({"name": "s", "seed": 0, "steps": steps})


@pytest.mark.parametrize("command", [("run", "--workdir"), ("run", "--dry-run", "--workdir"), ("validate",),
                                     ("show", "--workdir")])
def test_a_config_that_is_no_regular_file_is_refused_not_waited_on(tmp_path, command):
    # A named pipe: reading it waited forever for a writer (`pipeline run` hung); a folder was "cannot read config".
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    (tmp_path / "d.yaml").mkdir()
    for path, kind in ((fifo, "a named pipe"), (tmp_path / "d.yaml", "a folder")):
        if command[0] == "show" and kind == "a folder":
            continue  # a folder is read by `show` as a run folder
        workdir = [str(tmp_path / "runs")] if command[-1] == "--workdir" else []
        proc = run_cli(command[0], str(path), *command[1:], *workdir, timeout=20)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert f"file '{path}': is not a regular file ({kind}); give a config file" in lines[0]
