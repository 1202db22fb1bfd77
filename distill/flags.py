"""Checks of the training flags the training stages share, made before anything is loaded or written."""
from __future__ import annotations

from typing import Any

from compress.errors import InputError

# flag -> (test, what a valid value is); a flag is checked when the stage's config has it.
_RULES = {
    "train_batch_size": (lambda v: v >= 1, "must be >= 1"),
    "eval_batch_size": (lambda v: v >= 1, "must be >= 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, "must be >= 1"),
    "learning_rate": (lambda v: v > 0, "must be > 0"),
    "intermediate_learning_rate": (lambda v: v > 0, "must be > 0"),
    "num_train_epochs": (lambda v: v > 0, "must be > 0"),
    "intermediate_epochs": (lambda v: v > 0, "must be > 0"),
    "max_steps": (lambda v: v is None or v >= 1, "must be >= 1"),
    "intermediate_max_steps": (lambda v: v is None or v >= 1, "must be >= 1"),
    "max_train_examples": (lambda v: v is None or v >= 1, "must be >= 1"),
    "save_steps": (lambda v: v >= 1, "must be >= 1"),
    "save_total_limit": (lambda v: v >= 1, "must be >= 1"),
    "eval_step": (lambda v: v >= 1, "must be >= 1"),
    "log_steps": (lambda v: v >= 1, "must be >= 1"),
    "warmup_proportion": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "temperature": (lambda v: v > 0, "must be > 0"),
}


def check_training_flags(cfg: Any, world_size: int) -> None:
    for name, (ok, what) in _RULES.items():
        if hasattr(cfg, name) and not ok(getattr(cfg, name)):
            raise InputError(f"--{name} {getattr(cfg, name)}: {what}")
    accumulation = getattr(cfg, "gradient_accumulation_steps", 1)
    if cfg.train_batch_size % (world_size * accumulation):
        raise InputError(f"--train_batch_size {cfg.train_batch_size}: not divisible by {world_size} ranks x "
                         f"{accumulation} accumulation steps")
