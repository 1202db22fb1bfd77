"""Checks of the training options the training stages share, made before anything is loaded or written."""
from __future__ import annotations

from typing import Any

from stagekit.errors import InputError
from stagekit.options import check_values


def check_training_flags(cfg: Any, world_size: int) -> None:
    """Each option's own check (its config declares it), then the batch split over ranks and accumulation."""
    check_values(cfg)
    accumulation = getattr(cfg, "gradient_accumulation_steps", 1)
    if cfg.train_batch_size % (world_size * accumulation):
        raise InputError(f"--train_batch_size {cfg.train_batch_size}: not divisible by {world_size} ranks x "
                         f"{accumulation} accumulation steps")
