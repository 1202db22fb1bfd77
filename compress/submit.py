"""Submit a stage, or a whole pipeline as a chain of jobs, to SLURM.

    xcompress submit --nodes 2 --gpus_per_node 4 --partition gpu general-distill --teacher_model … --output_dir …
    xcompress submit --partition gpu --time 24:00:00 pipeline configs/bert-base-glue.yaml
    xcompress submit --dry_run task-distill …      # print the rendered script(s); nothing is written or submitted
    xcompress submit --wait decompose …            # also wait for the job(s); exit 1 if one fails

As with sbatch, submit's own flags come first and everything after the stage name is the stage's flags, checked
by the stage's own parser before anything is submitted. A template of `scripts/slurm/` is rendered with the
resources asked for (its `#SBATCH` lines replaced or added, the stage's flags set as the script's arguments),
saved under --log_dir and submitted with `sbatch`; the job ids are printed. Which template:

    general-distill             general_distill.sbatch   srun, one Horovod task per GPU (MPI through PMIx)
    task-distill, finetune      task_distill.sbatch      srun, one torchrun per node, c10d rendezvous
    pregenerate of a directory  pregenerate_array.sbatch a job array, one task per dump part -> shard_00i/
    pregenerate of one          pregenerate_array.sbatch a job array, one task per slice of its streams
      multistream dump                                   (--dump_parts, default one per GB) -> shard_00i/
    any other stage             stage.sbatch             one task
    pipeline CONFIG             pipeline_stage.sbatch    one job per stage not yet complete, each afterok on the
                                                         jobs of the stages it reads from
"""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from stagekit.atomic import write_json
from stagekit.bz2streams import first_stream_end
from stagekit.errors import InputError, StageFailure
from stagekit.options import option
from stagekit.stages import STAGES

from .pipeline import is_complete, stage_hashes
from .pipeline_config import check_stage_args, load_plan

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "scripts" / "slurm"
TARGETS = sorted(set(STAGES) - {"submit", "demo"})
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE", "REVOKED"}


@dataclasses.dataclass
class SubmitConfig:
    target: str = option(
        help="the stage to run, or `pipeline`",
        choices=TARGETS,
        metavar="STAGE|pipeline",
        positional=True)
    stage_args: list[str] = option(help="the stage's own flags (pipeline: the YAML file)", positional="remainder")
    nodes: int | None = option(None, help="nodes per job (general-distill, task-distill, finetune)")
    ntasks_per_node: int | None = option(
        None,
        help="processes per node (default: --gpus_per_node, else 1); torchrun workers for task stages")
    gpus_per_node: int | None = option(None, help="GPUs per node (sbatch --gpus-per-node)")
    cpus_per_task: int | None = option(None, help="CPUs per task (sbatch --cpus-per-task)")
    mem: str | None = option(None, help="memory per node, e.g. 64G (sbatch --mem)")
    time: str | None = option(None, help="time limit, e.g. 24:00:00 (sbatch --time)")
    partition: str | None = option(None, help="SLURM partition (sbatch --partition)")
    account: str | None = option(None, help="SLURM account (sbatch --account)")
    qos: str | None = option(None, help="quality of service (sbatch --qos)")
    job_name: str | None = option(None, help="job name (default xc-<stage>, or xc-<pipeline>-<stage id>)")
    dependency: str | None = option(None, help="sbatch dependency of the (first) job(s), e.g. afterok:1234")
    max_parallel: int | None = option(None, help="pregeneration array: at most this many tasks at once")
    dump_parts: int | None = option(
        None,
        help="pregenerate of one multistream dump: cut it into this many array tasks (default: one per GB)")
    sbatch_args: str | None = option(
        None,
        help="further sbatch options, verbatim, e.g. \"--constraint=a100 --exclusive\"")
    template: str | None = option(None, help="an sbatch template of your own instead of scripts/slurm/'s")
    log_dir: str = option("runs/slurm", help="where rendered scripts and job logs go")
    wait: bool = option(False, help="wait for the jobs; exit 1 naming the first that fails")
    dry_run: bool = option(False, help="print the rendered scripts; submit nothing")


CONFIG = SubmitConfig


@dataclasses.dataclass
class Job:
    """One sbatch submission: a template, its #SBATCH options, environment and arguments."""
    name: str
    template: Path
    options: dict[str, str | None]
    args: list[str]
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    after: list[int] = dataclasses.field(default_factory=list)  # indexes of earlier jobs this one waits for
    what: str = ""


def validate(cfg: SubmitConfig) -> None:
    for flag in ("nodes", "ntasks_per_node", "gpus_per_node", "cpus_per_task", "max_parallel", "dump_parts"):
        value = getattr(cfg, flag)
        if value is not None and value < 1:
            raise InputError(f"--{flag} {value}: must be >= 1")


def run(cfg: SubmitConfig) -> dict[str, Any]:
    validate(cfg)
    jobs = _plan(cfg)
    if not cfg.dry_run and shutil.which("sbatch") is None:
        raise InputError("sbatch not found on PATH: submitting needs SLURM's client commands (Debian: slurm-client); "
                         "--dry_run prints the scripts without them")
    log_dir = Path(cfg.log_dir).resolve()
    records: list[dict[str, Any]] = []
    if cfg.dry_run:
        for job in jobs:
            upstream = [f"<job of {jobs[i].name}>" for i in job.after]
            print(f"# ---- {job.what}: {job.name} ----\n{render(job, log_dir, upstream)}")
        return {"jobs": [{"name": j.name, "what": j.what} for j in jobs], "dry_run": True}
    log_dir.mkdir(parents=True, exist_ok=True)
    ids: list[str] = []
    for k, job in enumerate(jobs):
        pending = log_dir / f".{job.name}-{os.getpid()}-{k}.sbatch.tmp"
        pending.write_text(render(job, log_dir, [ids[i] for i in job.after]))
        try:
            job_id = _sbatch(pending, job.name)
        except InputError:
            pending.unlink()
            _cancel(ids, [r["script"] for r in records])
            raise
        script = log_dir / f"{job.name}-{job_id}.sbatch"  # beside its log, <name>-<job id>.out
        pending.rename(script)
        ids.append(job_id)
        records.append({"job_id": job_id, "name": job.name, "what": job.what, "script": str(script),
                        "after": [ids[i] for i in job.after]})
        print(f"submitted job {job_id}: {job.name} ({job.what})" +
              (f", after job(s) {', '.join(ids[i] for i in job.after)}" if job.after else ""), flush=True)
    summary: dict[str, Any] = {"target": cfg.target, "jobs": records, "config": dataclasses.asdict(cfg),
                               "dry_run": False}
    if not ids:
        return summary
    record = log_dir / f"submit-{ids[0]}.json"
    write_json(record, summary)
    if cfg.wait:
        summary["states"] = wait_for(records)
        write_json(record, summary)
    return summary


def report(summary: dict[str, Any]) -> str:
    if summary["dry_run"]:
        return f"submit: {len(summary['jobs'])} job script(s) rendered (dry run, nothing submitted)"
    if not summary["jobs"]:
        return "submit: every stage is complete; nothing submitted"
    lines = [f"submit: {len(summary['jobs'])} job(s): {' '.join(j['job_id'] for j in summary['jobs'])}"]
    for job_id, state in summary.get("states", {}).items():
        lines.append(f"  job {job_id}: {state['state']} ({state['log']})")
    return "\n".join(lines)


def _plan(cfg: SubmitConfig) -> list[Job]:
    """The jobs to submit, their stage flags checked."""
    if cfg.target == "pipeline":
        return _pipeline_jobs(cfg)
    try:
        stage_cfg = check_stage_args(cfg.target, [cfg.target, *cfg.stage_args], f"xcompress submit {cfg.target}")
    except InputError:
        own = {f"--{f.name}" for f in dataclasses.fields(SubmitConfig)}
        misplaced = next((a for a in cfg.stage_args if "--" + a[2:].split("=")[0].replace("-", "_") in own), None)
        if misplaced:
            raise InputError(f"{misplaced}: submit's own flags go before the stage name, as with sbatch "
                             f"(xcompress submit {misplaced} … {cfg.target} …)") from None
        raise
    job = _stage_job(cfg, cfg.target, cfg.stage_args, stage_cfg)
    if cfg.dependency:
        job.options["dependency"] = cfg.dependency
    return [job]


def _stage_job(cfg: SubmitConfig, stage: str, args: list[str], stage_cfg: Any) -> Job:
    options = _common_options(cfg)
    per_node = cfg.ntasks_per_node or cfg.gpus_per_node or 1
    name = cfg.job_name or f"xc-{stage}"
    if stage == "general-distill":
        tasks = (cfg.nodes or 1) * per_node
        if stage_cfg.train_batch_size % tasks:
            raise InputError(f"--train_batch_size {stage_cfg.train_batch_size}: the global batch must divide by the "
                             f"{tasks} tasks ({cfg.nodes or 1} node(s) x {per_node})")
        options |= {"nodes": str(cfg.nodes or 1), "ntasks-per-node": str(per_node)}
        return Job(name, _template(cfg, "general_distill.sbatch"), options, args,
                   what=f"{stage}, {cfg.nodes or 1} node(s) x {per_node} Horovod task(s)")
    if STAGES[stage].multi_rank:
        options |= {"nodes": str(cfg.nodes or 1), "ntasks-per-node": "1"}
        if not cfg.gpus_per_node and not cfg.cpus_per_task:
            options["cpus-per-task"] = str(per_node)  # CPU workers: one core each
        return Job(name, _template(cfg, "task_distill.sbatch"), options, args,
                   env={"XCOMPRESS_STAGE": stage, "XCOMPRESS_NPROC_PER_NODE": str(per_node)},
                   what=f"{stage}, {cfg.nodes or 1} node(s) x {per_node} torchrun worker(s)")
    if cfg.nodes and cfg.nodes > 1:
        raise InputError(f"--nodes {cfg.nodes}: {stage} runs on one node (several: general-distill, task-distill, "
                         "finetune)")
    if stage == "pregenerate":
        count, env, what = _pregeneration_array(cfg, Path(stage_cfg.train_corpus))
        if count > 1:
            rest = _without(args, ("--train_corpus", "--output_dir"))
            array = f"0-{count - 1}" + (f"%{cfg.max_parallel}" if cfg.max_parallel else "")
            options |= {"array": array, "cpus-per-task": str(cfg.cpus_per_task or stage_cfg.num_workers)}
            return Job(name, _template(cfg, "pregenerate_array.sbatch"), options,
                       [stage_cfg.train_corpus, stage_cfg.output_dir, *rest], env=env,
                       what=f"pregenerate, array of {count} {what} -> {stage_cfg.output_dir}/shard_*")
    return Job(name, _template(cfg, "stage.sbatch"), options | {"ntasks": "1"}, [stage, *args], what=stage)


def _pregeneration_array(cfg: SubmitConfig, corpus: Path) -> tuple[int, dict[str, str], str]:
    """Array tasks for a pregeneration: one per file of a directory, or slices of one multistream dump."""
    if corpus.is_dir():
        return len([p for p in corpus.iterdir() if not p.name.startswith(".")]), {}, "dump parts"
    if corpus.is_file() and corpus.suffix == ".bz2" and first_stream_end(corpus) is not None:
        count = cfg.dump_parts or -(-corpus.stat().st_size // 10**9)
        return count, {"XCOMPRESS_DUMP_PARTS": str(count)}, "slices of one multistream dump"
    return 1, {}, ""


def _pipeline_jobs(cfg: SubmitConfig) -> list[Job]:
    if len(cfg.stage_args) != 1:
        raise InputError("xcompress submit pipeline: expected one argument, the pipeline's YAML file "
                         f"(got {len(cfg.stage_args)}: {shlex.join(cfg.stage_args)})")
    config = cfg.stage_args[0]
    plan = load_plan(config)
    hashes = stage_hashes(plan)
    jobs: list[Job] = []
    index: dict[str, int] = {}
    for stage in plan.stages:
        if is_complete(plan, stage, hashes):
            print(f"{stage.id}: complete, not submitted", flush=True)
            continue
        options = _common_options(cfg)
        if stage.launcher in ("mpirun", "horovodrun", "slurm"):
            options["ntasks"] = str(stage.ranks)
        else:
            options["ntasks"] = "1"
            if stage.launcher == "torchrun" and not cfg.gpus_per_node and not cfg.cpus_per_task:
                options["cpus-per-task"] = str(stage.ranks)
        after = [index[d] for d in stage.depends_on if d in index]
        if cfg.dependency and not after:
            options["dependency"] = cfg.dependency
        index[stage.id] = len(jobs)
        jobs.append(Job(f"{cfg.job_name or 'xc-' + plan.name}-{stage.id}", _template(cfg, "pipeline_stage.sbatch"),
                        options, [str(plan.path), stage.id], after=after,
                        what=f"pipeline {plan.name}, stage {stage.id} ({stage.stage}, {stage.launcher}:{stage.ranks})"))
    return jobs


def _common_options(cfg: SubmitConfig) -> dict[str, str | None]:
    options: dict[str, str | None] = {}
    for flag in ("partition", "account", "qos", "time", "mem", "gpus_per_node", "cpus_per_task"):
        value = getattr(cfg, flag)
        if value is not None:
            options[flag.replace("_", "-")] = str(value)
    for extra in shlex.split(cfg.sbatch_args or ""):
        if not extra.startswith("--"):
            raise InputError(f"--sbatch_args {cfg.sbatch_args!r}: give long options (--key=value), not {extra!r}")
        key, eq, value = extra[2:].partition("=")
        options[key] = value if eq else None
    return options


def _template(cfg: SubmitConfig, name: str) -> Path:
    path = Path(cfg.template) if cfg.template else TEMPLATES / name
    if not path.is_file():
        raise InputError(f"--template {path}: no such file" if cfg.template else
                         f"{path}: template missing (xcompress runs from its repository, which holds scripts/slurm/)")
    return path


def _without(args: list[str], flags: tuple[str, ...]) -> list[str]:
    """`args` less the given flags and their values (either `--flag value` or `--flag=value`, dashes or not)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        key = "--" + a[2:].split("=")[0].replace("-", "_") if a.startswith("--") else a
        if key in flags:
            skip = "=" not in a
            continue
        out.append(a)
    return out


def render(job: Job, log_dir: Path, after_ids: list[str]) -> str:
    """The template with its #SBATCH options replaced or added, the job's environment and arguments set."""
    options = dict(job.options)
    options["job-name"] = job.name
    options["output"] = str(log_dir / ("%x-%A_%a.out" if "array" in options else "%x-%j.out"))
    if after_ids:
        options["dependency"] = "afterok:" + ":".join(after_ids)
    if "dependency" in options:
        options["kill-on-invalid-dep"] = "yes"  # a failed upstream job cancels this one instead of leaving it pending
    lines = job.template.read_text().splitlines()
    directive = re.compile(r"^#SBATCH\s+--([\w-]+)(?:[=\s]+(.*))?$")
    last = max((i for i, line in enumerate(lines) if line.startswith("#SBATCH")), default=0)
    out = []
    for i, line in enumerate(lines):
        m = directive.match(line)
        if not (m and m.group(1) in options):
            out.append(line)
        if i == last:
            out += [f"#SBATCH --{k}" + (f"={v}" if v is not None else "") for k, v in options.items()]
            env = {"XCOMPRESS_ROOT": str(REPO), "XCOMPRESS_PYTHON": sys.executable} | job.env
            out += ["# set by `xcompress submit`:",
                    *(f"export {k}={shlex.quote(v)}" for k, v in env.items()),
                    "set -- " + shlex.join(job.args)]
    return "\n".join(out) + "\n"


def _sbatch(script: Path, name: str) -> str:
    """Submit; SLURM's refusal is shown as it gave it."""
    res = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if res.returncode != 0:
        said = " ".join(line.strip() for line in res.stderr.splitlines() if line.strip()) or f"exit {res.returncode}"
        raise InputError(f"sbatch refused job {name}: {said}")
    return res.stdout.strip().split(";")[0]


def _cancel(ids: list[str], scripts: list[str]) -> None:
    """Undo a partly submitted chain: its jobs would otherwise run without the rest."""
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)
        print(f"submit: cancelled the job(s) already submitted: {' '.join(ids)}", file=sys.stderr)
    for script in scripts:
        Path(script).unlink(missing_ok=True)


def job_states(job_id: str) -> list[dict[str, str]]:
    """Every record SLURM keeps for a job (one per array task), as key=value fields."""
    res = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    if res.returncode != 0:
        raise StageFailure(f"job {job_id}: SLURM no longer knows it ({res.stderr.strip()})")
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in res.stdout.splitlines() if line.strip()]


def wait_for(records: list[dict[str, Any]], poll_seconds: float = 1.0) -> dict[str, dict[str, str]]:
    """Poll scontrol (sbatch --wait backs off to 32 s) until every job has ended; StageFailure if one did not
    complete, naming it, its state, exit code and the last line of its log."""
    states: dict[str, dict[str, str]] = {}
    pending = [r["job_id"] for r in records]
    while pending:
        for job_id in list(pending):
            tasks = job_states(job_id)
            if all(t.get("JobState") in TERMINAL for t in tasks):
                worst = next((t for t in tasks if t["JobState"] != "COMPLETED"), tasks[0])
                states[job_id] = {"state": worst["JobState"], "exit_code": worst.get("ExitCode", ""),
                                  "reason": worst.get("Reason", ""), "log": worst.get("StdOut", "")}
                pending.remove(job_id)
        if pending:
            time.sleep(poll_seconds)
    failed = [r for r in records if states[r["job_id"]]["state"] != "COMPLETED"]
    if failed:
        first = next((r for r in failed if states[r["job_id"]]["reason"] != "DependencyNeverSatisfied"), failed[0])
        s = states[first["job_id"]]
        others = [f"{r['job_id']} ({r['name']}) {states[r['job_id']]['state']}" for r in failed if r is not first]
        raise StageFailure(f"job {first['job_id']} ({first['what']}) ended {s['state']}, exit code {s['exit_code']}; "
                           f"log {s['log']}: {_last_line(s['log'])!r}" + (f"; also: {', '.join(others)}" if others else ""))
    return states


def _last_line(log: str) -> str:
    """The line of a job's log that says why it failed: the last error a stage printed, else the last line."""
    try:
        lines = [line for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    errors = [line for line in lines if "error" in line.lower() and not line.startswith("srun:")]
    stage_errors = [line for line in errors if not line.startswith("xcompress pipeline:")]  # the stage's own words
    return (stage_errors or errors or lines or ["(empty log)"])[-1][:300]
