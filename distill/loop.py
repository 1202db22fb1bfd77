"""The pieces every training loop of xcompress repeats, as plain functions the loops call in their own order:
the optimizer and its schedule, one optimizer step over accumulated micro-batches, one log line. Each loop
(general distillation, the task phases, the masked-LM head) stays visible in its own function.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from stagekit.training_log import TrainingLog

from .dist import Distributed
from .optim import linear_schedule, param_groups


def micro_batch_size(train_batch_size: int, world_size: int, accumulation_steps: int) -> int:
    """Examples one rank reads per micro-batch: the global batch split over ranks and accumulation steps."""
    return train_batch_size // (world_size * accumulation_steps)


def optimizer_for(module: nn.Module, learning_rate: float, weight_decay: float, warmup_proportion: float,
                  total_steps: int, dist: Distributed | None = None, accumulation_steps: int = 1
                  ) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no decay on biases and LayerNorm) with BERT's linear warmup and decay, and the module to train.

    Under a distributed shim the module and optimizer are wrapped first (Horovod builds a new optimizer), so the
    schedule, and any state a resume restores, attach to what the wrapping returns."""
    optimizer = torch.optim.AdamW(param_groups(module, weight_decay), lr=learning_rate)
    model = module
    if dist is not None:
        model, optimizer = dist.wrap(module, optimizer, accumulation_steps)
    return model, optimizer, linear_schedule(optimizer, int(warmup_proportion * total_steps), total_steps)


def accumulate(model: nn.Module, dist: Distributed, accumulation_steps: int,
               batch: Callable[[int], dict[str, torch.Tensor]], teacher: Callable[[dict[str, torch.Tensor]], Any] | None,
               timing: dict[str, float] | None = None) -> dict[str, float]:
    """Forward and backward over the micro-batches of one optimizer step; returns the mean of each loss.

    `batch(m)` reads micro-batch m onto the device, `teacher(batch)` gives what the model's loss compares with
    (None: nothing). Gradients are exchanged between ranks on the last micro-batch only. `timing`, when given,
    accumulates the seconds spent reading data, in the teacher and in the trained model's forward and backward."""
    sums: dict[str, float] = {}
    for m in range(accumulation_steps):
        t0 = time.perf_counter()
        inputs = batch(m)
        t1 = time.perf_counter()
        with dist.compute():
            targets = teacher(inputs) if teacher is not None else None
        t2 = time.perf_counter()
        with dist.accumulating(model, last=m == accumulation_steps - 1):
            with dist.compute():
                losses = model(inputs, targets)
            (losses["loss"] / accumulation_steps).backward()
        t3 = time.perf_counter()
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach()) / accumulation_steps
        if timing is not None:
            timing["data"] += t1 - t0
            timing["teacher_forward"] += t2 - t1
            timing["student_forward_backward"] += t3 - t2
    return sums


def optimizer_step(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                   parameters, max_grad_norm: float, dist: Distributed | None = None,
                   after_step: Callable[[], None] | None = None) -> None:
    """Clip, update (through the shim, which averages over ranks), re-apply a constraint, advance the schedule."""
    if dist is not None:
        dist.step(optimizer, parameters, max_grad_norm)
    else:
        nn.utils.clip_grad_norm_(list(parameters), max_grad_norm)
        optimizer.step()
    if after_step is not None:
        after_step()
    scheduler.step()
    optimizer.zero_grad()


def write_log(log: TrainingLog | None, record: dict[str, Any]) -> None:
    """One record of the training log (None: not rank 0, which writes nothing)."""
    if log is not None:
        log.write(record)
