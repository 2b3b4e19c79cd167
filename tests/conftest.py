import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))

import plugin_stages  # noqa: E402,F401  - registers the test-only stages in this process

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The distilled static table is a pure function of the installed MiniLM, so test sessions share the machine's
# (where a user's first static run puts it) instead of distilling it again in each session's isolated data
# cache: about 25 s a session on 2 cores.
os.environ.setdefault("CORPUSFORGE_MODEL_CACHE", str(Path.home() / ".cache" / "corpusforge" / "static-models"))
# torch and faiss each load libgomp, whose threads spin after a parallel region by default. On a 2-core machine
# that other work also uses, a spinning thread holds the core its partner needs, and a team waits whole scheduler
# slices at every barrier: MiniLM on 40 paragraphs took 7-10 s instead of 1.3 s, the retrieval and embedding tests
# 91-97 s instead of 34-47 s. Idle threads that sleep give the same results (set before either library loads;
# CLI subprocesses and the Ray cluster inherit it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


RAY_FIXTURE = "ray_cluster"


@pytest.fixture(scope="session")
def ray_cluster():
    """A real two-node Ray cluster on loopback (a head and one worker node, one CPU each), shared by the session.

    One cluster for every Ray test: each driver gets its own workers from it, and starting and stopping a
    cluster per module cost about 11 s each (nine modules). `pytest_collection_modifyitems` runs the modules
    that use it last, so it is up only while they run.
    """
    pytest.importorskip("ray", reason="the Ray executor's tests need ray (pip install 'corpusforge[ray]')")
    from loopback_cluster import LoopbackCluster

    paths = [str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")]
    env = {"PYTHONPATH": os.pathsep.join(p for p in paths if p), "HF_HUB_OFFLINE": "1"}
    cluster = LoopbackCluster(workers=1, cpus_per_node=1, env=env)
    try:
        yield cluster
    finally:
        cluster.stop()


def pytest_collection_modifyitems(config, items):
    """Modules with a test on the Ray cluster run last, in their collected order (see `ray_cluster`)."""
    def module(item):
        return getattr(item, "module", None)

    on_ray = {module(i) for i in items if RAY_FIXTURE in getattr(i, "fixturenames", ())}
    items[:] = [i for i in items if module(i) not in on_ray] + [i for i in items if module(i) in on_ray]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Library calls cache under CORPUSFORGE_CACHE; keep each test session's cache out of $HOME."""
    monkeypatch.setenv("CORPUSFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120,
            in_process: bool = True) -> subprocess.CompletedProcess:
    """Run the `pipeline` CLI with the test-only stages loaded: its exit code, stdout and stderr.

    In this process by default: a fresh interpreter importing polars, pyarrow and the stages cost 1.5-2 s a call on
    2 cores, most of the suite's CLI time. `in_process=False` runs `python -m pipeline.cli` in a subprocess, for the
    tests about the process itself: its exit status, what a fresh interpreter imports, a lock another pid holds,
    --debug's traceback. `timeout`: a subprocess is killed after it; in process, a call still running after it is
    interrupted with TimeoutError (a hung call would otherwise hold CI to its own limit).
    """
    if in_process:
        return _run_cli_in_process(args, cwd, timeout)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    env["CORPUSFORGE_PLUGINS"] = "plugin_stages"
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


# The warning filters of a plain `python -m pipeline.cli` (sys.warnoptions empty): pytest's own would show
# DeprecationWarnings a user never sees, and record the rest instead of printing them to stderr.
_PYTHON_DEFAULT_WARNINGS = [("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, ""),
                            ("ignore", PendingDeprecationWarning, ""), ("ignore", ImportWarning, ""),
                            ("ignore", ResourceWarning, "")]


def _run_cli_in_process(args: tuple[str, ...], cwd: Path | None, timeout: float) -> subprocess.CompletedProcess:
    """`pipeline.cli.main(args)` as a subprocess would see it: stdout and stderr captured both as Python streams and
    as file descriptors 1 and 2 (what extensions such as polars' Rust panics write there counts too), the warnings
    the CLI raised printed to stderr under Python's default filters, argparse's exits as exit codes, and the working
    folder, environment and command line the runner records put back afterwards."""
    import contextlib
    import io
    import signal
    import tempfile
    import warnings
    from unittest import mock

    from pipeline import runner
    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    folder, command_line = os.getcwd(), runner.COMMAND_LINE
    with (tempfile.TemporaryFile("w+") as fd_out, tempfile.TemporaryFile("w+") as fd_err,
          warnings.catch_warnings(record=True) as caught,
          mock.patch.dict(os.environ, {"CORPUSFORGE_PLUGINS": "plugin_stages"})):  # the whole environment put back
        warnings.resetwarnings()
        for action, category, module in reversed(_PYTHON_DEFAULT_WARNINGS):
            warnings.filterwarnings(action, category=category, module=module)
        sys.stdout.flush()
        sys.stderr.flush()
        kept = os.dup(1), os.dup(2)

        def hung(signum, frame):
            raise TimeoutError(f"pipeline {' '.join(args)} ran past its {timeout} s timeout")

        previous_alarm = signal.signal(signal.SIGALRM, hung)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            os.dup2(fd_out.fileno(), 1)
            os.dup2(fd_err.fileno(), 2)
            if cwd is not None:
                os.chdir(cwd)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(list(args))
                except SystemExit as exc:  # argparse: 2 for a usage error, 0 for --help
                    code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
                    if isinstance(exc.code, str):
                        print(exc.code, file=sys.stderr)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_alarm)
            os.dup2(kept[0], 1)
            os.dup2(kept[1], 2)
            for fd in kept:
                os.close(fd)
            os.chdir(folder)
            runner.COMMAND_LINE = command_line
        for w in caught:
            err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
        fd_out.seek(0)
        fd_err.seek(0)
        stdout, stderr = out.getvalue() + fd_out.read(), err.getvalue() + fd_err.read()
    return subprocess.CompletedProcess(["pipeline", *args], code, stdout, stderr)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def check_side_outputs_declared(stage, result) -> None:
    """The side outputs a run wrote are exactly those its params declare (what `pipeline validate` checks a
    `step:side` input against): each written one matches a declared name or pattern, each declared one was written.
    The contract test checks every stage's example; a stage's own tests check the params that change the set."""
    from fnmatch import fnmatchcase

    declared, written = stage.side_output_names(), sorted(result.side_outputs)
    unmatched = [s for s in written if not any(fnmatchcase(s, d) for d in declared)]
    unwritten = [d for d in declared if not any(fnmatchcase(s, d) for s in written)]
    assert not unmatched and not unwritten, f"{stage.name} declares side outputs {list(declared)}, wrote {written}"
