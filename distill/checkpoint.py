"""Training checkpoints: a Hugging Face TD directory plus `training_state.pt` (optimizer, scheduler, RNG,
step, the loss module's projection), published atomically as `checkpoints/step_{N}`; the last K are kept.

Only tensors, numbers, strings, lists and dicts are saved, so loading uses `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch

from compress.atomic import atomic_output_dir

STATE_FILE = "training_state.pt"
_STEP = re.compile(r"^step_(\d+)$")


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def save_checkpoint(output_dir: Path, step: int, model, state: dict[str, Any], tokenizer_files: list[Path],
                    keep: int) -> Path:
    target = output_dir / "checkpoints" / f"step_{step}"
    with atomic_output_dir(target) as tmp:
        model.save_pretrained(tmp)
        for f in tokenizer_files:
            shutil.copy2(f, tmp / f.name)
        torch.save(state, tmp / STATE_FILE)
    for old in checkpoint_dirs(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_training_state(checkpoint: Path) -> dict[str, Any]:
    return torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
