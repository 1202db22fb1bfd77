"""Fine-tune a text-to-text model (T5) on a TSV of source and target texts or a GLUE task in T5's text form, with
Hugging Face's run_translation habits: teacher-forced cross-entropy, AdamW with linear warmup and decay, and every
`--eval_steps` the validation loss and the task's metric on dev texts generated with `--generation_max_length` and
`--generation_num_beams`; the model of the best dev score is the one kept.

    xcompress seq2seq-finetune --model runs/t5-small --task_name text --data_dir data/parallel/gettext-en-de \
        --output_dir runs/t5-de --num_train_epochs 3 --learning_rate 5e-4 --generation_max_length 64

Beside the model: `training_stats.csv` (step, epoch, training loss, validation loss, dev score, CPU seconds), the
same history in `log.jsonl` (and as TensorBoard events in `tensorboard/` when TensorBoard is installed), written as
each validation ends (in the hidden `.<output_dir>.partial` beside the output until the run publishes it), and in
the summary.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from typing import Any

import torch
from tqdm import tqdm

from corpora.glue import subset
from distill.loop import optimizer_for, optimizer_step
from distill.sparsity import SparsityMask
from modeling.formats import GENERATOR, SEQ2SEQ
from modeling.loading import load_model, load_tokenizer
from stagekit.atomic import check_output_dir, fresh_dir, partial_dir, publish_dir
from stagekit.options import above, at_least, between, check_values, option
from stagekit.outputs import finish_stage
from stagekit.training_log import TrainingLog, write_stats

from .data import text_task
from .generation import PairBatches, generate, mean_loss, on_device


@dataclasses.dataclass
class Seq2SeqFinetuneConfig:
    model: str = option(help="a text-to-text model directory (T5)")
    task_name: str = option(help="'text' (a TSV of source and target texts in --data_dir) or a GLUE task name")
    data_dir: str = option(help="train.tsv and dev.tsv (text), or the GLUE task's directory or glue_data above it")
    output_dir: str = option()
    max_source_length: int = option(128, help="source pieces kept (longer ones truncated)", check=at_least(2))
    max_target_length: int = option(128, help="target pieces trained on", check=at_least(2))
    generation_max_length: int = option(64, help="new pieces generated at most per text", check=at_least(1))
    generation_num_beams: int = option(1, help="1: greedy search; more: beam search", check=at_least(1))
    train_batch_size: int = option(32, check=at_least(1))
    eval_batch_size: int = option(64, check=at_least(1))
    learning_rate: float = option(5e-4, check=above(0))
    weight_decay: float = option(0.0)
    warmup_proportion: float = option(0.05, check=between(0, 1))
    max_grad_norm: float = option(1.0)
    num_train_epochs: float = option(3.0, check=above(0))
    max_steps: int | None = option(None, help="optimizer steps; overrides --num_train_epochs", check=at_least(1))
    eval_steps: int = option(500, help="validate every this many steps (and at the end)", check=at_least(1))
    max_train_examples: int | None = option(None, help="a seeded subset of the training pairs", check=at_least(1))
    max_eval_examples: int | None = option(500, help="dev pairs generated at each validation (seeded subset)",
                                           check=at_least(1))
    keep_sparsity: bool = option(False, help="weights that are zero at the start stay zero (fine-tuning a pruned model)")
    seed: int = option(42)
    overwrite_output_dir: bool = option(False)
    quiet: bool = option(False)


CONFIG = Seq2SeqFinetuneConfig


def run(cfg: Seq2SeqFinetuneConfig) -> dict[str, Any]:
    # --- setup -------------------------------------------------------------------------------------------
    check_values(cfg)
    task = text_task(cfg.task_name)
    model, model_dir = load_model(cfg.model, "--model", GENERATOR, kinds=(SEQ2SEQ,), need_fp32=True,
                                  stage="seq2seq-finetune")
    tokenizer = load_tokenizer(model_dir, "--model")
    train = subset(task.pairs(cfg.data_dir, "train"), cfg.max_train_examples, cfg.seed)
    dev = subset(task.pairs(cfg.data_dir, "dev"), cfg.max_eval_examples, cfg.seed)
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    keep_zeros = SparsityMask(model) if cfg.keep_sparsity else None
    train_data = PairBatches(train, tokenizer, cfg.max_source_length, cfg.max_target_length)
    dev_data = PairBatches(dev, tokenizer, cfg.max_source_length, cfg.max_target_length)
    steps_per_epoch = math.ceil(len(train) / cfg.train_batch_size)
    total = cfg.max_steps or math.ceil(cfg.num_train_epochs * steps_per_epoch)
    _, optimizer, scheduler = optimizer_for(model, cfg.learning_rate, cfg.weight_decay, cfg.warmup_proportion, total)
    order = random.Random(cfg.seed)
    work = fresh_dir(partial_dir(out))
    log = TrainingLog(work)

    def validate(step: int, train_loss: float | None) -> dict[str, Any]:
        generated = generate(model, tokenizer, [p.source for p in dev], cfg.max_source_length,
                             cfg.generation_max_length, cfg.generation_num_beams, cfg.eval_batch_size)
        metrics = task.score(generated, dev)
        row = {"step": step, "epoch": step / steps_per_epoch, "train_loss": train_loss,
               "val_loss": mean_loss(model, dev_data, cfg.eval_batch_size), "score": metrics["score"],
               "cpu_seconds": time.process_time() - cpu_start, "metrics": metrics}
        log.write(row)
        return row

    cpu_start, wall_start = time.process_time(), time.perf_counter()
    history = [validate(0, None)]
    best, best_state = history[0], copy.deepcopy(model.state_dict())
    bar = tqdm(total=total, desc="seq2seq fine-tuning", unit="step", disable=cfg.quiet)
    pool: list[int] = []
    losses: list[float] = []

    # --- loop ---------------------------------------------------------------------------------------------
    for step in range(1, total + 1):
        model.train()
        if not pool:
            pool = list(range(len(train)))
            order.shuffle(pool)
        rows, pool = pool[:cfg.train_batch_size], pool[cfg.train_batch_size:]
        loss = model(**on_device(train_data.batch(rows), device)).loss
        loss.backward()
        optimizer_step(optimizer, scheduler, model.parameters(), cfg.max_grad_norm)
        if keep_zeros:
            keep_zeros()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        bar.update(1)
        if step % cfg.eval_steps == 0 or step == total:
            history.append(validate(step, sum(losses) / len(losses)))
            losses = []
            if history[-1]["score"] > best["score"]:
                best, best_state = history[-1], copy.deepcopy(model.state_dict())

    # --- cleanup ------------------------------------------------------------------------------------------
    bar.close()
    model.load_state_dict(best_state)
    model.to("cpu")
    model.config.finetuning_task = task.name
    summary = {"model": str(model_dir), "task": task.name, "train_pairs": len(train), "dev_pairs": len(dev),
               "steps": total, "best_step": best["step"], "dev": best["metrics"], "history": history,
               "cpu_seconds": time.process_time() - cpu_start, "seconds": time.perf_counter() - wall_start,
               "output_dir": str(out), "config": dataclasses.asdict(cfg)}
    log.close()
    model.save_pretrained(work)
    tokenizer.save_pretrained(work)
    write_stats(work / "training_stats.csv", STATS_COLUMNS, history)
    finish_stage(work, "seq2seq-finetune", cfg, summary)
    publish_dir(work, out)
    return summary


# training_stats.csv: one row per validation.
STATS_COLUMNS = ("step", "epoch", "train_loss", "val_loss", "score", "cpu_seconds")


def report(summary: dict[str, Any]) -> str:
    first, best = summary["history"][0], summary["dev"]
    return (f"seq2seq-finetune {summary['task']}: dev score {first['score']:.4f} -> {best['score']:.4f} "
            f"(best at step {summary['best_step']} of {summary['steps']}, {summary['cpu_seconds'] / 60:.1f} CPU min) "
            f"-> {summary['output_dir']}")
