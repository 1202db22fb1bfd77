"""Shared fixtures: the real embedded teacher (all-MiniLM-L6-v2), a private copy of the shipped GLUE files, the
teacher fine-tuned on SST-2, a TD student, and a runner for the real CLI."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

REPO = Path(__file__).resolve().parent.parent
FAST = ["--max_seq_length", "64", "--quiet"]


@pytest.fixture(scope="session")
def teacher_dir() -> Path:
    from stagekit.model_paths import resolve_model_dir

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


@pytest.fixture(scope="session")
def glue_copy(tmp_path_factory) -> Path:
    """A private copy of the real task files (tests write train_aug.tsv and broken files into it)."""
    d = tmp_path_factory.mktemp("glue") / "glue_data"
    for task in ("SST-2", "MRPC", "STS-B"):
        shutil.copytree(REPO / "data/glue_data" / task, d / task)
    return d


@pytest.fixture(scope="session")
def sst2_teacher(tmp_path_factory, glue_copy) -> Path:
    """MiniLM fine-tuned on 2,000 SST-2 sentences (one epoch): the fine-tuned teacher the task stages need."""
    from stagekit.cli import main

    out = tmp_path_factory.mktemp("task") / "teacher-sst2"
    assert main(["finetune", "--model", "all-MiniLM-L6-v2", "--task_name", "SST-2", "--data_dir", str(glue_copy),
                 "--output_dir", str(out), "--max_train_examples", "2000", "--num_train_epochs", "1",
                 "--eval_step", "1000", *FAST]) == 0
    return out


@pytest.fixture(scope="session")
def td_student(tmp_path_factory) -> Path:
    """The embedded teacher factorized at 1/7 of its encoder (l = 36, d = 192)."""
    from stagekit.cli import main

    out = tmp_path_factory.mktemp("task") / "td-36-192"
    assert main(["decompose", "--teacher_model", "all-MiniLM-L6-v2", "--config", "models/minilm-td-36-192",
                 "--output_dir", str(out)]) == 0
    return out
