"""What the task stages (finetune, task-distill) share around their training phases: the common flags, the
distributed shim's lifetime, reading and checking the task's data and models before anything is written, the
output directory (config, log, `best/`, the final model at the top), and the final dev evaluation.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from compress.atomic import check_output_dir, write_json
from compress.errors import InputError
from decompose.stage import TOKENIZER_FILES

from .checkpoint import publish_model
from .classifier import evaluate_features, load_classifier
from .dist import Distributed
from .flags import check_training_flags
from .glue import dev_files, get_task, task_dir, train_file
from .task_data import load_features, load_tokenizer
from .task_training import LoopSettings, Phase, run_phase

@dataclasses.dataclass(kw_only=True)
class TaskTrainingConfig:
    """The fields every task stage has; a stage's config adds its own (keyword-only, so in any order)."""
    task_name: str
    data_dir: str
    output_dir: str
    num_train_epochs: float = 3.0
    learning_rate: float = 5e-5
    max_seq_length: int = 128
    train_batch_size: int = 32
    eval_batch_size: int = 128
    gradient_accumulation_steps: int = 1
    warmup_proportion: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_steps: int | None = None
    max_train_examples: int | None = None
    eval_step: int = 200
    log_steps: int = 10
    seed: int = 42
    overwrite_output_dir: bool = False
    do_lower_case: bool = False
    keep_sparsity: bool = False
    quiet: bool = False


_HELP = {
    "task_name": "GLUE task: CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI",
    "data_dir": "the glue_data directory, or the task's own directory",
    "train_batch_size": "global batch over all ranks",
    "max_steps": "optimizer steps (of the prediction phase in task-distill; overrides the epochs)",
    "max_train_examples": "train on a seeded random subset of this many examples",
    "eval_step": "evaluate on dev every this many steps (and at the end)",
    "do_lower_case": "accepted for TinyBERT compatibility (the model's tokenizer decides)",
    "keep_sparsity": "weights that are zero at the start stay zero (fine-tuning a magnitude-pruned model)",
}
_FIRST = ("task_name", "data_dir", "output_dir")


def add_loop_arguments(p: argparse.ArgumentParser, config_cls: type) -> None:
    """Flags for every field of a task stage's config not already defined, typed and defaulted from it."""
    defined = {a.dest for a in p._actions}
    for f in dataclasses.fields(config_cls):
        if f.name in defined:
            continue
        flag = f"--{f.name}"
        if f.name in _FIRST:
            p.add_argument(flag, required=True, help=_HELP.get(f.name))
        elif f.type in ("bool", bool):
            p.add_argument(flag, action="store_true", help=_HELP.get(f.name))
        else:
            kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=f.default, help=_HELP.get(f.name))


class TaskRun:
    def __init__(self, cfg: Any, stage: str):
        self.cfg, self.stage = cfg, stage
        self.started = time.perf_counter()

    def __enter__(self) -> TaskRun:
        self.dist = Distributed()
        check_training_flags(self.cfg, self.dist.world_size)
        self.task = get_task(self.cfg.task_name)
        task_dir(self.cfg.data_dir, self.task)  # a wrong --data_dir is named before any model is loaded
        self.out = check_output_dir(self.cfg.output_dir, self.cfg.overwrite_output_dir)
        self.log = None
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self.log is not None:
                self.log.close()
            if exc is not None and (failure := self.dist.peer_failure(exc)) is not None:
                raise failure from exc
        finally:
            self.dist.shutdown()
        return False

    def load_model(self, name: str, flag: str, need_task_model: bool = False):
        torch.manual_seed(self.cfg.seed)  # a new classifier head is drawn from the seed: runs repeat exactly
        model, model_dir = load_classifier(name, flag, self.task, need_task_model)
        return model.to(self.dist.device), model_dir

    def prepare(self, model_dir: Path, aug: bool) -> None:
        """Read and check the data with the model's tokenizer; only then create the output directory."""
        cfg = self.cfg
        self.tokenizer = load_tokenizer(model_dir, "--model")
        self.tokenizer_files = [model_dir / f for f in TOKENIZER_FILES if (model_dir / f).is_file()]
        path = train_file(self.task, cfg.data_dir, aug)
        if aug and not path.is_file():
            raise InputError(f"--aug_train: no {path} (make it with `xcompress augment`)")
        self.train = load_features(self.task, path, self.tokenizer, cfg.max_seq_length, cfg.max_train_examples, cfg.seed)
        self.devs = {p.stem: load_features(self.task, p, self.tokenizer, cfg.max_seq_length)
                     for p in dev_files(self.task, cfg.data_dir)}
        self.dev = next(iter(self.devs.values()))  # model selection: the first (MNLI: matched)
        if len(self.train) < cfg.train_batch_size:
            raise InputError(f"--train_batch_size {cfg.train_batch_size}: larger than the {len(self.train)} "
                             f"training examples of {path}")
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / f"{self.stage.replace('-', '_')}_config.json",
                       dataclasses.asdict(cfg) | {"world_size": self.dist.world_size, "backend": self.dist.backend,
                                                  "train_file": str(path), "train_examples": len(self.train)})
            self.log = open(self.out / "log.jsonl", "a")
        self.dist.barrier()

    def settings(self) -> LoopSettings:
        return LoopSettings(**{f.name: getattr(self.cfg, f.name) for f in dataclasses.fields(LoopSettings)})

    def run_phase(self, phase: Phase) -> dict[str, Any]:
        if self.cfg.keep_sparsity:
            from compress.prune_unstructured import SparsityMask

            phase.after_step = SparsityMask(phase.model)
        return run_phase(phase, self.train, self.dev, self.task, self.settings(), self.dist, self.out,
                         self.tokenizer_files, self.log)

    def finish(self, phases: list[dict[str, Any]]) -> dict[str, Any]:
        """Publish the final model (the best dev checkpoint, or the last phase's model when it was not
        evaluated) at the top of the output directory, and evaluate it on every dev file."""
        evaluated = phases[-1]["best_step"] is not None
        final_dir = self.out / ("best" if evaluated else phases[-1]["phase"])
        self.dist.barrier()
        results = {}
        if evaluated:
            final, _ = load_classifier(str(final_dir), "--output_dir", self.task)
            final.to(self.dist.device)
            results = {name: evaluate_features(final, self.task, feats, self.cfg.eval_batch_size, self.dist)
                       for name, feats in self.devs.items()}
        summary = {"stage": self.stage, "task": self.task.name, "world_size": self.dist.world_size,
                   "backend": self.dist.backend, "linear_products": self.dist.linear_products,
                   "train_examples": len(self.train), "phases": phases,
                   "dev": results, "seconds": time.perf_counter() - self.started,
                   "output_dir": str(self.out), "config": dataclasses.asdict(self.cfg)}
        if self.dist.is_main:
            publish_model(self.out, final_dir)
            if results:
                write_json(self.out / "eval_results.json", results)
            write_json(self.out / f"{self.stage.replace('-', '_')}_summary.json", summary)
        self.dist.barrier()
        return summary | {"is_main": self.dist.is_main}

    @staticmethod
    def report(summary: dict[str, Any]) -> str:
        dev = "; ".join(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items())
                        for name, m in summary["dev"].items()) or "dev not evaluated (intermediate layers only)"
        steps = " + ".join(f"{p['steps']} {p['phase']}" for p in summary["phases"])
        return (f"{summary['stage']} {summary['task']}: {steps} steps on {summary['world_size']} rank(s) in "
                f"{summary['seconds'] / 60:.1f} min; {dev} -> {summary['output_dir']}")
