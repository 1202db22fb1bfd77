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


CORPUS = REPO / "data/parallel/gettext-en-de"
TINY_T5 = {"d_model": 64, "d_ff": 256, "d_kv": 16, "num_heads": 4, "num_layers": 2, "num_decoder_layers": 2}


@pytest.fixture(scope="session")
def t5_de(tmp_path_factory) -> Path:
    """A tiny T5 given 200 steps of the English -> German corpus: trained weights, not an initialisation's."""
    from stagekit.cli import main
    from text2text.t5_from_corpus import small_t5

    base = tmp_path_factory.mktemp("t5")
    small_t5(CORPUS, base / "init", vocab_size=2000, max_pairs=4000, **TINY_T5)
    assert main(["seq2seq-finetune", "--model", str(base / "init"), "--task_name", "text", "--data_dir", str(CORPUS),
                 "--output_dir", str(base / "de"), "--max_steps", "200", "--eval_steps", "200",
                 "--max_train_examples", "4000", "--max_eval_examples", "32", "--generation_max_length", "8",
                 "--learning_rate", "3e-3", "--quiet"]) == 0
    return base / "de"
