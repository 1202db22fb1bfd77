"""Shared fixtures: the real embedded teacher (all-MiniLM-L6-v2) and a runner for the real CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def teacher_dir() -> Path:
    from compress.model_paths import resolve_model_dir

    return resolve_model_dir("all-MiniLM-L6-v2", "--teacher_model")


@pytest.fixture(scope="session")
def teacher(teacher_dir):
    """The embedded teacher in eager attention mode, so that it returns attention probabilities."""
    from transformers import BertModel

    return BertModel.from_pretrained(str(teacher_dir), attn_implementation="eager").eval()


@pytest.fixture()
def token_batch():
    """Two sequences of real vocabulary ids, the second padded."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (2, 48), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 35:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def run_cli(*args: str, module: str | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script (or `python -m module`) and capture its output."""
    cmd = [sys.executable, "-m", module, *args] if module else [str(Path(sys.executable).parent / "xcompress"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
