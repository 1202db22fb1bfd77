"""The pipeline's YAML: read, check every stage and key against the stage's own flags, resolve `${…}` references.

    work_dir: runs/demo                 # default output_dir of a stage: <work_dir>/<id>
    vars: {task: SST-2}                 # ${vars.task}
    stages:
      - stage: decompose                # any `xcompress` stage; `finetune-teacher` is `finetune`
        id: td                          # default: the stage name (ids are unique)
        launcher: local                 # local | torchrun:N | mpirun:N | horovodrun:N | slurm:N
        args:                           # the stage's flags, by name (output_dir defaults as above)
          teacher_model: all-MiniLM-L6-v2
      - stage: general-distill
        args:
          student_model: ${td.output_dir}   # any flag of an earlier stage: its resolved value

Every problem (unknown stage or key, a reference to nothing earlier, a bad value for a flag, a launcher a stage
cannot use) is an InputError naming the file and line, raised before any stage runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from stagekit.cli import build_parser, stage_module
from stagekit.errors import InputError
from stagekit.options import config_from_namespace
from stagekit.stages import STAGES

ALIASES = {"finetune-teacher": "finetune"}
LAUNCHERS = ("local", "torchrun", "mpirun", "horovodrun", "slurm")
STAGE_KEYS = {"stage", "id", "launcher", "args"}
TOP_KEYS = {"work_dir", "vars", "stages", "name"}
REF = re.compile(r"\$\{([A-Za-z0-9_\-]+)\.([A-Za-z0-9_]+)\}")


class _LineDict(dict):
    """A mapping that remembers the line of each key (1-based) and its own."""

    line: int = 0
    key_lines: dict[str, int]


class _LineLoader(yaml.SafeLoader):
    pass


def _line_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _LineDict:
    mapping = _LineDict(loader.construct_mapping(node, deep=True))
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if hasattr(k, "value")}
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _line_mapping)


@dataclasses.dataclass
class StagePlan:
    id: str
    stage: str
    launcher: str
    ranks: int
    values: dict[str, Any]  # resolved flag values (output_dir filled in)
    depends_on: list[str]
    line: int
    config: dict[str, Any] = dataclasses.field(default_factory=dict)  # every field of the stage, as parsed

    def argv(self) -> list[str]:
        """The stage's own command-line flags."""
        args = [self.stage]
        for key, value in self.values.items():
            if value is None or value is False:
                continue
            args.append(f"--{key}")
            if value is not True:
                args.append(",".join(map(str, value)) if isinstance(value, list) else str(value))
        return args


@dataclasses.dataclass
class PipelinePlan:
    path: Path
    name: str
    work_dir: Path
    stages: list[StagePlan]


class _RaisingParser:
    """Parse a stage's flags with its real parser, turning argparse's exit into an InputError."""

    def __init__(self, stage: str):
        self.parser = build_parser(stage)
        sub = next(a for a in self.parser._actions if isinstance(a, argparse._SubParsersAction))
        self.stage_parser = sub.choices[stage]

    def check(self, argv: list[str], where: str) -> argparse.Namespace:
        def fail(message):
            raise InputError(f"{where}: {message}")

        self.stage_parser.error = fail
        self.parser.error = fail
        return self.parser.parse_args(argv)


def check_stage_args(name: str, argv: list[str], where: str) -> Any:
    """A stage's config from its flags (`argv` starts with the stage name), checked as far as can be without
    models or data: its own parser (types, choices, required flags), then its `validate` hook."""
    module = stage_module(name)
    parsed = _RaisingParser(name).check(argv, where)
    try:
        cfg = config_from_namespace(module.CONFIG, parsed)
        if hasattr(module, "validate"):
            module.validate(cfg)
    except InputError as e:
        raise InputError(f"{where}: {e}") from e
    return cfg


def load_plan(path: str | Path) -> PipelinePlan:
    path = Path(path)
    try:
        doc = yaml.load(path.read_text(), Loader=_LineLoader)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(f"{path}:{mark.line + 1 if mark else '?'}: not valid YAML ({getattr(e, 'problem', e)})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("stages"), list) or not doc["stages"]:
        raise InputError(f"{path}: expected a mapping with a non-empty `stages:` list")
    for key in doc:
        if key not in TOP_KEYS:
            raise InputError(f"{path}:{doc.key_lines.get(key, '?')}: unknown top-level key {key!r} "
                             f"(expected {', '.join(sorted(TOP_KEYS))})")
    work_dir = Path(str(doc.get("work_dir", f"runs/{path.stem}")))
    variables = {str(k): v for k, v in (doc.get("vars") or {}).items()}
    known: dict[str, dict[str, Any]] = {"vars": variables, "pipeline": {"work_dir": str(work_dir)}}
    plans: list[StagePlan] = []
    quantized: set[str] = set()
    for entry in doc["stages"]:
        plans.append(_plan_stage(path, entry, work_dir, known, quantized))
    return PipelinePlan(path, str(doc.get("name", path.stem)), work_dir, plans)


def _plan_stage(path: Path, entry: Any, work_dir: Path, known: dict[str, dict[str, Any]],
                quantized: set[str]) -> StagePlan:
    """Check one stage entry against its stage's flags and resolve it; `known` and `quantized` (outputs of
    quantize stages) grow with it."""
    line = getattr(entry, "line", "?")
    if not isinstance(entry, dict) or "stage" not in entry:
        raise InputError(f"{path}:{line}: each stage is a mapping with a `stage:` key")
    name = ALIASES.get(str(entry["stage"]), str(entry["stage"]))
    if name not in STAGES or not STAGES[name].in_pipeline:
        stages = sorted({s for s, facts in STAGES.items() if facts.in_pipeline} | set(ALIASES))
        raise InputError(f"{path}:{entry.key_lines['stage']}: unknown stage {entry['stage']!r} "
                         f"(expected one of {', '.join(stages)})")
    stage_id = str(entry.get("id", entry["stage"]))
    if stage_id in known:
        raise InputError(f"{path}:{line}: stage id {stage_id!r} is used twice (give each an `id:`)")
    launcher, ranks = _launcher(path, entry, name)
    fields = {f.name for f in dataclasses.fields(stage_module(name).CONFIG)}
    values: dict[str, Any] = {}
    depends: list[str] = []
    for key in entry:
        if key not in STAGE_KEYS:
            raise InputError(f"{path}:{entry.key_lines.get(key, line)}: unknown key {key!r} in stage {stage_id} "
                             f"(expected {', '.join(sorted(STAGE_KEYS))}; the stage's flags go under args:)")
    args = entry.get("args") or _LineDict()
    if not isinstance(args, dict):
        raise InputError(f"{path}:{entry.key_lines.get('args', line)}: args of stage {stage_id} must be a mapping")
    for key, raw in args.items():
        where = f"{path}:{args.key_lines.get(key, line)}"
        if key not in fields:
            raise InputError(f"{where}: stage {entry['stage']} has no key {key!r}")
        values[key] = _resolve(raw, known, where, depends)
    if "output_dir" in fields and "output_dir" not in values:
        values["output_dir"] = str(work_dir / stage_id)
    cfg = check_stage_args(name, StagePlan(stage_id, name, launcher, ranks, values, depends, line).argv(),
                           f"{path}:{line}: stage {stage_id}")
    resolved = {f: getattr(cfg, f) for f in fields}
    if name == "quantize":
        if str(resolved["model"]) in quantized:
            raise InputError(f"{path}:{args.key_lines.get('model', line)}: stage {stage_id} quantizes the output of "
                             "a quantize stage, which is already quantized")
        quantized.add(str(resolved["output_dir"]))
    known[stage_id] = resolved
    return StagePlan(stage_id, name, launcher, ranks, values, sorted(set(depends)), line, resolved)


def _launcher(path: Path, entry: dict, stage: str) -> tuple[str, int]:
    text = str(entry.get("launcher", "local"))
    where = f"{path}:{entry.key_lines.get('launcher', entry.line)}"
    kind, _, n = text.partition(":")
    if kind not in LAUNCHERS:
        raise InputError(f"{where}: unknown launcher {text!r} (expected local, torchrun:N, mpirun:N, horovodrun:N, slurm:N)")
    try:
        ranks = int(n) if n else 1
    except ValueError:
        raise InputError(f"{where}: launcher {text!r}: the process count must be an integer") from None
    if ranks < 1 or (kind == "local" and n):
        raise InputError(f"{where}: launcher {text!r}: local runs one process; others need N >= 1")
    if kind != "local" and ranks > 1 and not STAGES[stage].multi_rank:
        multi = sorted(s for s, facts in STAGES.items() if facts.multi_rank)
        raise InputError(f"{where}: stage {stage} runs on one process; launcher {text!r} is for {', '.join(multi)}")
    return kind, ranks


def _resolve(value: Any, known: dict[str, dict[str, Any]], where: str, depends: list[str]) -> Any:
    if isinstance(value, list):
        return [_resolve(v, known, where, depends) for v in value]
    if not isinstance(value, str):
        return value

    def lookup(match: re.Match) -> str:
        ref, key = match.group(1), match.group(2)
        if ref not in known:
            raise InputError(f"{where}: ${{{ref}.{key}}} refers to no earlier stage "
                             f"(earlier: {', '.join(k for k in known if k not in ('vars', 'pipeline')) or 'none'})")
        if key not in known[ref] or known[ref][key] is None:
            raise InputError(f"{where}: ${{{ref}.{key}}}: {ref} has no {key}")
        if ref not in ("vars", "pipeline"):
            depends.append(ref)
        return str(known[ref][key])

    whole = REF.fullmatch(value)
    if whole and whole.group(1) in known and not isinstance(known[whole.group(1)].get(whole.group(2)), str):
        lookup(whole)  # a lone reference keeps the referenced value's type (numbers, booleans)
        return known[whole.group(1)][whole.group(2)]
    if "${" in value and not REF.search(value):
        raise InputError(f"{where}: malformed reference in {value!r} (expected ${{id.key}})")
    return REF.sub(lookup, value)
