"""Run a staged pipeline from one YAML file: each stage under its launcher, complete stages skipped.

    xcompress pipeline configs/demo.yaml                 # run, or resume after an interruption or a failure
    xcompress pipeline configs/demo.yaml --dry_run       # check everything and print the commands only
    xcompress pipeline configs/demo.yaml --stage td      # one stage, its upstream complete (a SLURM chain's job)

The whole file is checked before anything runs (see pipeline_config). Each stage runs as its own process
(`python -m compress <stage> …`, under torchrun / mpirun / horovodrun / srun when its launcher says so). A stage
is complete when it exited 0 with the same resolved config and the same upstream runs; a rerun skips it. A
changed or interrupted stage that this pipeline started before is rerun over its own output. State lives in
`<work_dir>/.pipeline/`, the resolved config in `<work_dir>/pipeline_resolved.yaml`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from stagekit.atomic import write_json
from stagekit.errors import InputError, StageFailure
from stagekit.options import option

from .pipeline_config import PipelinePlan, StagePlan, load_plan

OVERWRITE_FLAGS = ("overwrite_output_dir", "overwrite")


@dataclasses.dataclass
class PipelineConfig:
    config: str = option(help="the pipeline's YAML file (see configs/)", positional=True)
    dry_run: bool = option(False, help="check the file and print each stage's command")
    stage: str | None = option(
        None,
        help="run only this stage; the stages it depends on must be complete "
                   "(how `xcompress submit pipeline` runs one stage per SLURM job)",
        metavar="ID")


CONFIG = PipelineConfig


def launcher_command(stage: StagePlan) -> list[str]:
    """The command prefix that runs `python -m compress` under the stage's launcher."""
    python = [sys.executable, "-m", "compress"]
    n = str(stage.ranks)
    if stage.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", n, "-m", "compress"]
    if stage.launcher == "mpirun":
        root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
        # yield: Horovod's background thread must not busy-poll the cores the ranks compute on
        return ["mpirun", *root, "--oversubscribe", "--mca", "mpi_yield_when_idle", "1", "-np", n, *python]
    if stage.launcher == "horovodrun":
        return [str(Path(sys.executable).parent / "horovodrun"), "-np", n, "-H", f"localhost:{n}", *python]
    if stage.launcher == "slurm":
        return ["srun", "--ntasks", n, *python]
    return python


def stage_hash(stage: StagePlan, upstream: dict[str, str]) -> str:
    text = json.dumps({"stage": stage.stage, "values": stage.values, "launcher": [stage.launcher, stage.ranks],
                       "upstream": {d: upstream.get(d) for d in stage.depends_on}}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_hashes(plan: PipelinePlan) -> dict[str, str]:
    """Each stage's hash: its resolved args and launcher, and its upstream stages' hashes."""
    hashes: dict[str, str] = {}
    for stage in plan.stages:
        hashes[stage.id] = stage_hash(stage, hashes)
    return hashes


def is_complete(plan: PipelinePlan, stage: StagePlan, hashes: dict[str, str]) -> bool:
    return _done(plan.work_dir / ".pipeline" / f"{stage.id}.done.json", hashes[stage.id])


def run(cfg: PipelineConfig) -> dict[str, Any]:
    plan = load_plan(cfg.config)
    selected = _selected(plan, cfg.stage)
    if not cfg.dry_run:  # a dry run may check a cluster's config on a machine without its launchers
        _check_launchers(plan, selected)
    state = plan.work_dir / ".pipeline"
    hashes = stage_hashes(plan)
    records = []
    if not cfg.dry_run:
        state.mkdir(parents=True, exist_ok=True)
        _save_resolved(plan)
    started = time.perf_counter()
    for i, stage in enumerate(plan.stages, 1):
        if stage.id not in {s.id for s in selected}:
            continue
        h = hashes[stage.id]
        done_file, started_file = state / f"{stage.id}.done.json", state / f"{stage.id}.started.json"
        argv = stage.argv()
        if started_file.is_file() and not _done(done_file, h):
            flag = next((f for f in OVERWRITE_FLAGS if f in stage.config), None)
            if flag and not stage.config[flag]:
                argv.append(f"--{flag}")  # this pipeline's own earlier, changed or interrupted, output
        command = launcher_command(stage) + argv
        header = f"[{i}/{len(plan.stages)}] {stage.id} ({stage.stage}, {stage.launcher}"
        header += f":{stage.ranks})" if stage.launcher != "local" else ")"
        if cfg.dry_run:
            print(f"{header}\n  {shlex.join(command)}", flush=True)
            records.append({"id": stage.id, "status": "planned", "command": command})
            continue
        if _done(done_file, h):
            print(f"{header}: complete, skipped", flush=True)
            records.append({"id": stage.id, "status": "skipped", "seconds": 0.0})
            continue
        if cfg.stage:
            _check_upstream_complete(plan, stage, hashes)
        print(f"{header}\n  {shlex.join(command)}", flush=True)
        write_json(started_file, {"hash": h, "command": command})
        t = time.perf_counter()
        rc = subprocess.run(command, env=os.environ | {"PYTHONUNBUFFERED": "1"}).returncode
        seconds = time.perf_counter() - t
        if rc != 0:
            raise StageFailure(f"stage {stage.id} ({stage.stage}) failed with exit status {rc} after {seconds:.0f} s; "
                              f"fix it and rerun `xcompress pipeline {cfg.config}` to resume from there")
        write_json(done_file, {"hash": h, "command": command, "seconds": seconds})
        records.append({"id": stage.id, "status": "ran", "seconds": seconds})
    summary = {"pipeline": plan.name, "config": str(plan.path), "work_dir": str(plan.work_dir), "stages": records,
               "seconds": time.perf_counter() - started, "dry_run": cfg.dry_run,
               "report": _report_path(plan)}
    if not cfg.dry_run and not cfg.stage:
        write_json(plan.work_dir / "pipeline_summary.json", summary)
    return summary


def _selected(plan: PipelinePlan, stage_id: str | None) -> list[StagePlan]:
    if stage_id is None:
        return plan.stages
    chosen = [s for s in plan.stages if s.id == stage_id]
    if not chosen:
        raise InputError(f"--stage {stage_id}: {plan.path} has no stage with that id "
                         f"(ids: {', '.join(s.id for s in plan.stages)})")
    return chosen


def _check_upstream_complete(plan: PipelinePlan, stage: StagePlan, hashes: dict[str, str]) -> None:
    by_id = {s.id: s for s in plan.stages}
    missing = [d for d in stage.depends_on if not is_complete(plan, by_id[d], hashes)]
    if missing:
        raise InputError(f"--stage {stage.id}: needs stage(s) {', '.join(missing)} of {plan.path} complete first "
                         "(run them, or the whole pipeline)")


def _done(done_file: Path, h: str) -> bool:
    try:
        return json.loads(done_file.read_text())["hash"] == h
    except (OSError, ValueError, KeyError):
        return False


def _check_launchers(plan: PipelinePlan, stages: list[StagePlan]) -> None:
    needs = {"mpirun": "mpirun", "slurm": "srun", "horovodrun": str(Path(sys.executable).parent / "horovodrun")}
    for stage in stages:
        tool = needs.get(stage.launcher)
        if tool and shutil.which(tool) is None:
            raise InputError(f"{plan.path}:{stage.line}: stage {stage.id}: launcher {stage.launcher} needs "
                             f"`{Path(tool).name}`, which is not installed here")


def _save_resolved(plan: PipelinePlan) -> None:
    doc = {"name": plan.name, "config": str(plan.path), "work_dir": str(plan.work_dir),
           "stages": [{"id": s.id, "stage": s.stage, "launcher": f"{s.launcher}:{s.ranks}" if s.launcher != "local" else "local",
                       "depends_on": s.depends_on, **s.values} for s in plan.stages]}
    tmp = plan.work_dir / f".pipeline_resolved.yaml.{os.getpid()}.tmp"  # chained SLURM jobs may write it at once
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, plan.work_dir / "pipeline_resolved.yaml")


def _report_path(plan: PipelinePlan) -> str | None:
    reports = [s for s in plan.stages if s.stage == "report"]
    return str(Path(reports[-1].values["output_dir"]) / "report.md") if reports else None


def report(summary: dict[str, Any]) -> str:
    if summary["dry_run"]:
        return f"pipeline {summary['pipeline']}: {len(summary['stages'])} stages checked (dry run, nothing ran)"
    ran = [s for s in summary["stages"] if s["status"] == "ran"]
    lines = [f"pipeline {summary['pipeline']}: {len(ran)} stage(s) ran, "
             f"{len(summary['stages']) - len(ran)} complete and skipped, {summary['seconds'] / 60:.1f} min"]
    lines += [f"  {s['id']:<20} {s['status']:<8} {s.get('seconds', 0) / 60:6.1f} min" for s in summary["stages"]]
    if summary["report"]:
        lines.append(f"report: {summary['report']}")
    return "\n".join(lines)
