"""What the task stages (finetune, task-distill) share around their training phases: the common flags, the
distributed shim's lifetime, reading and checking the task's data and models before anything is written, the
output directory (config, log, `best/`, the final model at the top), and the final dev evaluation.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from corpora.glue import dev_files, get_task, task_dir, train_file
from modeling.loading import load_tokenizer
from stagekit.atomic import check_output_dir, fresh_dir, partial_dir, publish_dir, write_json
from stagekit.errors import InputError
from stagekit.options import above, at_least, between, option
from stagekit.outputs import tokenizer_files
from stagekit.training_log import TrainingLog, write_stats
from tasks.classifier import dev_evaluation, load_classifier
from tasks.features import load_features

from .checkpoint import publish_model
from .dist import Distributed
from .flags import check_training_flags
from .sparsity import SparsityMask
from .task_training import LoopSettings, Phase, run_phase


@dataclasses.dataclass(kw_only=True)
class TaskTrainingConfig:
    """The options every task stage has; a stage's config adds its own (keyword-only, so in any order)."""
    task_name: str = option(help="GLUE task: CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI")
    data_dir: str = option(help="the glue_data directory, or the task's own directory")
    output_dir: str = option()
    num_train_epochs: float = option(3.0, check=above(0))
    learning_rate: float = option(5e-5, check=above(0))
    max_seq_length: int = option(128, check=at_least(1))
    train_batch_size: int = option(32, help="global batch over all ranks", check=at_least(1))
    eval_batch_size: int = option(128, check=at_least(1))
    gradient_accumulation_steps: int = option(1, check=at_least(1))
    warmup_proportion: float = option(0.1, check=between(0, 1))
    weight_decay: float = option(0.01)
    max_grad_norm: float = option(1.0)
    max_steps: int | None = option(None, help="optimizer steps (of the prediction phase in task-distill; overrides "
                                   "the epochs)", check=at_least(1))
    max_train_examples: int | None = option(None, help="train on a seeded random subset of this many examples",
                                            check=at_least(1))
    eval_step: int = option(200, help="evaluate on dev every this many steps (and at the end)", check=at_least(1))
    log_steps: int = option(10, check=at_least(1))
    seed: int = option(42)
    overwrite_output_dir: bool = option(False)
    do_lower_case: bool = option(False, help="accepted for TinyBERT compatibility (the model's tokenizer decides)")
    keep_sparsity: bool = option(False, help="weights that are zero at the start stay zero (fine-tuning a "
                                 "magnitude-pruned model)")
    collapse_restarts: int = option(2, help="when a dev evaluation finds the predictions collapsed to a constant, "
                                    "restart from the last sound model at a lower rate, at most this many times",
                                    check=at_least(0))
    collapse_lr_factor: float = option(0.3, help="what a collapse restart multiplies the learning rate by",
                                       check=between(0, 1))
    ema_decay: float = option(0.0, help="evaluate and keep an exponential moving average of the weights with this "
                              "decay (0.99: about the last 100 steps) instead of the weights themselves; 0: off",
                              check=between(0, 1))
    quiet: bool = option(False)


# training_stats.csv of a task stage: one row per dev evaluation of every phase.
STATS_COLUMNS = ("phase", "step", "train_loss", "val_loss", "score")


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
        # Everything is written under a hidden name beside --output_dir and published whole at the end: an
        # interrupted run leaves nothing under the user's name, and the same command starts it again.
        self.work = partial_dir(self.out)
        self.log = None
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self.log is not None:
                self.log.close()
            if exc is not None and self.dist.is_main:
                shutil.rmtree(self.work, ignore_errors=True)
            if exc is not None and (failure := self.dist.peer_failure(exc)) is not None:
                raise failure from exc
        finally:
            self.dist.shutdown()
        return False

    def load_model(self, name: str, flag: str, need_task_model: bool = False):
        torch.manual_seed(self.cfg.seed)  # a new classifier head is drawn from the seed: runs repeat exactly
        model, model_dir = load_classifier(name, flag, self.task, need_task_model, need_fp32=True)
        return model.to(self.dist.device), model_dir

    def prepare(self, model_dir: Path, aug: bool) -> None:
        """Read and check the data with the model's tokenizer; only then create the output directory."""
        cfg = self.cfg
        self.tokenizer = load_tokenizer(model_dir, "--model")
        self.tokenizer_files = tokenizer_files(model_dir)
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
            fresh_dir(self.work)
            write_json(self.work / f"{self.stage.replace('-', '_')}_config.json",
                       dataclasses.asdict(cfg) | {"world_size": self.dist.world_size, "backend": self.dist.backend,
                                                  "train_file": str(path), "train_examples": len(self.train)})
            self.log = TrainingLog(self.work)
        self.dist.barrier()

    def settings(self) -> LoopSettings:
        return LoopSettings(**{f.name: getattr(self.cfg, f.name) for f in dataclasses.fields(LoopSettings)})

    def run_phase(self, phase: Phase) -> dict[str, Any]:
        if self.cfg.keep_sparsity:
            phase.after_step = SparsityMask(phase.model)
        return run_phase(phase, self.train, self.dev, self.task, self.settings(), self.dist, self.work,
                         self.tokenizer_files, self.log)

    def finish(self, phases: list[dict[str, Any]]) -> dict[str, Any]:
        """Put the final model (the best dev checkpoint, or the last phase's model when it was not evaluated) at
        the top of the output, evaluate it on every dev file, and publish the output directory."""
        evaluated = phases[-1]["best_step"] is not None
        final_dir = self.work / ("best" if evaluated else phases[-1]["phase"])
        self.dist.barrier()
        results, collapsed = {}, {}
        if evaluated:
            final, _ = load_classifier(str(final_dir), "--output_dir", self.task)
            final.to(self.dist.device)
            for name, feats in self.devs.items():
                found = dev_evaluation(final, self.task, feats, self.cfg.eval_batch_size, self.dist)
                results[name] = found.metrics
                if found.collapsed:
                    collapsed[name] = found.collapsed
        summary = {"stage": self.stage, "task": self.task.name, "world_size": self.dist.world_size,
                   "backend": self.dist.backend, "linear_products": self.dist.linear_products,
                   "train_examples": len(self.train), "phases": phases,
                   "dev": results, "collapsed": collapsed, "seconds": time.perf_counter() - self.started,
                   "output_dir": str(self.out), "config": dataclasses.asdict(self.cfg)}
        if self.dist.is_main:
            publish_model(self.work, final_dir)
            if results:
                write_json(self.work / "eval_results.json", results)
            write_stats(self.work / "training_stats.csv", STATS_COLUMNS,
                        [{"phase": p["phase"], **row} for p in phases for row in p["dev_history"]])
            write_json(self.work / f"{self.stage.replace('-', '_')}_summary.json", summary)
            self.log.close()
            self.log = None
            publish_dir(self.work, self.out)
        self.dist.barrier()
        return summary | {"is_main": self.dist.is_main}

    @staticmethod
    def report(summary: dict[str, Any]) -> str:
        dev = "; ".join(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items())
                        for name, m in summary["dev"].items()) or "dev not evaluated (intermediate layers only)"
        steps = " + ".join(f"{p['steps']} {p['phase']}" for p in summary["phases"])
        warning = "".join(f"\nwarning: {name}: {problem}" for name, problem in summary.get("collapsed", {}).items())
        return (f"{summary['stage']} {summary['task']}: {steps} steps on {summary['world_size']} rank(s) in "
                f"{summary['seconds'] / 60:.1f} min; {dev} -> {summary['output_dir']}{warning}")
