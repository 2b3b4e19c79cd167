"""The Ray executor gives the local executor's results, on a real two-node cluster started with `ray start`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from ray_cluster import REPO_ROOT

from pipeline import load, run_pipeline
from pipeline.errors import PipelineError
from pipeline.stage import Context, RowwiseStage

ray = pytest.importorskip("ray", reason="the Ray executor's tests need ray (pip install 'corpusforge[ray]')")


def _config(name: str, steps: list[dict]) -> dict:
    return {"name": name, "seed": 7, "steps": steps}


def _docs_steps(marker_dir: Path | None = None, kill_at_id: str | None = None) -> list[dict]:
    tag_params = {}
    if marker_dir is not None:
        tag_params["marker_dir"] = str(marker_dir)
    if kill_at_id is not None:
        tag_params["kill_at_id"] = kill_at_id
    return [
        {"id": "docs", "stage": "python_docs", "params": {"granularity": "paragraph", "min_chars": 80}},
        {"id": "prose", "stage": "length_filter", "inputs": "docs", "params": {"min_words": 12}},
        {"id": "tagged", "stage": "test_ray_tag_length", "inputs": "prose", "params": tag_params},
        {"id": "split", "stage": "split", "inputs": "tagged", "params": {"fractions": {"train": 0.8, "test": 0.2}}},
        {"id": "sample", "stage": "sample", "inputs": "split:train", "params": {"n": 100}},
        {"id": "short", "stage": "sql", "inputs": "sample",
         "params": {"query": "SELECT id, chars FROM data WHERE chars < 400"}},
        {"id": "ids", "stage": "select", "inputs": "short", "params": {"columns": ["id"]}},
    ]


def _step_tables(run_dir: Path, step: str) -> dict[str, pl.DataFrame]:
    manifest = json.loads((run_dir / step / "_manifest.json").read_text())
    tables = {"": load(run_dir / step).collect()}
    for side in manifest["side_outputs"]:
        tables[side] = load(run_dir / f"{step}@{side}").collect()
    # The run-folder layout is the executor's too: side outputs beside the step folder, none inside.
    assert not [p.name for p in (run_dir / step).iterdir() if p.is_dir()], step
    return tables


def _parts(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("part-*.parquet"))}


def _assert_same_files(local: Path, remote: Path) -> None:
    """The same part files, byte for byte: rows, batches, row groups and names alike."""
    a, b = _parts(local), _parts(remote)
    assert list(a) == list(b), f"{remote.name}: parts {list(b)} on Ray, {list(a)} locally"
    assert [n for n in a if a[n] != b[n]] == [], f"{remote.name}: these parts' bytes differ from local"


def _assert_same_runs(local_dir: Path, ray_dir: Path, steps: list[str], skip_stats: tuple[str, ...] = ()) -> None:
    def folders(run_dir: Path) -> list[str]:
        return sorted(p.name for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    assert folders(local_dir) == folders(ray_dir)
    for folder in folders(local_dir):
        if any(folder == s or folder.startswith(f"{s}@") for s in steps):
            _assert_same_files(local_dir / folder, ray_dir / folder)
    for step in steps:
        local, remote = _step_tables(local_dir, step), _step_tables(ray_dir, step)
        assert sorted(local) == sorted(remote), step
        for name in local:
            a, b = local[name], remote[name]
            differing = [c for c in a.columns if c not in b.columns or not a[c].equals(b[c])]
            assert a.equals(b), f"step {step} {name or 'main'} differs from local in columns {differing}"
        if step not in skip_stats:
            local_stats = json.loads((local_dir / step / "_manifest.json").read_text())["stats"]
            ray_stats = json.loads((ray_dir / step / "_manifest.json").read_text())["stats"]
            assert local_stats == ray_stats, step
        assert json.loads((ray_dir / step / "_manifest.json").read_text())["executor"] == "ray"


# ------------------------------------------------------------------------------ no cluster needed


def test_import_pipeline_does_not_import_ray():
    code = "import sys, pipeline, stages; pipeline.load_plugins(); assert 'ray' not in sys.modules, 'ray imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_stats_log_replays_counters_and_values_in_order():
    from pipeline.executors.ray import StatsLog, replay_stats

    tasks = []
    for batch_rows in ([3, 4], [5]):
        log = StatsLog()
        for rows in batch_rows:
            log["rows"] = log.get("rows", 0) + rows     # a counter: read, then write
            log["dim"] = 384                            # a plain value
            log["last_batch"] = rows
        tasks.append(log.ops)
    merged: dict = {}
    for ops in tasks:
        replay_stats(merged, ops)
    assert merged == {"rows": 12, "dim": 384, "last_batch": 5}


@pytest.mark.parametrize("option, value, expected", [
    ("bogus", 1, "takes only the options"),                    # was a TypeError from __init__ (exit 1)
    ("max_retries", "x", "max_retries must be a whole number"),  # was Ray's TypeError at the first step
    ("max_retries", -5, "max_retries must be a whole number"),
    ("connect_timeout_s", "x", "connect_timeout_s must be a number"),
    ("connect_timeout_s", 0, "connect_timeout_s must be a number"),
    ("runtime_env", "x", "runtime_env must be a mapping"),
    ("address", "", "address must be"),                         # was a new local Ray instance, silently
])
def test_bad_ray_options_are_one_line_errors_before_any_cluster_is_reached(option, value, expected):
    from pipeline.executors import get_executor

    with pytest.raises(PipelineError, match=expected):
        get_executor("ray", **{option: value})
    assert not ray.is_initialized()


@pytest.mark.parametrize("address", [":6379", "127.0.0.1:99999", "127.0.0.1:0", "::1", "[::1", "[::1]6379"])
def test_an_address_without_a_host_or_a_valid_port_is_not_host_port(address):
    from pipeline.executors.ray_connect import probe

    # ':6379' said "no Ray cluster answers at :6379:6379"; 99999 said "Connection refused".
    with pytest.raises(PipelineError, match="is not HOST:PORT"):
        probe(address, timeout_s=1)


def test_an_ipv6_address_is_probed_without_its_brackets_and_the_hint_names_where_it_came_from(monkeypatch):
    from pipeline.executors import get_executor
    from pipeline.executors.ray_connect import is_loopback

    with socket.socket(socket.AF_INET6) as closed:  # a free IPv6 loopback port, nothing listening once closed
        closed.bind(("::1", 0))
        port = closed.getsockname()[1]
    # Was "no Ray cluster answers at [::1]:PORT (Name or service not known)": the brackets went to the resolver.
    with pytest.raises(PipelineError, match=r"answers at \[::1\]:\d+ \(Connection refused\)") as caught:
        get_executor("ray", address=f"[::1]:{port}")
    assert "check --address" in caught.value.hint
    monkeypatch.setenv("RAY_ADDRESS", f"[::1]:{port}")
    with pytest.raises(PipelineError) as caught:
        get_executor("ray")
    assert "check $RAY_ADDRESS" in caught.value.hint  # was "check --address", an option never given
    assert not ray.is_initialized()
    assert is_loopback("[::1]:6379") and is_loopback("localhost:1") and not is_loopback("10.0.0.1:6379")


# ------------------------------------------------------------------------------ on the cluster


def test_pipeline_on_two_nodes_equals_local(ray_cluster, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    steps = _docs_steps(markers)
    steps[2]["params"]["hold_s"] = 0.2
    config = _config("same", steps)
    run_pipeline(config, workdir=tmp_path / "local", executor_options={"fragment_rows": 40})
    report = run_pipeline(config, workdir=tmp_path / "ray", executor="ray",
                          executor_options={"address": ray_cluster.address, "fragment_rows": 40})
    assert report.ran == [s["id"] for s in steps]
    _assert_same_runs(tmp_path / "local" / "same", tmp_path / "ray" / "same", report.ran)
    # Row-wise fragments were spread over both nodes, and the parts keep the input's order.
    assert len(list(markers.glob("node-*"))) == 2, list(markers.iterdir())
    parts = sorted((tmp_path / "ray" / "same" / "tagged").glob("part-*.parquet"))
    assert len(parts) > 2
    # A second run is served from the cache, as with the local executor.
    again = run_pipeline(config, workdir=tmp_path / "ray", executor="ray",
                         executor_options={"address": ray_cluster.address})
    assert again.ran == [] and len(again.cached) == len(steps)


def test_cli_runs_on_the_cluster(ray_cluster, tmp_path):
    config = tmp_path / "quick.yaml"
    config.write_text(yaml.safe_dump(_config("cli", _docs_steps()[:4])))
    local = run_pipeline(str(config), workdir=tmp_path / "local")
    # Relative paths (as users type them) must mean the same on the workers as in the driver.
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "quick.yaml", "--workdir", "ray",
         "--executor", "ray", "--address", ray_cluster.address, "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "CORPUSFORGE_PLUGINS": "ray_cluster",
             "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'tests'}"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_runs(tmp_path / "local" / "cli", tmp_path / "ray" / "cli", ["docs", "prose", "tagged", "split"])
    # The same files: a row-wise step run again on Ray leaves every step after it a cache hit locally.
    again = run_pipeline(str(config), workdir=tmp_path / "local", executor="ray", force=True, only="prose",
                         executor_options={"address": ray_cluster.address})
    assert again.ran == ["prose"] and local.ran == ["docs", "prose", "tagged", "split"]
    assert run_pipeline(str(config), workdir=tmp_path / "local").ran == []


def test_killed_rowwise_worker_is_retried_and_output_complete(ray_cluster, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    local = run_pipeline(_config("kill", _docs_steps()[:3]), workdir=tmp_path / "local",
                         executor_options={"fragment_rows": 60})
    victim = load(Path(local.step("tagged").path)).collect()["id"][150]
    run_pipeline(_config("kill", _docs_steps(markers, kill_at_id=victim)[:3]), workdir=tmp_path / "ray",
                 executor="ray", executor_options={"address": ray_cluster.address, "fragment_rows": 60})
    assert (markers / "killed-rowwise").exists()  # the worker did die once
    expected = load(tmp_path / "local" / "kill" / "tagged").collect()
    assert load(tmp_path / "ray" / "kill" / "tagged").collect().equals(expected)
    ray_stats = json.loads((tmp_path / "ray" / "kill" / "tagged" / "_manifest.json").read_text())["stats"]
    assert ray_stats == {"rows_tagged": expected.height, "column": "chars"}
    assert not list((tmp_path / "ray" / "kill" / "tagged").glob(".fragment-*"))
    _assert_same_files(tmp_path / "local" / "kill" / "tagged", tmp_path / "ray" / "kill" / "tagged")


def test_killed_table_task_is_retried(ray_cluster, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    steps = _docs_steps()[:1] + [{"id": "sorted", "stage": "test_ray_sorted_with_side", "inputs": "docs"}]
    run_pipeline(_config("table", steps), workdir=tmp_path / "local")
    steps[1]["params"] = {"marker_dir": str(markers)}
    run_pipeline(_config("table", steps), workdir=tmp_path / "ray", executor="ray",
                 executor_options={"address": ray_cluster.address})
    assert (markers / "killed-table").exists()
    _assert_same_runs(tmp_path / "local" / "table", tmp_path / "ray" / "table", ["docs", "sorted"])


def test_model_stage_runs_on_actors_loading_once_each_and_survives_a_kill(ray_cluster, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    steps = _docs_steps()[:1] + [{"id": "topics", "stage": "test_ray_count_topic_words", "inputs": "docs"}]
    local = run_pipeline(_config("model", steps), workdir=tmp_path / "local", executor_options={"fragment_rows": 50})
    expected = load(Path(local.step("topics").path)).collect()
    steps[1]["params"] = {"marker_dir": str(markers), "kill_at_id": expected["id"][300]}
    run_pipeline(_config("model", steps), workdir=tmp_path / "ray", executor="ray",
                 executor_options={"address": ray_cluster.address, "fragment_rows": 50})
    assert load(tmp_path / "ray" / "model" / "topics").collect().equals(expected)
    _assert_same_files(tmp_path / "local" / "model" / "topics", tmp_path / "ray" / "model" / "topics")
    assert (markers / "killed-actor").exists()
    fragments = -(-expected.height // 50)
    loads = len(list(markers.glob("load-*")))
    # One load per actor (two actors on two one-CPU nodes) plus one for the actor restarted after the kill.
    assert 1 <= loads <= 3 < fragments


def test_more_actors_than_the_cluster_holds_runs_on_the_ones_that_fit(ray_cluster, tmp_path):
    # actors=3 on two one-CPU nodes: the third actor never started and the fragment given to it waited forever.
    steps = _docs_steps()[:1] + [{"id": "topics", "stage": "test_ray_count_topic_words", "inputs": "docs"}]
    local = run_pipeline(_config("many", steps), workdir=tmp_path / "local", executor_options={"fragment_rows": 200})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_config("many", steps)))
    # In a subprocess, so the old hang ends at the timeout instead of holding the suite.
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(config), "--workdir", str(tmp_path / "ray"), "--quiet",
         "--executor", "ray", "--address", ray_cluster.address, "--executor-option", "fragment_rows=200",
         "--executor-option", "actors=3"],
        capture_output=True, text=True, timeout=90, cwd=REPO_ROOT,
        env={**os.environ, "CORPUSFORGE_PLUGINS": "ray_cluster", "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'tests'}"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_same_files(Path(local.step("topics").path), tmp_path / "ray" / "many" / "topics")


def test_consecutive_model_steps_share_their_actors_and_free_the_cluster_after(ray_cluster, tmp_path):
    """Two model steps in a row run on the same actors (the model loads once per actor, not per step);
    the row-wise and table steps after them get the CPUs back (idle actors would hold them forever)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    shared = _docs_steps()[:1] + [
        {"id": "topics", "stage": "test_ray_count_topic_words", "inputs": "docs"},
        {"id": "topics2", "stage": "test_ray_count_topic_words", "inputs": "topics"},
        {"id": "prose", "stage": "length_filter", "inputs": "topics2", "params": {"min_words": 12}},
        {"id": "split", "stage": "split", "inputs": "prose", "params": {"fractions": {"a": 0.5, "b": 0.5}}},
    ]
    local = run_pipeline(_config("actors", shared), workdir=tmp_path / "local")
    for step in shared[1:3]:
        step["params"] = {"marker_dir": str(markers)}
    ray_run = run_pipeline(_config("actors", shared), workdir=tmp_path / "ray", executor="ray",
                           executor_options={"address": ray_cluster.address, "fragment_rows": 50})
    for step in ("topics2", "prose", "split"):
        assert load(Path(ray_run.step(step).path)).collect().equals(load(Path(local.step(step).path)).collect())
    rows = load(Path(local.step("topics").path)).collect().height
    loads = len(list(markers.glob("load-*")))
    assert 1 <= loads <= 2 < 2 * -(-rows // 50)  # one load per actor (two one-CPU nodes) for both steps


def test_a_model_step_with_no_rows_after_a_model_step_gets_the_cluster_back(ray_cluster, tmp_path):
    """An empty input runs as one table task: the previous model step's idle actors must not hold the CPUs
    it needs (it would wait for them forever)."""
    import threading
    from pydoc_data.topics import topics

    from ray_cluster import CountTopicWords

    from pipeline.executors import get_executor
    from pipeline.io import Dataset
    from pipeline.stage import Context

    frame = pl.DataFrame({"id": [f"t{i}" for i in range(60)], "text": list(topics.values())[:60]})
    exe = get_executor("ray", address=ray_cluster.address, fragment_rows=10)
    rows = {}

    def steps() -> None:
        for name, data in (("first", frame), ("empty", frame.head(0))):
            out = tmp_path / name
            out.mkdir()
            exe.run_step(CountTopicWords(), Context(step_id=name, seed=0, out_dir=out), {"data": Dataset.from_any(data)}, out)
            rows[name] = pl.read_parquet(out / "*.parquet").height

    try:
        worker = threading.Thread(target=steps, daemon=True)
        worker.start()
        worker.join(timeout=180)
        assert not worker.is_alive(), "the empty step waited for CPUs held by the first step's actors"
    finally:
        exe.close()
    assert rows == {"first": 60, "empty": 0}


def test_library_call_on_an_in_memory_table(ray_cluster, tmp_path):
    from pydoc_data.topics import topics

    from pipeline.executors import LocalExecutor, get_executor
    from pipeline.io import Dataset
    from pipeline.stage import Context
    from stages.transforms import LengthFilter

    lines = list(topics.values())
    frame = pl.DataFrame({"id": [f"f{i}" for i in range(len(lines))], "text": lines})
    stage = LengthFilter(min_words=8)
    outputs = {}
    for name, exe in (("local", LocalExecutor(fragment_rows=37)),
                      ("ray", get_executor("ray", address=ray_cluster.address, fragment_rows=37))):
        out = tmp_path / name
        out.mkdir()
        ctx = Context(step_id="filter", seed=0, out_dir=out)
        try:
            exe.run_step(stage, ctx, {"data": Dataset.from_any(frame)}, out)
        finally:
            exe.close()
        outputs[name] = pl.read_parquet(out / "part-*.parquet")
    assert outputs["ray"].height > 0
    assert outputs["ray"].equals(outputs["local"])
    assert len(_parts(tmp_path / "ray")) > 1
    _assert_same_files(tmp_path / "local", tmp_path / "ray")


def test_parts_from_fragments_share_one_schema(ray_cluster, tmp_path):
    # Fragments of short texts give an all-null (Null-typed) column, others a string column; the
    # local writer casts later batches to the first one's schema, and so must the Ray executor.
    steps = _docs_steps()[:1] + [{"id": "words", "stage": "test_ray_first_word_if_long", "inputs": "docs",
                                  "params": {"min_chars": 3000}}]
    local = run_pipeline(_config("schema", steps), workdir=tmp_path / "local", executor="local",
                         executor_options={"fragment_rows": 30})
    run_pipeline(_config("schema", steps), workdir=tmp_path / "ray", executor="ray",
                 executor_options={"address": ray_cluster.address, "fragment_rows": 30})
    expected = load(Path(local.step("words").path)).collect()
    assert expected["first_word"].null_count() < expected.height
    assert load(tmp_path / "ray" / "schema" / "words").collect().equals(expected)
    _assert_same_files(tmp_path / "local" / "schema" / "words", tmp_path / "ray" / "schema" / "words")


class _NeedsManyCpus(RowwiseStage):
    """Test stage: asks each task for more CPUs than any node of the test cluster has."""

    resources = {"num_cpus": 64}

    def process_batch(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        return batch


def test_a_stage_asking_more_than_any_node_has_is_refused_not_left_pending(ray_cluster, tmp_path):
    import threading

    from pipeline.executors import get_executor
    from pipeline.io import Dataset

    exe = get_executor("ray", address=ray_cluster.address)
    raised: list[BaseException] = []

    def run() -> None:  # Ray kept the task pending forever: a thread, so the old hang fails the test instead
        try:
            frame = pl.DataFrame({"id": ["a"], "text": ["one"]})
            exe.run_step(_NeedsManyCpus(), Context(step_id="big", seed=0, out_dir=tmp_path),
                         {"data": Dataset.from_any(frame)}, tmp_path)
        except BaseException as exc:
            raised.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=30)
    try:
        assert not worker.is_alive(), "the task no node can run was left pending"
    finally:
        exe.close()
    assert len(raised) == 1 and isinstance(raised[0], PipelineError)
    assert "CPU 64" in str(raised[0]) and "no node" in str(raised[0])


def test_wrong_address_fails_fast_with_a_clear_error(ray_cluster, tmp_path):
    from loopback_cluster import _free_port

    from pipeline.executors import get_executor

    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    with pytest.raises(PipelineError, match="no Ray cluster answers"):
        get_executor("ray", address=address)
    with pytest.raises(PipelineError, match="not HOST:PORT"):
        get_executor("ray", address="127.0.0.1:not-a-port")
    # Something that accepts connections but is not a Ray head (ray.init alone would retry for minutes).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(PipelineError, match="does not answer as a Ray head"):
            get_executor("ray", address=f"127.0.0.1:{silent.getsockname()[1]}", connect_timeout_s=2)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_config("wrong", _docs_steps()[:1])))
    # The timeout only guards against a hang; the command is expected to fail at once.
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(config), "--workdir", str(tmp_path),
         "--executor", "ray", "--address", address],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )
    assert done.returncode == 2
    assert "no Ray cluster answers" in done.stderr and "Traceback" not in done.stderr


def test_stage_errors_on_workers_reach_the_user_as_pipeline_errors(ray_cluster, tmp_path):
    from pipeline.errors import ParamError

    steps = _docs_steps()[:1] + [{"id": "bad", "stage": "sql", "inputs": "docs",
                                  "params": {"query": "SELECT no_such_column FROM data"}}]
    with pytest.raises(ParamError) as caught:
        run_pipeline(_config("bad", steps), workdir=tmp_path, executor="ray",
                     executor_options={"address": ray_cluster.address})
    assert caught.value.param == "query" and caught.value.step == "bad"
    assert "no_such_column" in str(caught.value)


@pytest.mark.parametrize("stage", ["test_ray_tag_length", "test_ray_sorted_with_side"])
def test_a_stage_calling_sys_exit_exits_as_it_does_locally(ray_cluster, tmp_path, stage):
    """A row-wise task and a table task calling sys.exit(3): the run raises SystemExit(3) on both executors, at
    once. On a worker it ended the process: Ray retried the task, then failed with WorkerCrashedError (exit 1)."""
    steps = _docs_steps()[:1] + [{"id": "bye", "stage": stage, "inputs": "docs", "params": {"exit_code": 3}}]
    codes = []
    for executor, options in (("local", {}), ("ray", {"address": ray_cluster.address})):
        with pytest.raises(SystemExit) as caught:
            run_pipeline(_config("bye", steps), workdir=tmp_path / executor, executor=executor,
                         executor_options=options)
        codes.append(caught.value.code)
    assert codes == [3, 3]


# ------------------------------------------------------------------------------ the benchmark report


def test_benchmark_report_records_failures_and_keeps_earlier_figures(tmp_path):
    from bench import run_all

    failed = run_all.run_module("does_not_exist", "quick", timeout_s=120)
    assert failed["status"] == "failed" and "bench_does_not_exist" in failed["error"]
    ok = {"module": "ray", "scale": "full", "started_at": "2026-01-01T00:00:00+00:00", "status": "ok",
          "error": None, "wall_s": 1.0, "machine": run_all.machine(),
          "rows": [{"benchmark": "ray", "case": "a -- b | c", "metric": "s", "value": 2.0, "baseline": "local",
                    "baseline_value": 3.0, "ratio": 1.5, "ratio_meaning": "local s / ray s",
                    "peak_rss_mb": 100.0, "baseline_peak_rss_mb": 200.0, "notes": "median of 3"}]}
    header = {"date": "2026-01-01T00:00:00+00:00", "scale": "full", "modules": ["ray", "does_not_exist"],
              "machine": run_all.machine(), "versions": run_all.versions()}
    report = tmp_path / "results.md"
    report.write_text(run_all.render({"ray": ok, "does_not_exist": failed}, header))
    text = report.read_text()
    assert "| ray | a -- b \\| c | 1.5 | local s / ray s |" in text
    assert "## Failures" in text and "**Failed:**" in text
    assert "polars" in text and str(run_all.machine()["cores"]) in text
    # `--only` re-runs some modules and keeps the others' figures from the report's own data.
    assert run_all.read_previous(report) == {"ray": ok, "does_not_exist": failed}
    with pytest.raises(SystemExit):
        run_all.main(["--only", "no_such_module", "--out", str(report)])
