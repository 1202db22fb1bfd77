"""GLUE examples as model inputs: piece ids from the model directory's own tokenizer, truncated to
`max_seq_length` (longest sequence first, as BERT does), padded per batch to the batch's longest row.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from corpora.glue import Example, GlueTask, read_examples, subset
from stagekit.errors import InputError


@dataclasses.dataclass
class TaskFeatures:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: np.ndarray  # label indices (int64), scores (float32), or -1 for unlabelled rows
    guids: list[str]

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, ids) -> dict[str, torch.Tensor]:
        ids = [int(i) for i in ids]
        length = max(len(self.input_ids[i]) for i in ids)
        input_ids = torch.zeros(len(ids), length, dtype=torch.long)
        segments = torch.zeros_like(input_ids)
        mask = torch.zeros_like(input_ids)
        for row, i in enumerate(ids):
            n = len(self.input_ids[i])
            input_ids[row, :n] = torch.tensor(self.input_ids[i])
            segments[row, :n] = torch.tensor(self.token_type_ids[i])
            mask[row, :n] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": segments,
                "labels": torch.from_numpy(self.labels[ids])}


def encode(task: GlueTask, examples: list[Example], tokenizer, max_seq_length: int) -> TaskFeatures:
    if max_seq_length < 8:
        raise InputError(f"--max_seq_length {max_seq_length}: must be >= 8")
    texts_a = [e.text_a for e in examples]
    texts_b = [e.text_b for e in examples] if task.is_pair else None
    enc = tokenizer(texts_a, texts_b, truncation="longest_first" if texts_b else True, max_length=max_seq_length,
                    return_attention_mask=False, return_token_type_ids=True)
    if task.is_regression:
        labels = np.array([np.nan if e.label is None else e.label for e in examples], dtype=np.float32)
    else:
        index = {label: i for i, label in enumerate(task.labels)}
        labels = np.array([-1 if e.label is None else index[e.label] for e in examples], dtype=np.int64)
    return TaskFeatures(enc["input_ids"], enc["token_type_ids"], labels, [e.guid for e in examples])


def load_features(task: GlueTask, path: Path, tokenizer, max_seq_length: int, max_examples: int | None = None,
                  seed: int = 42, labelled: bool = True) -> TaskFeatures:
    """A GLUE file as features; `max_examples` keeps a seeded random subset (in file order) for quick runs."""
    return encode(task, subset(read_examples(task, path, labelled), max_examples, seed), tokenizer, max_seq_length)
