"""The `pipeline` command (pipeline/cli.py): run, show, stages and validate on a small pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_failures import BASE
from conftest import run_cli, write_config
from engine_config import CONFIG


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "eng.yaml", CONFIG)


def test_cli_show_stages_validate(config, tmp_path):
    work = tmp_path / "runs"
    # One `python -m pipeline.cli run` end to end in a fresh interpreter; the rest in process.
    run = run_cli("run", str(config), "--workdir", str(work), "--quiet", in_process=False)
    assert run.returncode == 0 and run.stdout == "", run.stderr
    show = run_cli("show", "eng", "--workdir", str(work))
    assert show.returncode == 0 and "split" in show.stdout and "train/" in show.stdout
    stages = run_cli("stages", "split")
    assert "fractions" in stages.stdout and "share of rows" in stages.stdout
    # An optional input says so (the listing read "inputs: train, test, index, truth, duplicates").
    audit = run_cli("stages", "leakage_audit")
    assert "inputs: train, test, index (optional), truth (optional), duplicates (optional)" in audit.stdout, audit.stdout
    listed = json.loads(run_cli("stages", "leakage_audit", "--json").stdout)
    assert listed[0]["optional_inputs"] == ["index", "truth", "duplicates"]
    valid = run_cli("validate", str(config))
    assert valid.returncode == 0 and "docs -> long -> sample -> split -> test_only" in valid.stdout


@pytest.mark.parametrize("command", [["run"], ["run", "--dry-run"], ["cache"]])
def test_a_file_as_workdir_is_refused_in_one_line(config, tmp_path, command):
    """`--workdir results.csv` (or a path under a file) failed as NotADirectoryError, exit 1, reported as a bug."""
    taken = tmp_path / "results.csv"
    taken.write_text("keep me\n")
    args = [*command[:1], str(config), *command[1:]] if command[0] == "run" else command
    for workdir in (taken, taken / "runs"):
        proc = run_cli(*args, "--workdir", str(workdir))
        assert proc.returncode == 2, proc.stderr
        message = proc.stderr.strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in message, message
        assert f"parameter '--workdir', file '{taken}': is a file, not a folder" in message
    assert taken.read_text() == "keep me\n"


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path):
    """`pipeline cache | head`: a closed pipe is not a bug report. Before, exit 1 and "this looks like a bug"."""
    import os
    import subprocess
    import sys

    from conftest import REPO, TESTS

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")])}
    try:
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "cache", "--workdir", str(tmp_path / "runs")],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""


def test_a_broken_pipe_that_is_not_stdout_is_still_reported(monkeypatch, capsys):
    # A pipe of our own (a worker's) breaking is a failure, not a reader going away: exit 1 with the usual line.
    import argparse

    from pipeline import cli

    def handler(args):
        raise BrokenPipeError(32, "Broken pipe")

    parser = argparse.ArgumentParser()
    parser.set_defaults(_handler=handler)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main([]) == 1
    assert "error: BrokenPipeError: [Errno 32] Broken pipe" in capsys.readouterr().err


@pytest.mark.parametrize("extra, expected", [
    (("--executor-option", "nope=1"), "the local executor takes only the options"),
    (("--executor-option", "fragment_rows=abc"), "fragment_rows must be a whole number"),
    (("--address", "10.0.0.1:6379"), "--address is for --executor ray"),
    (("--executor-option", "fragment_rows=*x"), "--executor-option fragment_rows=*x:1:1: not valid YAML"),
])
def test_executor_options_are_checked_in_a_dry_run_as_in_a_run(tmp_path, extra, expected):
    # A dry run printed its plan and exit 0 for options the run then refused; `*x` was a YAML traceback (exit 1).
    cfg = write_config(tmp_path / "c.yaml", BASE)
    for dry in (("--dry-run",), ()):
        proc = run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"), *dry, *extra)
        assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()


def test_a_tilde_in_workdir_and_in_a_config_path_means_home(tmp_path, monkeypatch):
    # No shell expands `--workdir=~/runs`: a folder named '~' appeared in the current directory (one `rm -rf ~`
    # from a disaster), and `path: ~/corpus.jsonl` "did not exist".
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "c.jsonl").write_text('{"text": "a document at home"}\n')
    cfg = write_config(tmp_path / "c.yaml", "name: t\nseed: 0\nsteps:\n  - id: a\n    stage: read_corpus\n"
                                            "    params: {path: ~/c.jsonl}\n")
    proc = run_cli("run", str(cfg), "--workdir=~/runs", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "home" / "runs" / "t" / "a" / "_manifest.json").is_file()
    assert not (tmp_path / "~").exists()


def test_show_of_a_damaged_run_record_is_one_line(tmp_path):
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "_run.json").write_text("garbage")
    proc = run_cli("show", "r", "--workdir", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "the run record is damaged" in proc.stderr and "run the pipeline again" in proc.stderr


def test_show_takes_a_config_and_wait_refuses_negative_seconds(tmp_path):
    # `pipeline show configs/x.yaml` said "no run found"; `--wait -1` was taken as no wait, without a word.
    cfg = write_config(tmp_path / "c.yaml", "name: shown\nseed: 0\nsteps:\n  - id: docs\n    stage: python_docs\n"
                                            "    params: {granularity: topic}\n")
    assert run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"), "--quiet").returncode == 0
    shown = run_cli("show", str(cfg), "--workdir", str(tmp_path / "runs"))
    assert shown.returncode == 0 and shown.stdout.startswith("pipeline shown") and "docs" in shown.stdout
    waited = run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"), "--wait", "-1")
    assert waited.returncode == 2 and "--wait: must be a number of seconds, 0 or more, got '-1'" in waited.stderr


def test_an_empty_address_and_bad_ray_options_in_a_dry_run_are_one_line(tmp_path):
    # `--address ""` was dropped (a local Ray started in the process); a dry run checked only local options.
    cfg = write_config(tmp_path / "c.yaml", "name: r\nseed: 0\nsteps:\n  - id: docs\n    stage: python_docs\n")
    empty = run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"), "--executor", "ray", "--address", "")
    assert empty.returncode == 2 and "address must be a Ray head's HOST:PORT" in empty.stderr
    dry = run_cli("run", str(cfg), "--workdir", str(tmp_path / "runs"), "--executor", "ray", "--dry-run",
                  "--executor-option", "max_retries=x")
    assert dry.returncode == 2 and "max_retries must be a whole number" in dry.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("debug", [False, True])
def test_ctrl_c_while_the_command_imports_its_modules_is_one_line_and_130(tmp_path, debug):
    # Ctrl-C is simulated by a module of the engine (yaml) that raises KeyboardInterrupt as it is imported. The
    # package imported polars, pyarrow and the engine before main() could catch it: a traceback, killed by SIGINT.
    (tmp_path / "yaml.py").write_text("raise KeyboardInterrupt\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[2])]))
    entry_point = "import sys\nfrom pipeline.cli import main\nsys.exit(main())"  # what the `pipeline` script runs
    proc = subprocess.run([sys.executable, "-c", entry_point, *(["--debug"] if debug else []), "stages"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("interrupted")
    assert ("Traceback" in proc.stderr) == debug and (len(proc.stderr.strip().splitlines()) == 1) != debug


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc/self/status")
@pytest.mark.parametrize("preset", [None, "1"])
def test_the_command_runs_without_transparent_huge_pages_unless_the_user_set_it(tmp_path, preset):
    """The `pipeline` command sets MIMALLOC_ALLOW_THP=0 before pyarrow loads, and Arrow's allocator then turns huge
    pages off for the process (prctl): each huge-page fault cost milliseconds on this project's VMs. A value the
    user set is kept."""
    env = {k: v for k, v in os.environ.items() if k != "MIMALLOC_ALLOW_THP"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    if preset is not None:
        env["MIMALLOC_ALLOW_THP"] = preset
    script = ("import os\nfrom pipeline.cli import main\nmain(['stages'])\nimport pyarrow\n"
              "status = open('/proc/self/status').read().split('THP_enabled:')[1].split()[0]\n"
              "print('RESULT', os.environ['MIMALLOC_ALLOW_THP'], status, pyarrow.default_memory_pool().backend_name)")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    setting, thp_enabled, backend = proc.stdout.split("RESULT ")[1].split()
    if backend != "mimalloc":
        pytest.skip(f"Arrow's default pool here is {backend}: the setting is mimalloc's")
    assert (setting, thp_enabled) == (("0", "0") if preset is None else ("1", "1"))
