"""Task distillation (TinyBERT's second stage): a general TD student learns a fine-tuned teacher's task.

Phase `intermediate` distils attention scores and hidden states as general distillation does; phase
`prediction` distils the teacher's logits (soft cross-entropy at `--temperature`; MSE for regression), evaluates
on dev every `--eval_step` steps and keeps the best. TinyBERT's two runs, and one run doing both:

    xcompress task-distill --teacher_model runs/teacher-sst2 --student_model runs/gd-36-192 --task_name SST-2 \
        --data_dir data/glue_data --output_dir runs/td-sst2-1 --aug_train                     (intermediate)
    xcompress task-distill --teacher_model runs/teacher-sst2 --student_model runs/td-sst2-1 --task_name SST-2 \
        --data_dir data/glue_data --output_dir runs/td-sst2 --aug_train --pred_distill        (prediction)
    xcompress task-distill ... --stage both                                                   (one run)
    torchrun --nproc_per_node 2 -m distill.task ...                     (also python -m torch.distributed.launch)
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from modeling.formats import DENSE, TUCKER, is_task_model, kind_of
from stagekit.errors import InputError
from stagekit.model_paths import read_config_dict, shared_vocab
from stagekit.options import above, at_least, option

from .losses import DistillationLoss
from .task_run import TaskRun, TaskTrainingConfig
from .task_training import IntermediateObjective, Phase, PredictionObjective, model_inputs
from .teacher import ScoringTeacher


@dataclasses.dataclass(kw_only=True)
class TaskDistillConfig(TaskTrainingConfig):
    teacher_model: str = option(help="dense BERT fine-tuned on the task (xcompress finetune)")
    student_model: str = option(help="TD directory (general distillation, or a phase-1 output)")
    aug_train: bool = option(False, help="train on train_aug.tsv (xcompress augment)")
    pred_distill: bool = option(False, help="phase 2 only: distil predictions")
    stage: str | None = option(None, choices=["intermediate", "prediction", "both"],
                               help="which phases to run (default: intermediate, or prediction with --pred_distill)")
    temperature: float = option(1.0, check=above(0))
    loss_layers: str = option("all", choices=["all", "last"])
    # TinyBERT's defaults: the prediction phase's epochs and learning rate, then the intermediate phase's.
    num_train_epochs: float = option(3.0, help="epochs of the prediction phase", check=above(0))
    learning_rate: float = option(3e-5, help="learning rate of the prediction phase", check=above(0))
    intermediate_epochs: float = option(10.0, help="epochs of the intermediate phase", check=above(0))
    intermediate_learning_rate: float = option(5e-5, check=above(0))
    intermediate_max_steps: int | None = option(None, help="steps of the intermediate phase (overrides its epochs)",
                                                check=at_least(1))
    eval_step: int = option(50, help="evaluate on dev every this many steps (and at the end)", check=at_least(1))

    def __post_init__(self):
        if self.pred_distill and self.stage is not None:
            raise InputError(f"--pred_distill and --stage {self.stage} exclude each other (--stage prediction is "
                             "--pred_distill)")

    @property
    def phases(self) -> list[str]:
        stage = self.stage or ("prediction" if self.pred_distill else "intermediate")
        return ["intermediate", "prediction"] if stage == "both" else [stage]


CONFIG = TaskDistillConfig


def run(cfg: TaskDistillConfig) -> dict[str, Any]:
    with TaskRun(cfg, "task-distill") as job:
        teacher, teacher_dir = job.load_model(cfg.teacher_model, "--teacher_model", need_task_model=True)
        if kind_of(teacher) != DENSE:
            raise InputError(f"--teacher_model {cfg.teacher_model}: the teacher must be a dense BERT model")
        student, student_dir = job.load_model(cfg.student_model, "--student_model")
        if "intermediate" in cfg.phases and kind_of(student) != TUCKER:
            raise InputError(f"--student_model {cfg.student_model}: not a TD model, which the intermediate phase needs "
                             "(make one with `xcompress decompose` and `xcompress general-distill`)")
        shared_vocab(teacher_dir, student_dir)
        trained = is_task_model(read_config_dict(student_dir, "--student_model"))
        job.prepare(student_dir, cfg.aug_train)
        phases = []
        for name in cfg.phases:
            phase = (_intermediate(cfg, teacher, student) if name == "intermediate"
                     else _prediction(cfg, teacher, student, job, trained))
            phases.append(job.run_phase(phase))
        return job.finish(phases)


def _intermediate(cfg: TaskDistillConfig, teacher, student) -> Phase:
    # The classifier and pooler take no part in the layer-wise losses; frozen, they are not left unused.
    student.requires_grad_(True)
    student.classifier.requires_grad_(False)
    if student.bert.pooler is not None:
        student.bert.pooler.requires_grad_(False)
    loss = DistillationLoss(student.config.num_hidden_layers, teacher.config.num_hidden_layers,
                            student.config.hidden_size, teacher.config.hidden_size, cfg.loss_layers)
    scorer = ScoringTeacher(teacher.bert)
    layers = loss.teacher_score_layers
    return Phase("intermediate", IntermediateObjective(student, loss), student,
                 lambda batch: scorer(**model_inputs(batch), score_layers=layers),
                 cfg.intermediate_epochs, cfg.intermediate_learning_rate, evaluate=False,
                 max_steps=cfg.intermediate_max_steps)


def _prediction(cfg: TaskDistillConfig, teacher, student, job: TaskRun, trained: bool) -> Phase:
    student.requires_grad_(True)

    @torch.no_grad()
    def teacher_logits(batch):
        return teacher(**model_inputs(batch)).logits

    return Phase("prediction", PredictionObjective(student, cfg.temperature, job.task.is_regression), student,
                 teacher_logits, cfg.num_train_epochs, cfg.learning_rate, evaluate=True, max_steps=cfg.max_steps,
                 evaluate_start=trained)


def report(summary: dict[str, Any]) -> str:
    return TaskRun.report(summary)


if __name__ == "__main__":
    import sys

    from stagekit.cli import run_as_program

    run_as_program(["task-distill", *sys.argv[1:]])
