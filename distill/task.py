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
from pathlib import Path
from typing import Any

import torch

from modeling.families import family_of
from modeling.formats import DENSE, PRUNED, TEACHER_LAYERS_KEY, TUCKER, encoder_of, is_task_model, kind_of
from modeling.params import weights_fingerprint
from stagekit.errors import InputError
from stagekit.model_paths import read_config_dict, shared_vocab
from stagekit.options import above, at_least, between, option

from .losses import DistillationLoss
from .task_run import TaskRun, TaskTrainingConfig
from .task_training import IntermediateObjective, Phase, PredictionObjective, model_inputs
from .teacher import ScoringEncoder, ScoringTeacher
from .teacher_cache import CacheEntry, TeacherLayers, TeacherLogits, writable_cache


@dataclasses.dataclass(kw_only=True)
class TaskDistillConfig(TaskTrainingConfig):
    teacher_model: str = option(help="dense model of any family fine-tuned on the task (xcompress finetune)")
    student_model: str = option(help="TD directory (general distillation, or a phase-1 output), or a dense student "
                                "of the teacher's family (xcompress dense-student)")
    aug_train: bool = option(False, help="train on train_aug.tsv (xcompress augment)")
    pred_distill: bool = option(False, help="phase 2 only: distil predictions")
    stage: str | None = option(None, choices=["intermediate", "prediction", "both"],
                               help="which phases to run (default: intermediate, or prediction with --pred_distill)")
    temperature: float = option(1.0, check=above(0))
    pred_loss: str = option("soft_ce", choices=["soft_ce", "mse"], help="prediction phase: soft cross-entropy against "
                            "the teacher's probabilities (TinyBERT), or MSE between the logits (regression: always MSE)")
    hard_label_weight: float = option(0.0, help="prediction phase: weight of the loss against the gold labels, mixed "
                                      "with the distillation loss's 1 - weight (rows without a label add none)",
                                      check=between(0, 1))
    loss_layers: str = option("all", choices=["all", "last"])
    layer_map: str | None = option(None, help="teacher layer (1-based) each student layer learns from, e.g. 2,4,6 "
                                   "(default: the teacher layers a dense student was copied from, else uniform)")
    # TinyBERT's defaults: the prediction phase's epochs and learning rate, then the intermediate phase's.
    num_train_epochs: float = option(3.0, help="epochs of the prediction phase", check=above(0))
    learning_rate: float = option(3e-5, help="learning rate of the prediction phase", check=above(0))
    intermediate_epochs: float = option(10.0, help="epochs of the intermediate phase", check=above(0))
    intermediate_learning_rate: float = option(5e-5, check=above(0))
    intermediate_max_steps: int | None = option(None, help="steps of the intermediate phase (overrides its epochs)",
                                                check=at_least(1))
    eval_step: int = option(50, help="evaluate on dev every this many steps (and at the end)", check=at_least(1))
    teacher_cache: str | None = option(None, help="directory where the teacher's outputs are computed once and "
                                       "reused while the teacher and the data are the same: logits of every training "
                                       "example, hidden states and attention scores of a bounded pool (the "
                                       "intermediate phase then trains on the pool)")
    teacher_cache_pool_mb: float = option(2048.0, help="bound of the cached pool's hidden states and attention "
                                          "scores (float16), in MiB", check=above(0))

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
        cache = writable_cache(cfg.teacher_cache) if cfg.teacher_cache is not None else None
        teacher, teacher_dir = job.load_model(cfg.teacher_model, "--teacher_model", need_task_model=True)
        if kind_of(teacher) != DENSE:
            raise InputError(f"--teacher_model {cfg.teacher_model}: the teacher must be a dense model")
        student, student_dir = job.load_model(cfg.student_model, "--student_model")
        if kind_of(student) != TUCKER and family_of(student) is not family_of(teacher):
            raise InputError(f"--student_model {cfg.student_model}: a {family_of(student).name} student of a "
                             f"{family_of(teacher).name} teacher; a dense student is of its teacher's family")
        shared_vocab(teacher_dir, student_dir)
        mapping = _layer_map(cfg, student, teacher) if "intermediate" in cfg.phases else None
        trained = is_task_model(read_config_dict(student_dir, "--student_model"))
        job.prepare(student_dir, cfg.aug_train)
        teacher_key = weights_fingerprint(teacher) if cache is not None else None
        phases = []
        for name in cfg.phases:
            if name == "intermediate":
                phase, cached = _intermediate(cfg, teacher, student, mapping, job, cache, teacher_key)
            else:
                phase, cached = _prediction(cfg, teacher, student, job, trained, cache, teacher_key)
            result = job.run_phase(phase)
            if cached is not None:
                result["teacher_cache"] = dataclasses.asdict(cached)
            phases.append(result)
        return job.finish(phases)


def _layer_map(cfg: TaskDistillConfig, student, teacher) -> list[int] | None:
    """1-based teacher layer per student layer: --layer_map, else a dense student's own, else None (uniform)."""
    depth, teacher_depth = (family_of(m).size(m.config, "num_layers") for m in (student, teacher))
    if cfg.layer_map is not None:
        try:
            mapping = [int(v) for v in cfg.layer_map.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"--layer_map {cfg.layer_map}: expected teacher layer numbers separated by commas") from None
        if len(mapping) != depth or any(not 1 <= t <= teacher_depth for t in mapping):
            raise InputError(f"--layer_map {cfg.layer_map}: needs {depth} teacher layers (one per student layer), "
                             f"each from 1 to {teacher_depth}")
        return mapping
    own = getattr(student.config, TEACHER_LAYERS_KEY, None)
    if own is not None:
        return [t + 1 for t in own]
    if teacher_depth % depth:
        raise InputError(f"--student_model {cfg.student_model}: {depth} layers against the teacher's {teacher_depth}; "
                         "the uniform layer map needs a divisor, give --layer_map")
    return None


def _intermediate(cfg: TaskDistillConfig, teacher, student, mapping: list[int] | None, job: TaskRun,
                  cache: Path | None, teacher_key: str | None) -> tuple[Phase, CacheEntry | None]:
    # Only the encoder takes part in the layer-wise losses: the head and pooler are frozen, not left unused.
    student.requires_grad_(False)
    encoder = encoder_of(student)
    encoder.requires_grad_(True)
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler.requires_grad_(False)
    scoring = None
    if kind_of(student) in (DENSE, PRUNED):
        heads = family_of(student).layer_sizes(student)[0]
        teacher_heads = family_of(teacher).size(teacher.config, "num_heads")
        if any(h != teacher_heads for h in heads):
            raise InputError(f"--student_model {cfg.student_model}: {heads} heads per layer against the teacher's "
                             f"{teacher_heads}; attention scores are compared head by head (distil predictions only: "
                             "--pred_distill)")
        scoring = ScoringEncoder(encoder)
    t_family, s_family = family_of(teacher), family_of(student)
    loss = DistillationLoss(s_family.size(student.config, "num_layers"), t_family.size(teacher.config, "num_layers"),
                            s_family.size(student.config, "hidden_size"), t_family.size(teacher.config, "hidden_size"),
                            cfg.loss_layers, mapping)
    phase = Phase("intermediate", IntermediateObjective(student, loss, scoring), student, None,
                  cfg.intermediate_epochs, cfg.intermediate_learning_rate, evaluate=False,
                  max_steps=cfg.intermediate_max_steps)
    if cache is None:
        scorer = ScoringTeacher(encoder_of(teacher))
        layers = loss.teacher_score_layers
        phase.teacher = lambda batch: scorer(**model_inputs(batch), score_layers=layers)
        return phase, None
    cached = TeacherLayers(cache, teacher, teacher_key, job.train, job.dist, loss.teacher_hidden_layers,
                           loss.teacher_score_layers, cfg.teacher_cache_pool_mb, cfg.seed)
    if len(cached.pool) < cfg.train_batch_size:
        raise InputError(f"--teacher_cache_pool_mb {cfg.teacher_cache_pool_mb}: holds {len(cached.pool)} examples, "
                         f"fewer than one batch (--train_batch_size {cfg.train_batch_size})")
    phase.teacher, phase.examples = cached, cached.pool
    return phase, cached.entry


def _prediction(cfg: TaskDistillConfig, teacher, student, job: TaskRun, trained: bool, cache: Path | None,
                teacher_key: str | None) -> tuple[Phase, CacheEntry | None]:
    student.requires_grad_(True)
    phase = Phase("prediction", PredictionObjective(student, cfg.temperature, job.task.is_regression, cfg.pred_loss,
                                                      cfg.hard_label_weight), student,
                  None, cfg.num_train_epochs, cfg.learning_rate, evaluate=True, max_steps=cfg.max_steps,
                  evaluate_start=trained)
    if cache is None:
        @torch.no_grad()
        def teacher_logits(batch):
            return teacher(**model_inputs(batch)).logits

        phase.teacher = teacher_logits
        return phase, None
    phase.teacher = TeacherLogits(cache, teacher, teacher_key, job.train, job.dist)
    return phase, phase.teacher.entry


def report(summary: dict[str, Any]) -> str:
    return TaskRun.report(summary)


if __name__ == "__main__":
    import sys

    from stagekit.cli import run_as_program

    run_as_program(["task-distill", *sys.argv[1:]])
