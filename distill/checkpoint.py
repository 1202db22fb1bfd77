"""Training checkpoints: a Hugging Face TD directory plus `training_state.pt` (optimizer, scheduler, RNG,
step, the loss module's projection), published atomically as `checkpoints/step_{N}`; the last K are kept.

Only tensors, numbers, strings, lists and dicts are saved, so loading uses `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stagekit.atomic import atomic_output_dir

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
    save_model_dir(model, target, tokenizer_files, {STATE_FILE: state})
    for old in checkpoint_dirs(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def save_model_dir(model, target: Path, tokenizer_files: list[Path], extra: dict[str, Any] | None = None) -> Path:
    """A Hugging Face directory (weights, config, tokenizer files, and `extra` name -> torch-saved object),
    published in one rename: a reader never sees half of it."""
    with atomic_output_dir(target) as tmp:
        write_model_files(model, tmp, tokenizer_files)
        for name, obj in (extra or {}).items():
            torch.save(obj, tmp / name)
    return target


def write_model_files(model, directory: Path, tokenizer_files: list[Path]) -> None:
    """Weights and config (save_pretrained) plus the tokenizer files, into an existing directory."""
    model.save_pretrained(directory)
    for f in tokenizer_files:
        shutil.copy2(f, directory / f.name)


def load_training_state(checkpoint: Path) -> dict[str, Any]:
    return torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)


def publish_model(out: Path, model_dir: Path) -> None:
    """A model's files (not its training state) copied to the top of `out`, each replaced atomically."""
    for f in model_dir.iterdir():
        if f.is_file() and f.name != STATE_FILE:
            tmp = out / f".{f.name}.tmp"
            shutil.copy2(f, tmp)
            os.replace(tmp, out / f.name)


def parameter_checksum(module: nn.Module) -> str:
    """SHA-256 of every parameter's bytes: equal on all ranks iff the ranks hold identical weights."""
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
