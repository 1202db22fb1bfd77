"""Sequence classifiers of every kind xcompress makes, loaded for one GLUE task, and their predictions.

A directory is a *task model* when its config names the task it was trained on (`finetuning_task`, written by
`xcompress finetune` and `task-distill`, and by Hugging Face's run_glue) or its architecture is a
...ForSequenceClassification; its number of labels must then match the task. Any other BERT or TD directory is
an encoder that gets a fresh classification head for the task.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from corpora.glue import GlueTask
from modeling.formats import CLASSIFIER, is_task_model, label_count
from modeling.int8 import quantization_of
from modeling.loading import inspect_model, load_model
from stagekit.errors import InputError

from .features import TaskFeatures
from .metrics import collapse, glue_metrics


class Distributed(Protocol):
    """What predicting on several ranks needs of the distributed shim (distill/dist.py)."""

    rank: int
    world_size: int
    device: torch.device

    def all_gather_object(self, obj: Any) -> list[Any]: ...


def task_config_fields(task: GlueTask) -> dict[str, Any]:
    """What a model trained on `task` records in its config."""
    labels = task.labels or ("score",)
    return {"finetuning_task": task.name, "num_labels": task.num_labels,
            "id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)},
            "problem_type": "regression" if task.is_regression else "single_label_classification"}


def load_classifier(name_or_path: str, flag: str, task: GlueTask, need_task_model: bool = False,
                    need_fp32: bool = False) -> tuple[nn.Module, Path]:
    """The model of `name_or_path` as a classifier for `task`, and its directory (`need_fp32`: see load_model)."""
    _, config, _ = inspect_model(name_or_path, flag)
    trained = is_task_model(config)
    if trained:
        labels = label_count(config)
        if labels != task.num_labels:
            raise InputError(f"{flag} {name_or_path}: has {labels} output label(s) but {task.name} has {task.num_labels}")
        if config.get("finetuning_task") not in (None, task.name):
            raise InputError(f"{flag} {name_or_path}: was trained on {config['finetuning_task']}, not {task.name}")
    elif need_task_model:
        raise InputError(f"{flag} {name_or_path}: not fine-tuned on {task.name}, it has no classifier for it "
                         "(run `xcompress finetune`, or `xcompress task-distill` for a TD model)")
    if quantization_of(config) and not trained:
        raise InputError(f"{flag} {name_or_path}: a quantized model must be a task model (quantize after training)")
    return load_model(name_or_path, flag, CLASSIFIER, config_updates=None if trained else task_config_fields(task),
                      new_head=not trained, need_fp32=need_fp32)


@torch.no_grad()
def predict_logits(model: nn.Module, features: TaskFeatures, batch_size: int, dist: Distributed | None = None) -> np.ndarray:
    """Logits of every example, (N, num_labels). Under several ranks each predicts a slice and all get the whole."""
    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    device = dist.device if dist is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    mine = np.arange(len(features))[rank::world]
    # Sorting by length keeps padding small; the original order is restored below.
    mine = mine[np.argsort([len(features.input_ids[i]) for i in mine], kind="stable")]
    chunks = []
    for start in range(0, len(mine), batch_size):
        batch = features.batch(mine[start:start + batch_size])
        batch.pop("labels")
        chunks.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy())
    model.train(was_training)
    logits = np.concatenate(chunks) if chunks else np.zeros((0, model.config.num_labels), dtype=np.float32)
    parts = dist.all_gather_object((mine, logits)) if dist is not None else [(mine, logits)]
    out = np.zeros((len(features), logits.shape[1]), dtype=np.float32)
    for ids, rows in parts:
        out[ids] = rows
    return out


def predictions(task: GlueTask, logits: np.ndarray) -> np.ndarray:
    return logits[:, 0] if task.is_regression else logits.argmax(-1)


def evaluate_features(model: nn.Module, task: GlueTask, features: TaskFeatures, batch_size: int,
                      dist: Distributed | None = None) -> dict[str, float]:
    return dev_evaluation(model, task, features, batch_size, dist).metrics


class DevEvaluation(NamedTuple):
    metrics: dict[str, float]
    collapsed: str | None  # what is wrong when the predictions have collapsed to a constant
    loss: float  # the task's own loss against the gold labels: the validation loss of every task stage


def dev_evaluation(model: nn.Module, task: GlueTask, features: TaskFeatures, batch_size: int,
                   dist: Distributed | None = None) -> DevEvaluation:
    """The task's metrics, a collapse if there is one, and the validation loss, from one pass over the dev set."""
    logits = predict_logits(model, features, batch_size, dist)
    pred = predictions(task, logits)
    return DevEvaluation(glue_metrics(task.metric, pred, features.labels),
                         collapse(pred, features.labels, task.is_regression), gold_loss(task, logits, features.labels))


def gold_loss(task: GlueTask, logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy (regression: squared error) of the logits against the gold labels, as the model's own
    training loss computes it."""
    scores, gold = torch.from_numpy(logits).float(), torch.from_numpy(np.asarray(labels))
    if task.is_regression:
        return float(F.mse_loss(scores[:, 0], gold.float()))
    return float(F.cross_entropy(scores, gold.long()))
