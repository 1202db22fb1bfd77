"""Fine-tune a model on a GLUE task: the teacher that task distillation needs (a plain pre-trained teacher
gives poor students). Dense BERT and TD models alike; the best dev checkpoint is kept.

    xcompress finetune --model all-MiniLM-L6-v2 --task_name SST-2 --data_dir data/glue_data \
        --output_dir runs/teacher-sst2 --num_train_epochs 3 --learning_rate 5e-5
    torchrun --nproc_per_node 2 -m distill.finetune ...               (same flags)
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from .task_run import TaskRun, add_loop_arguments
from .task_training import GoldLabelObjective, Phase


@dataclasses.dataclass
class FinetuneConfig:
    model: str
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
    quiet: bool = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="dense BERT or TD directory (or all-MiniLM-L6-v2)")
    add_loop_arguments(p, FinetuneConfig)


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    return FinetuneConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig)})


def run(cfg: FinetuneConfig) -> dict[str, Any]:
    with TaskRun(cfg, "finetune") as job:
        model, model_dir = job.load_model(cfg.model, "--model")
        job.prepare(model_dir, aug=False)
        phase = Phase("finetune", GoldLabelObjective(model), model, None, cfg.num_train_epochs,
                      cfg.learning_rate, evaluate=True)
        return job.finish([job.run_phase(phase)])


def report(summary: dict[str, Any]) -> str:
    return TaskRun.report(summary)


if __name__ == "__main__":
    import sys

    from compress.cli import main

    sys.exit(main(["finetune", *sys.argv[1:]]))
