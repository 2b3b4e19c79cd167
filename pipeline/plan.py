"""What `pipeline run` would do, without doing it (`pipeline run --dry-run`).

For each step: `cached` (its fingerprint matches a finished, intact output), `run` with the reason
(forced, never run, params changed, input changed, seed changed, stage version changed, code or
data changed, output damaged), `after` (an upstream step will run: this one re-runs only if that
output comes out different, since cache keys are content fingerprints), or `skipped` (outside
--only/--until). The fingerprints are the runner's own (`step_fingerprint`, `_resolve_inputs`),
so a plan says exactly what the next run will find.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import (
    PipelineConfig,
    StepConfig,
    build_stage,
    load_config,
    order_steps,
    parse_config,
)
from pipeline.errors import PipelineError
from pipeline.files import fingerprint_paths_from
from pipeline.runner import (
    RunDir,
    _outputs_intact,
    _resolve_inputs,
    left_out_notes,
    read_manifest,
    select_steps,
    step_fingerprint,
)
from pipeline.why import own_change, why_changed


@dataclass
class PlannedStep:
    id: str
    stage: str
    action: str  # cached | run | after | skipped
    reason: str = ""
    fingerprint: str | None = None

    def describe(self) -> str:
        text = {"cached": "cached, unchanged", "run": "will run", "after": "will run if its input changes",
                "skipped": "skipped (not selected)"}[self.action]
        return f"{text}: {self.reason}" if self.reason else text


def _plan_step(step: StepConfig, config: PipelineConfig, run: RunDir, force: bool,
               rerunning: set[str]) -> PlannedStep:
    stage = build_stage(step, config)
    if force:
        return PlannedStep(step.id, step.stage, "run", "forced (--force)")
    step_dir = run.path / step.id
    manifest = read_manifest(step_dir)
    feeding = sorted({r.step for r in step.inputs.values() if r.step in rerunning})
    if feeding:
        own = "never run" if manifest is None else own_change(manifest, stage, config.seed)
        if own:
            return PlannedStep(step.id, step.stage, "run", own)
        return PlannedStep(step.id, step.stage, "after", "upstream " + ", ".join(feeding) + " will run")
    _, described = _resolve_inputs(step, run, config)
    fp = step_fingerprint(stage, described, config.seed)
    if manifest is None:
        return PlannedStep(step.id, step.stage, "run", "never run", fp)
    if manifest.get("fingerprint") != fp:
        return PlannedStep(step.id, step.stage, "run", why_changed(manifest, stage, described, config.seed), fp)
    if not _outputs_intact(step_dir, manifest):
        return PlannedStep(step.id, step.stage, "run", "output files missing or damaged", fp)
    return PlannedStep(step.id, step.stage, "cached", "", fp)


def plan_run(
    config: str | Path | dict | PipelineConfig,
    *,
    workdir: str | Path = "data/runs",
    force: bool = False,
    only: str | None = None,
    until: str | None = None,
    overrides: list[str] | None = None,
) -> list[PlannedStep]:
    """The plan of `run_pipeline` with the same arguments; reads manifests, writes nothing, takes no lock."""
    if isinstance(config, (str, Path)):
        config = load_config(config, overrides)
    elif isinstance(config, dict):
        config = parse_config(config, overrides=overrides)
    selected = select_steps(config, only, until)
    run = RunDir(Path(workdir), config.name)
    plan: list[PlannedStep] = []
    rerunning: set[str] = set()
    with fingerprint_paths_from(run.path):  # as the run names input paths
        notes = left_out_notes(config, selected, run)
        for step in order_steps(config):
            if step.id not in selected:
                plan.append(PlannedStep(step.id, step.stage, "skipped", notes.get(step.id, "")))
                continue
            try:
                planned = _plan_step(step, config, run, force, rerunning)
            except PipelineError as exc:
                raise exc.add_context(step=step.id, stage=step.stage, file=config.source) from None
            if planned.action in ("run", "after"):
                rerunning.add(step.id)
            plan.append(planned)
    return plan


def format_plan(plan: list[PlannedStep], run_dir: Path) -> str:
    width = max((len(s.id) for s in plan), default=4)
    lines = [f"plan for {run_dir} (dry run: nothing is written)"]
    lines += [f"  {s.id:<{width}}  ({s.stage}) {s.describe()}" for s in plan]
    counts = {a: sum(s.action == a for s in plan) for a in ("run", "after", "cached")}
    lines.append(f"{counts['run']} will run, {counts['after']} will run if their input changes, "
                 f"{counts['cached']} cached")
    return "\n".join(lines)
