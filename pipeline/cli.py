"""The `pipeline` command: run, validate, stages, show, and commands contributed by stage families.

Exit codes: 0 success, 2 bad input (config, params, data; one line, no traceback), 1 a failure
that is not the user's input (the message says which step; `--debug` shows the traceback), 141 the reader
of stdout went away (`pipeline cache | head`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import select
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError


@dataclass
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def _seconds(text: str) -> float:
    """A --wait value: seconds, 0 or more (argparse says the error in one line, exit 2)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:  # also NaN: -1 waited not at all, without a word
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, got {text!r}")
    return value


def register_command(
    name: str,
    help: str,
    configure: Callable[[argparse.ArgumentParser], None],
    handler: Callable[[argparse.Namespace], int],
) -> None:
    """Let a stage family add a subcommand (e.g. `pipeline audit`) without the engine knowing it."""
    COMMANDS[name] = Command(name, help, configure, handler)


# ------------------------------------------------------------------------------------------ run


def _configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="pipeline YAML file")
    p.add_argument("--workdir", default="data/runs", help="where runs are written (default: data/runs)")
    p.add_argument("--force", action="store_true", help="re-run every selected step even if unchanged")
    p.add_argument("--only", metavar="STEP", help="run this step alone (its inputs must exist)")
    p.add_argument("--until", metavar="STEP", help="run this step and the steps it depends on")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="STEP.PARAM=VALUE",
                   help="override a parameter (value parsed as YAML; a text parameter takes the text as typed); repeatable")
    p.add_argument("--executor", default="local", choices=["local", "ray"], help="where steps run")
    p.add_argument("--address", help="Ray cluster address (with --executor ray)")
    p.add_argument("--executor-option", dest="executor_options", action="append", default=[],
                   metavar="KEY=VALUE", help="an executor setting, value parsed as YAML (e.g. fragment_rows=4096); repeatable")
    p.add_argument("--wait", type=_seconds, default=0.0, metavar="SECONDS",
                   help="wait this long for another run holding the lock, instead of refusing")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (which steps are cached, which will run and why) and run nothing")
    p.add_argument("--verify", choices=["fast", "full", "off"], default="fast",
                   help="how a cache hit is checked against its manifest: fast (sizes, file set, artefacts; "
                        "files touched since written are re-hashed; default), full (re-hash everything), off")


def _executor_options(args: argparse.Namespace) -> dict:
    """--executor-option and --address as get_executor takes them; a bad one is one line (exit 2), in a dry run too."""
    from pipeline.config import load_yaml

    options = {}
    for item in args.executor_options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PipelineError(f"--executor-option expects KEY=VALUE, got '{item}'")
        options[key] = load_yaml(value, f"--executor-option {item}")  # as --set: `x=*a` was a YAML traceback
    if args.address is not None:  # an empty --address "" is refused by the executor, not read as no address
        if args.executor != "ray":
            raise PipelineError("--address is for --executor ray")
        options["address"] = args.address
    return options


def _dry_run(args: argparse.Namespace, options: dict) -> int:
    from pipeline.config import load_config
    from pipeline.executors import get_executor
    from pipeline.plan import format_plan, plan_run

    config = load_config(args.config, args.overrides)
    if args.executor == "local":  # its options are checked as the run checks them
        get_executor("local", **options).close()
    else:  # Ray's without a cluster: names, types and the address's form
        from pipeline.executors import check_ray_options

        check_ray_options(options)
    plan = plan_run(config, workdir=args.workdir, force=args.force, only=args.only, until=args.until)
    print(format_plan(plan, Path(args.workdir) / config.name))
    return 0


def _run(args: argparse.Namespace) -> int:
    from pipeline.runner import run_pipeline
    from pipeline.summary import format_summary

    options = _executor_options(args)
    if args.dry_run:
        return _dry_run(args, options)
    report = run_pipeline(
        args.config, workdir=args.workdir, force=args.force, only=args.only, until=args.until,
        overrides=args.overrides, quiet=args.quiet, executor=args.executor, executor_options=options,
        wait_for_lock_s=args.wait, verify=args.verify,
    )
    from stages._report.index import write_run_index  # <workdir>/index.html links every report in it

    write_run_index(args.workdir)
    if not args.quiet:
        print(format_summary(report))
    return 0


# ------------------------------------------------------------------------------------- validate


def _configure_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="pipeline YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="STEP.PARAM=VALUE")


def _validate(args: argparse.Namespace) -> int:
    from pipeline.config import load_config, order_steps

    config = load_config(args.config, args.overrides)
    order = [s.id for s in order_steps(config)]
    print(f"{args.config}: OK — pipeline '{config.name}', seed {config.seed}, {len(order)} steps: {' -> '.join(order)}")
    return 0


# --------------------------------------------------------------------------------------- stages


def _configure_stages(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="show one stage only")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n")[0]


def _stages(args: argparse.Namespace) -> int:
    import inspect

    from pipeline.registry import STAGES, load_plugins, stage_class

    load_plugins()
    names = [stage_class(args.name).name] if args.name else sorted(STAGES)
    listing = []
    for name in names:
        cls = STAGES[name]
        params = [
            {
                "name": s.name,
                "type": s.type_name,
                "default": None if s.required else s.default,
                "required": s.required,
                "doc": s.doc,
            }
            for s in cls.param_specs()
        ]
        listing.append({"name": name, "doc": _first_line(inspect.getdoc(cls)), "inputs": list(cls.inputs),
                        "optional_inputs": [i for i in cls.inputs if i in cls.optional_inputs],
                        "kind": cls.kind, "params": params})
    if args.json:
        print(json.dumps(listing, indent=2, default=repr))
        return 0
    for entry in listing:
        ins = ", ".join(f"{i} (optional)" if i in entry["optional_inputs"] else i for i in entry["inputs"]) \
            or "none (source)"
        print(f"{entry['name']}  — {entry['doc']}\n    inputs: {ins}")
        for p in entry["params"]:
            default = "required" if p["required"] else f"default {p['default']!r}"
            doc = f"  {p['doc']}" if p["doc"] else ""
            print(f"    {p['name']}: {p['type']} ({default}){doc}")
        print()
    return 0


# ----------------------------------------------------------------------------------------- show


def _configure_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a pipeline name (under --workdir) or a run folder")
    p.add_argument("--workdir", default="data/runs")
    p.add_argument("--json", action="store_true", help="the run record and every step's manifest, as JSON")


def _show(args: argparse.Namespace) -> int:
    from pipeline.files import describe_path
    from pipeline.runner import RUN_RECORD, read_manifest

    run_dir = Path(args.run)
    # A config: its pipeline's run (load_config refuses a named pipe of that name, which is no run folder either).
    if run_dir.suffix in (".yaml", ".yml") and run_dir.exists() and not run_dir.is_dir():
        from pipeline.config import load_config

        run_dir = Path(args.workdir) / load_config(run_dir).name
    elif not (run_dir / RUN_RECORD).exists():
        run_dir = Path(args.workdir) / args.run
    record_path = run_dir / RUN_RECORD
    if not record_path.exists():
        raise PipelineError("no run found (expected a _run.json inside)", file=describe_path(run_dir),
                            hint="give a pipeline name and its --workdir, or the run folder")
    try:
        record = json.loads(record_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:  # not written by the engine (it writes it atomically)
        raise PipelineError(f"the run record is damaged ({exc})", file=str(record_path),
                            hint="run the pipeline again to write it anew") from None
    if args.json:
        record["run_dir"] = str(run_dir.resolve())
        # Only steps this run made or reused: a failed or unreached step's folder holds an earlier run's output.
        record["manifests"] = {s["id"]: read_manifest(run_dir / s["id"]) for s in record["steps"]
                               if s["status"] in ("ran", "cached")}
        print(json.dumps(record, indent=2, default=str))
        return 0
    print(f"pipeline {record['pipeline']}  ({record['config']}, executor {record['executor']})")
    outcome = "" if record.get("outcome", "completed") == "completed" else f" ({record['outcome']})"
    print(f"last run {record['started_at']} .. {record['finished_at']}{outcome}  in {run_dir}")
    print(f"{'step':<20} {'stage':<18} {'status':<8} {'rows':>12} {'time':>9} {'peak mem':>10}  artefacts")
    for s in record["steps"]:
        manifest = (read_manifest(run_dir / s["id"]) or {}) if s["status"] in ("ran", "cached") else {}
        rows = manifest.get("output", {}).get("rows")
        wall = manifest.get("wall_time_s")
        peak = manifest.get("peak_rss_bytes")
        extras = [a["name"] for a in manifest.get("artefacts", [])] + [
            f"{s['id']}@{k}/" for k in manifest.get("side_outputs", {})
        ]
        print(
            f"{s['id']:<20} {s['stage']:<18} {s['status']:<8} "
            f"{(f'{rows:,}' if rows is not None else '-'):>12} "
            f"{(f'{wall:.2f}s' if wall is not None else '-'):>9} "
            f"{(f'{peak / 2**20:,.0f} MiB' if peak else '-'):>10}  {', '.join(extras)}"
        )
        if s.get("error"):
            print(f"{'':<20} failed: {s['error']}")
    return 0


# ---------------------------------------------------------------------------------------- cache


def _configure_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", default="list", choices=["list", "clear"],
                   help="list the caches with their sizes (default), or clear them")
    p.add_argument("--workdir", default="data/runs", help="the run workdir whose .cache/ to include")
    p.add_argument("--cache", dest="kinds", action="append", metavar="NAME",
                   help="only this cache (repeatable; default: all)")
    p.add_argument("--older-than", metavar="WHEN",
                   help="clear only entries last modified before a date (2026-11-01) or an age (30d, 12h)")
    p.add_argument("--json", action="store_true", help="machine-readable listing")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _cache(args: argparse.Namespace) -> int:
    from pipeline.caches import CACHES, cache_entries, check_kinds, clear_caches, parse_older_than
    from pipeline.rundir import refuse_file_in_workdir

    check_kinds(args.kinds)
    workdir = Path(args.workdir)
    refuse_file_in_workdir(workdir)  # its .cache/ is one of the roots listed or cleared
    if args.action == "clear":
        older = parse_older_than(args.older_than) if args.older_than else None
        removed = clear_caches(workdir, args.kinds, older)
        when = f" last modified before {older:%Y-%m-%d %H:%M} UTC" if older else ""
        print(f"removed {_entries(len(removed))}{when}, {_size(sum(e.bytes for e in removed))}")
        return 0
    if args.older_than:
        raise PipelineError("--older-than is for `pipeline cache clear`")
    listing = cache_entries(workdir, args.kinds)
    if args.json:
        print(json.dumps({name: {"roots": [str(r) for r in roots], "entries": len(entries),
                                 "bytes": sum(e.bytes for e in entries),
                                 "oldest": min((e.modified for e in entries), default=None),
                                 "newest": max((e.modified for e in entries), default=None)}
                          for name, (roots, entries) in listing.items()}, indent=2, default=str))
        return 0
    for name, (roots, entries) in listing.items():
        span = (f", modified {min(e.modified for e in entries):%Y-%m-%d} .. {max(e.modified for e in entries):%Y-%m-%d}"
                if entries else "")
        print(f"{name:<14} {_entries(len(entries)):>14} {_size(sum(e.bytes for e in entries)):>11}{span}"
              f"  — {CACHES[name].description}")
        for root in roots:
            print(f"{'':<14} {root}{'' if root.is_dir() else ' (not created yet)'}")
    return 0


register_command("run", "run a pipeline (unchanged steps are reused)", _configure_run, _run)
register_command("validate", "check a config without running it", _configure_validate, _validate)
register_command("stages", "list stages with their params, types, defaults and docs", _configure_stages, _stages)
register_command("show", "show a run: steps, rows, cache hits, timings, artefacts", _configure_show, _show)
register_command("cache", "list the caches (embeddings, static models, Arrow) with sizes, or clear them",
                 _configure_cache, _cache)


def build_parser() -> argparse.ArgumentParser:
    from pipeline.registry import load_plugins

    load_plugins()  # stage families may register commands (e.g. `audit`)
    parser = argparse.ArgumentParser(
        prog="pipeline", description="Reproducible Parquet pipelines for corpus-quality and synthetic-data studies."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        cmd.configure(p)
        p.set_defaults(_handler=cmd.handler)
    return parser


# Transparent huge pages off for the command's process: Arrow's allocator (mimalloc) asks for them, and on a VM whose
# host backs guest memory lazily (this project's Firecracker machines) each huge-page fault costs milliseconds of
# system time, a varying number of them per process. Measured in fresh processes: the full default audit (31.5 MB,
# static backend) 5.3 s against 6.5 s (5.6-6.9 s), 1.0 s of system time against 1.9-3.2 s; the n-gram audit 0.75 s
# (0.69-0.81) against 0.79 s (0.72-1.15), 20 MB less peak RSS (bench/results.md, wave 27). mimalloc applies
# MIMALLOC_ALLOW_THP=0 as prctl(PR_SET_THP_DISABLE): the whole process and what it starts (a local Ray instance)
# go without them. Only the command does this, before pyarrow loads; library calls leave the caller's process as
# it is (the same setting in its environment does the same there). A value already set is kept.
THP_SETTING = ("MIMALLOC_ALLOW_THP", "0")


def main(argv: list[str] | None = None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    os.environ.setdefault(*THP_SETTING)
    try:
        from pipeline import runner

        runner.COMMAND_LINE = ["pipeline", *(argv if argv is not None else sys.argv[1:])]
        parser = build_parser()
        args = parser.parse_args(argv)
        if isinstance(getattr(args, "workdir", None), str):  # `--workdir=~/runs`: no shell expands that `~`,
            args.workdir = os.path.expanduser(args.workdir)   # and a folder named '~' appeared here
        code = args._handler(args)
        sys.stdout.flush()  # a reader that went away is seen here, not as a warning at interpreter exit
        return code
    except BrokenPipeError as exc:
        if not _stdout_is_broken():  # a pipe of our own (a worker's, a subprocess's): not the reader's doing
            return _unexpected(exc, debug)
        # The reader of our output stopped early (`pipeline cache | head`): stop quietly, as `git log | head`
        # does, with the shell's code for a write to a closed pipe (128 + SIGPIPE).
        _silence_stdout()
        return 141
    except PipelineError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # also while the command's modules are imported (polars, the stages: ~1 s)
        if debug:
            traceback.print_exc()
        print("interrupted; finished steps are kept, unfinished ones will be redone on the next run", file=sys.stderr)
        return 130
    except BaseException as exc:  # noqa: BLE001 - the last line of defence: one readable line
        if isinstance(exc, (SystemExit, GeneratorExit)):
            raise
        # Also a Rust panic inside polars or another extension (pyo3's PanicException is a BaseException).
        return _unexpected(exc, debug)


def _unexpected(exc: BaseException, debug: bool) -> int:
    """A failure that is not the user's input: one line (the traceback with --debug), exit 1."""
    if debug:
        traceback.print_exception(exc)
    print(f"error: {exc if type(exc).__name__ == 'StepFailed' else f'{type(exc).__name__}: {exc}'}",
          file=sys.stderr)
    print("(this looks like a bug or an environment problem, not bad input; re-run with --debug for the traceback)",
          file=sys.stderr)
    return 1


def _stdout_is_broken() -> bool:
    """Is stdout a pipe whose reader has gone? (Then the pipe's write end polls as an error.)"""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False  # not a file descriptor, or no poll() on this platform: not ours to call quiet


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not hit the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # stdout is not a file descriptor (an embedding caller's stream): nothing left to flush


if __name__ == "__main__":
    # Re-import so commands registered against `pipeline.cli` (not `__main__`) are seen.
    from pipeline.cli import main as _main

    sys.exit(_main())
