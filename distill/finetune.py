"""Fine-tune a model on a GLUE task: the teacher that task distillation needs (a plain pre-trained teacher
gives poor students). Dense BERT and TD models alike; the best dev checkpoint is kept.

    xcompress finetune --model all-MiniLM-L6-v2 --task_name SST-2 --data_dir data/glue_data \
        --output_dir runs/teacher-sst2 --num_train_epochs 3 --learning_rate 5e-5
    torchrun --nproc_per_node 2 -m distill.finetune ...               (same flags)
"""
from __future__ import annotations

import dataclasses
from typing import Any

from stagekit.options import option

from .task_run import TaskRun, TaskTrainingConfig
from .task_training import GoldLabelObjective, Phase


@dataclasses.dataclass(kw_only=True)
class FinetuneConfig(TaskTrainingConfig):
    model: str = option(help="dense BERT or TD directory (or all-MiniLM-L6-v2)")


CONFIG = FinetuneConfig


def run(cfg: FinetuneConfig) -> dict[str, Any]:
    with TaskRun(cfg, "finetune") as job:
        model, model_dir = job.load_model(cfg.model, "--model")
        job.prepare(model_dir, aug=False)
        phase = Phase("finetune", GoldLabelObjective(model), model, None, cfg.num_train_epochs,
                      cfg.learning_rate, evaluate=True, max_steps=cfg.max_steps)
        return job.finish([job.run_phase(phase)])


def report(summary: dict[str, Any]) -> str:
    return TaskRun.report(summary)


if __name__ == "__main__":
    import sys

    from stagekit.cli import run_as_program

    run_as_program(["finetune", *sys.argv[1:]])
