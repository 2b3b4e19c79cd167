"""Pipeline configs: YAML (loaded safely) or a plain dict, checked as a whole before anything runs."""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import InputDataError, ParamError, PipelineError
from pipeline.params import check_seed
from pipeline.registry import stage_class
from pipeline.rundir import refuse_run_folder
from pipeline.stage import Stage

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# What NAME_RE asks beyond its characters, said in the refusal (`_tmp` read as allowed by "letters, digits, '_'").
NAME_RULE = "(starting with a letter or digit, at most 128)"
TOP_KEYS = {"name", "seed", "steps", "description"}
STEP_KEYS = {"id", "stage", "params", "inputs", "description"}
# Names a run folder cannot take: `<workdir>/index.html` is the page linking every report (stages/_report/index.py).
RESERVED_RUN_NAMES = {"index.html"}


# A config describes a pipeline; data belongs in Parquet. These bounds keep a hostile or broken
# config from exhausting memory before it is even checked (a YAML "billion laughs" alias bomb
# is a few hundred bytes that expand to gigabytes once walked).
MAX_CONFIG_BYTES = 4 << 20
MAX_YAML_NODES = 1_000_000  # counted with every alias expanded
MAX_YAML_DEPTH = 100
INT64 = (-(2**63), 2**63 - 1)


class _LineDict(dict):
    line: int | None = None


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML (no Python objects) that refuses duplicate keys and remembers line numbers."""

    source = "<config>"


def _where(source: str, mark: yaml.Mark | None) -> str:
    return f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    mapping = _LineDict()
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise PipelineError(f"{_where(loader.source, key_node.start_mark)}: a key must be a plain value")
        if key in mapping:
            raise PipelineError(f"{_where(loader.source, key_node.start_mark)}: key '{key}' appears twice")
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


def _construct_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    value = yaml.SafeLoader.construct_yaml_int(loader, node)
    if not INT64[0] <= value <= INT64[1]:
        raise PipelineError(f"{_where(loader.source, node.start_mark)}: integer {node.value} is beyond 64 bits")
    return value


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _check_expanded_size(root: yaml.Node, source: str) -> None:
    """Refuse a YAML graph too big or too deep once aliases are expanded, without expanding it.

    Each node's expanded size is computed once (memoised), so an alias bomb is measured in time
    linear in its text; an alias that contains itself is refused too.
    """
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if not children_done:
            if key in in_progress:
                raise PipelineError(f"{_where(source, node.start_mark)}: a YAML alias refers to itself")
            if depth > MAX_YAML_DEPTH:
                raise PipelineError(f"{_where(source, node.start_mark)}: nested more than {MAX_YAML_DEPTH} levels deep")
            in_progress.add(key)
            stack.append((node, depth, True))
            stack.extend((child, depth + 1, False) for child in children if id(child) not in sizes)
            continue
        in_progress.discard(key)
        sizes[key] = 1 + sum(sizes.get(id(child), 0) for child in children)
        if sizes[key] > MAX_YAML_NODES:
            raise PipelineError(
                f"{_where(source, node.start_mark)}: expands to more than {MAX_YAML_NODES:,} values "
                "once its aliases are followed (an alias bomb?); a config describes steps, data belongs in Parquet"
            )


def _yaml_error_line(exc: yaml.YAMLError, source: str) -> str:
    """A YAML error as one `file:line:col: message` line (PyYAML's own text spans 4-8 lines)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if "could not determine a constructor for the tag" in problem:
        tag = problem.split("tag", 1)[1].strip().strip("'").replace("tag:yaml.org,2002:", "!!")
        problem = f"tag '{tag}' is not allowed (a config cannot create Python objects or run code)"
    elif "\\t" in problem or "\t" in problem:
        problem += " (YAML indents with spaces, not tabs)"
    return f"{_where(source, mark)}: not valid YAML: {problem}"


def load_yaml(text: str, source: str) -> Any:
    """Parse config YAML safely, within the size bounds above; every error is one line."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise PipelineError(f"config is larger than {MAX_CONFIG_BYTES >> 20} MB; a config describes steps, "
                            "data belongs in Parquet", file=source)
    loader = _StrictLoader(text)
    loader.source = source
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise PipelineError(_yaml_error_line(exc, source)) from None
    except RecursionError:
        raise PipelineError(f"{source}: nested too deeply to read") from None
    finally:
        loader.dispose()


@dataclass
class InputRef:
    """Where a step input comes from: another step (optionally a side output) or a Parquet path."""

    step: str | None = None
    side: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        return f"{self.step}:{self.side}" if self.side else str(self.step)

    def no_such_side(self, input_name: str, has: list[str]) -> InputDataError:
        """The refusal of a `step:side` reference to a side output that step does not have (or cannot write)."""
        return InputDataError(f"input '{input_name}': step '{self.step}' has no side output '{self.side}'; "
                              f"it has: {', '.join(has) or 'none'}")


@dataclass
class StepConfig:
    id: str
    stage: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, InputRef] = field(default_factory=dict)
    line: int | None = None


@dataclass
class PipelineConfig:
    name: str
    seed: int
    steps: list[StepConfig]
    source: str = "<dict>"

    def step(self, step_id: str) -> StepConfig:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise PipelineError(f"no step '{step_id}'; steps are: {[s.id for s in self.steps]}", file=self.source)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "steps": [
                {"id": s.id, "stage": s.stage, "params": s.params, "inputs": {k: str(v) for k, v in s.inputs.items()}}
                for s in self.steps
            ],
        }


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO's read waited for a writer forever; a folder was an OSError
            raise PipelineError(f"is not a regular file ({_file_kind(info.st_mode)}); give a config file "
                                "(copy a generated config to a file first)", file=str(path))
        if info.st_size > MAX_CONFIG_BYTES:
            raise PipelineError(f"config is larger than {MAX_CONFIG_BYTES >> 20} MB; a config describes steps, "
                                "data belongs in Parquet", file=str(path))
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError("config file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"cannot read config ({exc})", file=str(path)) from None
    data = load_yaml(text, str(path))
    return parse_config(data, source=str(path), overrides=overrides)


def _file_kind(mode: int) -> str:
    """What a path that is no regular file is, in words, for a refusal."""
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "not a file")


def run_name_problem(name: Any) -> str | None:
    """What is wrong with `name` as a pipeline's name (it names the run folder), or None: the config's and the
    builder's rule (the builder writes frames under `<workdir>/<name>` before any config is parsed)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        return f"must be letters, digits, '_', '-', '.' {NAME_RULE} (it names the run folder), got {name!r}"
    if name.lower() in RESERVED_RUN_NAMES:
        return f"{name!r} is taken by the workdir's own page of that name; pick another name (it names the run folder)"
    return None


def _parse_overrides(overrides: list[str], source: str) -> list[tuple[str, str, str, str]]:
    """(step, param, value text, the whole item) of each --set; the text is parsed once the param's type is known."""
    parsed = []
    for item in overrides:
        if not isinstance(item, str):
            raise PipelineError(f"--set expects STEP.PARAM=VALUE strings, got {item!r}", file=source)
        m = re.fullmatch(r"([^.=]+)\.([^=]+)=(.*)", item, flags=re.S)
        if not m:
            raise PipelineError(f"--set expects STEP.PARAM=VALUE, got '{item}'", file=source)
        parsed.append((m.group(1), m.group(2), m.group(3), item))
    return parsed


def _override_value(stage_name: str, key: str, text: str, item: str) -> Any:
    """A --set value: YAML, except that a text param takes the text as typed (unless quoted, or `null` where None
    is allowed). As YAML, `glob=*.jsonl` was an alias error, `separator=#` a comment (None: sniffed) and
    `query=... 'a: b'` a mapping."""
    spec = next((s for s in stage_class(stage_name).param_specs() if s.name == key), None)
    takes_text = spec is not None and spec.annotation in (str, str | None)
    quoted = text.strip()[:1] in ("'", '"')
    null = takes_text and spec.annotation is not str and text.strip() in ("null", "~")
    if takes_text and not quoted and not null:
        return text
    # Errors read `--set STEP.PARAM=VALUE:1:COL: message`, one line like a config file's.
    return load_yaml(text, f"--set {item}") if text != "" else ""


def _parse_ref(value: Any, step_ids: set[str], where: dict[str, Any]) -> InputRef:
    if not isinstance(value, str) or not value:
        raise PipelineError(f"an input must be a step id or a path, got {value!r}", **where)
    if value in step_ids:
        return InputRef(step=value)
    head, _, tail = value.partition(":")
    if tail and head in step_ids and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", tail):
        return InputRef(step=head, side=tail)
    if Path(value).exists() or any(ch in value for ch in "*?[/"):
        refuse_run_folder(value, **where)
        return InputRef(path=value)
    raise PipelineError(f"input '{value}' is neither a step id nor an existing path; steps are: {sorted(step_ids)}", **where)


def parse_config(data: Any, source: str = "<dict>", overrides: list[str] | None = None) -> PipelineConfig:
    """Turn loaded YAML (or a dict built in code) into a checked PipelineConfig.

    Checks everything that can be checked without data: names, stages, params and their types,
    inputs, and that the steps form a DAG.
    """
    if not isinstance(data, dict):
        raise PipelineError("a config must be a mapping with 'name', 'seed' and 'steps'", file=source)
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise PipelineError(f"unknown top-level key '{unknown[0]}'; allowed: {sorted(TOP_KEYS)}", file=source)
    name = data.get("name")
    problem = run_name_problem(name)
    if problem:
        raise PipelineError(f"'name' {problem}", file=source)
    try:
        seed = check_seed(data.get("seed", 0))
    except ParamError as exc:
        raise PipelineError(f"'seed' {exc.message}", file=source) from None
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise PipelineError("'steps' must be a non-empty list of steps", file=source)

    step_ids = _step_ids(raw_steps, source)
    steps = [_parse_step(raw, step_ids, source) for raw in raw_steps]

    config = PipelineConfig(name=name, seed=seed, steps=steps, source=source)
    for step_id, key, text, item in _parse_overrides(overrides or [], source):
        step = config.step(step_id)
        step.params[key] = _override_value(step.stage, key, text, item)
    order_steps(config)
    for step in config.steps:
        build_stage(step, config)
    from pipeline.columns import check_column_flow

    check_column_flow(config)
    return config


def _step_ids(raw_steps: list, source: str) -> set[str]:
    """Every step's id, checked (a safe folder name, unique) before any step is parsed."""
    ids: list[str] = []
    for i, raw in enumerate(raw_steps):
        where = f"steps[{i}]" + (f" (line {raw.line})" if getattr(raw, "line", None) else "")
        if not isinstance(raw, dict):
            raise PipelineError(f"{where} must be a mapping with 'id' and 'stage'", file=source)
        step_id = raw.get("id")
        if not isinstance(step_id, str) or not NAME_RE.fullmatch(step_id) or ".." in step_id:
            raise PipelineError(
                f"{where}: 'id' must be letters, digits, '_', '-', '.' {NAME_RULE} and may not leave the run folder, "
                f"got {step_id!r}",
                file=source,
            )
        if step_id in ids:
            raise PipelineError(f"{where}: duplicate step id '{step_id}'", step=step_id, file=source)
        ids.append(step_id)
    return set(ids)


def _parse_step(raw: dict, step_ids: set[str], source: str) -> StepConfig:
    """One step's stage, params and inputs (references resolved against `step_ids`)."""
    step_id = raw["id"]
    where = {"step": step_id, "file": source}
    bad = sorted(set(raw) - STEP_KEYS)
    if bad:
        raise PipelineError(f"unknown key '{bad[0]}' in step; allowed: {sorted(STEP_KEYS)}", **where)
    stage_name = raw.get("stage")
    if not isinstance(stage_name, str):
        raise PipelineError("'stage' must name a stage (see `pipeline stages`)", **where)
    try:
        cls = stage_class(stage_name)
    except PipelineError as exc:
        raise exc.add_context(**where) from None
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        raise PipelineError("'params' must be a mapping", stage=stage_name, **where)
    raw_inputs = raw.get("inputs")
    if raw_inputs is None:
        raw_inputs = {}
    elif isinstance(raw_inputs, str):
        # A bare reference fills the stage's only required input.
        required = [n for n in cls.inputs if n not in cls.optional_inputs]
        if not cls.inputs:  # not "takes named inputs []": a source has nothing to write as a mapping
            raise PipelineError(f"stage '{stage_name}' is a source and takes no inputs; remove 'inputs' from this step",
                                stage=stage_name, **where)
        if len(required) != 1:
            raise PipelineError(
                f"stage '{stage_name}' takes named inputs {list(cls.inputs)}; write inputs as a mapping",
                stage=stage_name, **where,
            )
        raw_inputs = {required[0]: raw_inputs}
    elif not isinstance(raw_inputs, dict):
        raise PipelineError("'inputs' must be a step id, a path, or a mapping of input names", **where)
    inputs = {}
    for input_name, ref in raw_inputs.items():
        if input_name not in cls.inputs:
            raise PipelineError(
                f"unknown input '{input_name}'; stage '{stage_name}' takes: {list(cls.inputs) or 'no inputs'}",
                stage=stage_name, **where,
            )
        inputs[input_name] = _parse_ref(ref, step_ids, {**where, "stage": stage_name})
    missing = [n for n in cls.inputs if n not in inputs and n not in cls.optional_inputs]
    if missing:
        raise PipelineError(f"input '{missing[0]}' is not given", stage=stage_name, **where)
    return StepConfig(step_id, stage_name, dict(params), inputs, getattr(raw, "line", None))


def build_stage(step: StepConfig, config: PipelineConfig) -> Stage:
    cls = stage_class(step.stage)
    try:
        return cls.from_params(step.params)
    except PipelineError as exc:
        raise exc.add_context(step=step.id, stage=step.stage, file=config.source) from None


def order_steps(config: PipelineConfig) -> list[StepConfig]:
    """Steps in an order where every input is ready before its reader (a DAG check)."""
    by_id = {s.id: s for s in config.steps}
    state: dict[str, int] = {}
    ordered: list[StepConfig] = []

    def visit(step: StepConfig, chain: list[str]) -> None:
        if state.get(step.id) == 2:
            return
        if state.get(step.id) == 1:
            cycle = chain[chain.index(step.id):] + [step.id]
            raise PipelineError(f"steps form a cycle: {' -> '.join(cycle)}", step=step.id, file=config.source)
        state[step.id] = 1
        for ref in step.inputs.values():
            if ref.step is not None:
                visit(by_id[ref.step], chain + [step.id])
        state[step.id] = 2
        ordered.append(step)

    for s in config.steps:
        visit(s, [])
    return ordered


def upstream(config: PipelineConfig, step_id: str) -> set[str]:
    """A step and every step it depends on."""
    by_id = {s.id: s for s in config.steps}
    seen: set[str] = set()
    todo = [step_id]
    while todo:
        sid = todo.pop()
        if sid in seen:
            continue
        seen.add(sid)
        todo += [r.step for r in by_id[sid].inputs.values() if r.step is not None]
    return seen
