"""The training loop of the task stages (fine-tuning a teacher, both phases of task distillation), and the
per-batch objectives they plug into it.

A phase is: an objective module (what is trained, and how the loss is computed from a batch and the teacher's
outputs), an optional teacher, epochs and a learning rate. The loop shuffles per epoch from the seed, splits
the global batch over ranks and accumulation steps, evaluates on dev every `eval_step` steps and at the end
(every rank predicts a slice, all see the same score), and keeps the best model in `best/`.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from corpora.glue import GlueTask
from corpora.pregenerated import rank_permutation
from tasks.classifier import dev_evaluation
from tasks.features import TaskFeatures

from .checkpoint import save_model_dir
from .dist import Distributed
from .loop import accumulate, micro_batch_size, optimizer_for, optimizer_step, write_log
from .losses import DistillationLoss

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in _INPUTS}


class GoldLabelObjective(nn.Module):
    """Fine-tuning: the model's own task loss against the gold labels."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch, teacher_out=None) -> dict[str, torch.Tensor]:
        return {"loss": self.model(**model_inputs(batch), labels=batch["labels"]).loss}


class IntermediateObjective(nn.Module):
    """Task distillation phase 1: attention scores and hidden states, as in general distillation. A TD student
    returns its scores itself; a dense student of any family is read through `scoring` (hooks on its query and key
    maps, as the teacher is)."""

    def __init__(self, student: nn.Module, loss: DistillationLoss, scoring: nn.Module | None = None):
        super().__init__()
        self.student, self.loss, self.scoring = student, loss, scoring

    def forward(self, batch, teacher_out) -> dict[str, torch.Tensor]:
        if self.scoring is None:
            out = self.student(**model_inputs(batch), output_hidden_states=True,
                               output_attention_scores=self.loss.student_score_layers)
            hidden, scores = out.hidden_states, out.attention_scores
        else:
            hidden, scores = self.scoring(**model_inputs(batch), score_layers=self.loss.student_score_layers)
        t_hidden, t_scores = teacher_out
        return self.loss(hidden, scores, t_hidden, t_scores, batch["attention_mask"])


class PredictionObjective(nn.Module):
    """Task distillation phase 2: soft cross-entropy against the teacher's logits at temperature T (TinyBERT's form,
    without a T^2 factor), or MSE between the logits (`loss="mse"`; always for regression). With
    `hard_label_weight` w, the loss is (1 - w) x that + w x the task's own loss against the gold labels of the rows
    that have one."""

    def __init__(self, student: nn.Module, temperature: float, regression: bool, loss: str = "soft_ce",
                 hard_label_weight: float = 0.0):
        super().__init__()
        self.student, self.temperature, self.regression = student, temperature, regression
        self.mse, self.hard_label_weight = regression or loss == "mse", hard_label_weight

    def forward(self, batch, teacher_logits) -> dict[str, torch.Tensor]:
        logits = self.student(**model_inputs(batch)).logits.float()
        if self.mse:
            soft = F.mse_loss(logits.view(-1), teacher_logits.view(-1).float())
        else:
            t = self.temperature
            target = torch.softmax(teacher_logits.float() / t, dim=-1)
            soft = -(target * torch.log_softmax(logits / t, dim=-1)).sum(-1).mean()
        if not self.hard_label_weight:
            return {"loss": soft}
        labels = batch["labels"]
        if self.regression:
            known = ~torch.isnan(labels)
            hard = F.mse_loss(logits.view(-1)[known], labels[known].float()) if known.any() else soft * 0
        else:
            known = labels >= 0
            hard = F.cross_entropy(logits[known], labels[known]) if known.any() else soft * 0
        w = self.hard_label_weight
        return {"loss": (1 - w) * soft + w * hard, "distill": soft.detach(), "hard": hard.detach()}


@dataclasses.dataclass
class Phase:
    name: str
    objective: nn.Module
    model: nn.Module  # what is evaluated and saved
    teacher: Callable[[dict[str, torch.Tensor]], Any] | None
    num_train_epochs: float
    learning_rate: float
    evaluate: bool
    max_steps: int | None = None  # overrides the epochs
    # Also score the model before the first step: a model that arrives trained for the task (a task-aware TD
    # student) competes for best/ with what training makes of it.
    evaluate_start: bool = False
    after_step: Callable[[], None] | None = None  # a constraint re-applied after every optimizer step
    # The training examples the phase draws from (indices; all by default): the pool whose teacher outputs are
    # cached, when the teacher's layers come from the cache.
    examples: np.ndarray | None = None


@dataclasses.dataclass
class LoopSettings:
    train_batch_size: int
    eval_batch_size: int
    gradient_accumulation_steps: int
    warmup_proportion: float
    weight_decay: float
    max_grad_norm: float
    eval_step: int
    log_steps: int
    seed: int
    quiet: bool
    collapse_restarts: int
    collapse_lr_factor: float
    ema_decay: float


def run_phase(phase: Phase, train: TaskFeatures, dev: TaskFeatures, task: GlueTask, s: LoopSettings,
              dist: Distributed, out: Path, tokenizer_files: list[Path], log: TextIO | None) -> dict[str, Any]:
    # --- setup -------------------------------------------------------------------------------------------
    micro = micro_batch_size(s.train_batch_size, dist.world_size, s.gradient_accumulation_steps)
    examples = np.arange(len(train)) if phase.examples is None else phase.examples
    per_epoch = (len(examples) // dist.world_size) // (micro * s.gradient_accumulation_steps)
    total = phase.max_steps or max(1, int(phase.num_train_epochs * per_epoch))
    objective = phase.objective.to(dist.device)
    wrapped, optimizer, scheduler = optimizer_for(objective, phase.learning_rate, s.weight_decay, s.warmup_proportion,
                                                  total, dist, s.gradient_accumulation_steps)
    dist.broadcast_state(objective, optimizer)
    torch.manual_seed(s.seed + dist.rank)
    # What an evaluated phase scores and keeps: the weights, or their moving average (torch's, updated after every
    # step; every rank holds the same weights, so the same average). A phase that is not evaluated hands its
    # weights to the next one as they are.
    ema = (AveragedModel(phase.model, multi_avg_fn=get_ema_multi_avg_fn(s.ema_decay))
           if s.ema_decay and phase.evaluate else None)
    scored = phase.model if ema is None else ema.module
    best = {"score": float("-inf"), "step": None, "metrics": None}
    # Where a collapse restarts from: the best model that had not collapsed, else the model the phase started with
    # (unless that one was found collapsed: then there is nowhere sound to go back to).
    sound = {"step": 0, "state": _host_copy(phase.model), "average": _host_copy(scored) if ema else None}
    restarts_left, restarts = s.collapse_restarts, []
    history = []
    bar = tqdm(total=total, desc=phase.name, unit="step", disable=not dist.is_main or s.quiet)
    started, order, order_epoch = time.perf_counter(), None, -1

    def evaluate(done: int, record: dict[str, Any]) -> dict[str, Any]:
        """Score on dev, keep the model in best/ when it is the best so far; the log record, with the score."""
        nonlocal best
        metrics, collapsed, val_loss = dev_evaluation(scored, task, dev, s.eval_batch_size, dist)
        record = record | {"dev": metrics, "val_loss": val_loss}
        history.append({"step": done, **metrics, "train_loss": record.get("loss"), "val_loss": val_loss})
        if collapsed:
            record["collapsed"] = history[-1]["collapsed"] = collapsed
            if dist.is_main:
                tqdm.write(f"warning: {phase.name} step {done}: {collapsed}")
            if done == 0:
                # The phase starts from a constant predictor (a dense student's head after its layer-wise phase):
                # restarting there at a lower rate would only hold it there (SST-2's one-layer student stayed at
                # 0.5092 through two restarts, and reached 0.7752 without them). Until a sound model is seen, go on.
                sound.update(step=None, state=None, average=None)
        if best["step"] is None or metrics["score"] > best["score"]:  # a NaN score still leaves a model
            best = {"score": metrics["score"], "step": done, "metrics": metrics}
            if dist.is_main:
                save_model_dir(scored, out / "best", tokenizer_files)
            if not collapsed:
                sound.update(step=done, state=_host_copy(phase.model), average=_host_copy(scored) if ema else None)
        bar.set_postfix(dev=f"{metrics['score']:.4f}", best=f"{best['score']:.4f}")
        return record

    if phase.evaluate and phase.evaluate_start:
        write_log(log, evaluate(0, {"phase": phase.name, "step": 0}))

    # --- loop ---------------------------------------------------------------------------------------------
    wrapped.train()
    for step in range(total):
        epoch, in_epoch = divmod(step, per_epoch)
        if epoch != order_epoch:
            order = examples[rank_permutation(len(examples), s.seed, epoch, dist.rank, dist.world_size)]
            order_epoch = epoch

        def micro_batch(m: int) -> dict[str, torch.Tensor]:
            first = (in_epoch * s.gradient_accumulation_steps + m) * micro
            ids = order[first:first + micro]
            # the example indices stay on the host: a cached teacher looks its outputs up by them
            return {k: v.to(dist.device) for k, v in train.batch(ids).items()} | {"index": torch.as_tensor(ids)}

        losses = accumulate(wrapped, dist, s.gradient_accumulation_steps, micro_batch, phase.teacher)
        optimizer_step(optimizer, scheduler, objective.parameters(), s.max_grad_norm, dist, phase.after_step)
        if ema is not None:
            ema.update_parameters(phase.model)
        done = step + 1
        record = None
        if done % s.log_steps == 0 or done == total:
            record = {"phase": phase.name, "step": done, "loss": dist.all_reduce_mean({"loss": losses["loss"]})["loss"],
                      "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - started}
        if phase.evaluate and (done % s.eval_step == 0 or done == total):
            record = evaluate(done, record or {"phase": phase.name, "step": done})
            if "collapsed" in record and restarts_left and done < total and sound["state"] is not None:
                # Collapsed: go on from the last sound model at a lower rate, with fresh Adam moments, rather
                # than spend the rest of the budget on a constant predictor. Every rank sees the same score.
                restarts_left -= 1
                lr = _restart(phase.model, sound["state"], optimizer, scheduler, s.collapse_lr_factor)
                if ema is not None:
                    scored.load_state_dict(sound["average"])
                restarts.append({"step": done, "from_step": sound["step"], "learning_rate": lr})
                record["restart"] = restarts[-1]
                if dist.is_main:
                    tqdm.write(f"{phase.name} step {done}: restarting from step {sound['step']} at lr {lr:.2e}")
        if record is not None:
            write_log(log, record)
        bar.update(1)

    # --- cleanup ------------------------------------------------------------------------------------------
    bar.close()
    if not phase.evaluate and dist.is_main:
        save_model_dir(phase.model, out / phase.name, tokenizer_files)
    dist.barrier()
    return {"phase": phase.name, "steps": total, "seconds": time.perf_counter() - started,
            "best_step": best["step"], "best_dev": best["metrics"], "dev_history": history, "restarts": restarts}


def _host_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _restart(model: nn.Module, state: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LambdaLR, lr_factor: float) -> float:
    """Put `state` back into the model, scale the schedule's peak rate, drop Adam's moments; the new peak rate."""
    model.load_state_dict(state)
    scheduler.base_lrs = [lr * lr_factor for lr in scheduler.base_lrs]
    for group in optimizer.param_groups:  # the next step's rate too, not only the schedule's later ones
        group["lr"] *= lr_factor
    optimizer.state.clear()
    return scheduler.base_lrs[0]
